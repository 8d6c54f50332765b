"""The media link's lines and proofs (pbx.media_wire): pure, table-tested."""

from __future__ import annotations

import pytest

from pbx.media_wire import (
    Challenge,
    ControllerProof,
    Gone,
    Launch,
    LinkError,
    control_line,
    new_nonce,
    proof_holds,
    prove,
    split_line,
    worker_line,
)

SECRET = "a-cluster-secret-0123"


def test_a_worker_line_keeps_the_workers_bytes_and_a_control_line_its_message() -> None:
    payload = b'{"v":1,"type":"hello","worker_id":7,"max_legs":4,"pid":1}\n'
    assert split_line(worker_line(10007, payload)) == (10007, payload)
    launch = Launch(worker_id=3, sip_port=5083, rtp_port=20120, max_legs=4)
    assert split_line(control_line(launch)) == launch
    assert split_line(control_line(Gone(worker_id=3, error="no room"))) == Gone(
        worker_id=3, error="no room"
    )


@pytest.mark.parametrize(
    "line",
    [
        b"\n",
        b"seven {}\n",
        b"-1 {}\n",
        b'* {"type":"launch"}\n',  # fields missing
        b'* {"type":"reboot"}\n',  # not a message of the link
        b'* {"type":"ping","extra":1}\n',
        b"* not json\n",
    ],
)
def test_lines_that_are_not_the_links_are_refused(line: bytes) -> None:
    with pytest.raises(LinkError):
        split_line(line)


def proof_message(**changes: object) -> ControllerProof:
    fields: dict[str, object] = {
        "proof": "", "nonce": "theirs", "node": "a", "term": 3, "edges": ["10.0.0.1:5060"],
        "sibling_hosts": ["10.0.0.4"], "sibling_ports": (5080, 50),
    }  # fmt: skip
    return ControllerProof.model_validate(fields | changes)


@pytest.mark.parametrize(
    ("secret", "nonce", "role", "changes", "holds"),
    [
        (SECRET, "n1", "controller", {}, True),
        ("another-secret-000000", "n1", "controller", {}, False),  # not the cluster's secret
        (SECRET, "n2", "controller", {}, False),  # a proof recorded on another connection
        (SECRET, "n1", "media", {}, False),  # the other side's proof sent back
        (SECRET, "n1", "controller", {"edges": ["6.6.6.6:5060"]}, False),  # changed on the way
        (SECRET, "n1", "controller", {"term": 9}, False),
    ],
)
def test_a_proof_holds_only_for_its_secret_nonce_role_and_message(
    secret: str, nonce: str, role: str, changes: dict[str, object], holds: bool
) -> None:
    proof = prove(secret, nonce, role, proof_message())  # type: ignore[arg-type]
    received = proof_message(proof=proof, **changes)
    assert proof_holds(SECRET, "n1", "controller", received) is holds


def test_a_proof_that_is_not_hex_is_refused_not_raised() -> None:
    assert proof_holds(SECRET, "n1", "controller", proof_message(proof="é" * 64)) is False


def test_a_worker_id_too_long_to_be_ours_is_refused() -> None:
    with pytest.raises(LinkError):
        split_line(b"9" * 5000 + b" {}\n")


def test_nonces_are_fresh() -> None:
    nonces = {new_nonce() for _ in range(100)}
    assert len(nonces) == 100 and all(len(n) == 32 for n in nonces)
    assert Challenge(nonce="x").version == 1
