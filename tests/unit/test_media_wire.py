"""The media link's lines and proofs (pbx.media_wire): pure, table-tested."""

from __future__ import annotations

import pytest

from pbx.media_wire import (
    Challenge,
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


@pytest.mark.parametrize(
    ("secret", "nonce", "role", "holds"),
    [
        (SECRET, "n1", "controller", True),
        ("another-secret-000000", "n1", "controller", False),  # not the cluster's secret
        (SECRET, "n2", "controller", False),  # a proof recorded on another connection
        (SECRET, "n1", "media", False),  # the other side's proof sent back
    ],
)
def test_a_proof_holds_only_for_its_secret_nonce_and_role(
    secret: str, nonce: str, role: str, holds: bool
) -> None:
    proof = prove(secret, nonce, role)  # type: ignore[arg-type]
    assert proof_holds(SECRET, "n1", "controller", proof) is holds


def test_nonces_are_fresh() -> None:
    nonces = {new_nonce() for _ in range(100)}
    assert len(nonces) == 100 and all(len(n) == 32 for n in nonces)
    assert Challenge(nonce="x").version == 1
