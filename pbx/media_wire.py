"""The link between a controller and a media host (`pbx media`): one TCP connection, proved
both ways with the cluster's secret before anything else crosses it, then every worker's
protocol lines (pbx.protocol) and a few messages of the link's own.

A line is `<worker id> <protocol JSON>` for a worker's traffic, relayed as the worker or the
pool wrote it (never decoded on the way), or `* <link JSON>` for the link's own messages.

The proofs are HMAC-SHA256 over a fresh nonce of the other side, the role of the prover and
every other field of the message, so a recorded proof is worth nothing on another connection
or in the other direction, and what it vouches for cannot be changed on the way. The traffic
itself is not encrypted: run the link on the cluster's private network (README).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

LINK_VERSION: Literal[1] = 1
CONTROL_PREFIX = b"* "
# Worker ids are below 10 ** 9 (pbx.pool.HOST_ID_STRIDE times the hosts).
MAX_ID_DIGITS = 9
# Nothing else of ours comes near this; a longer line is not ours.
LINE_LIMIT = 1024 * 1024
# Each side sends a line at least this often (a ping, or traffic) ...
PING_INTERVAL_S = 1.0
# ... and takes the link for lost after this long without one from the other.
SILENCE_LIMIT_S = 3.0
PROOF_TIMEOUT_S = 5.0


class LinkError(Exception):
    """A line that is not the link's, or a proof that does not hold."""


class _LinkMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Challenge(_LinkMessage):
    """The media host's first line: prove you hold the secret."""

    type: Literal["challenge"] = "challenge"
    version: Literal[1] = LINK_VERSION
    nonce: str


class ControllerProof(_LinkMessage):
    """The controller's answer, with a challenge of its own and what the host's workers must
    know of the controller's node."""

    type: Literal["controller_proof"] = "controller_proof"
    proof: str
    nonce: str
    node: str
    # Grows with every takeover (controller.seat): a host linked to a controller refuses an
    # older one, so a node stepping down cannot take the host back.
    term: int = Field(ge=0)
    # host:port of the cluster's edges (the node's first): the only sources of calls the
    # workers accept, with ...
    edges: list[str] = Field(min_length=1, max_length=16)
    # ... the media hosts' addresses, whose workers link to each other (WorkerPool.link), on
    # these SIP ports (the node's range, the same on every host).
    sibling_hosts: list[str]
    sibling_ports: tuple[int, int]  # first, count


class Refused(_LinkMessage):
    """The host's answer to a proof it does not take, before it closes the link: the
    controller logs why."""

    type: Literal["refused"] = "refused"
    reason: str


class Welcome(_LinkMessage):
    """The host's proof, and where its workers can listen."""

    type: Literal["welcome"] = "welcome"
    proof: str
    name: str
    address: str
    first_sip_port: int
    first_rtp_port: int
    rtp_ports_per_worker: int
    max_workers: int
    # SIP ports of workers a lost link left with calls (media_host): not to be launched on
    # until a SlotFree names them.
    busy_ports: list[int] = []
    # (worker id, SIP port) of the detached workers this controller takes over: the link
    # carries their lines from now on; each is to hear protocol.Attach (Gone if it exited).
    adopted: list[tuple[int, int]] = []


class SlotFree(_LinkMessage):
    """A detached worker has exited: its SIP port may take a worker again."""

    type: Literal["slot_free"] = "slot_free"
    sip_port: int


class Launch(_LinkMessage):
    type: Literal["launch"] = "launch"
    worker_id: int
    sip_port: int
    rtp_port: int
    max_legs: int


class Close(_LinkMessage):
    """No more commands for this worker: it hangs up what it holds and exits."""

    type: Literal["close"] = "close"
    worker_id: int


class Kill(_LinkMessage):
    type: Literal["kill"] = "kill"
    worker_id: int


class Gone(_LinkMessage):
    """The worker's socket closed (it exited, or never started: `error` says why)."""

    type: Literal["gone"] = "gone"
    worker_id: int
    error: str = ""


class Ping(_LinkMessage):
    type: Literal["ping"] = "ping"


LinkMessage = Annotated[
    Challenge
    | ControllerProof
    | Refused
    | Welcome
    | Launch
    | Close
    | Kill
    | Gone
    | SlotFree
    | Ping,
    Field(discriminator="type"),
]
_messages: TypeAdapter[LinkMessage] = TypeAdapter(LinkMessage)


def control_line(message: _LinkMessage) -> bytes:
    return CONTROL_PREFIX + message.model_dump_json().encode() + b"\n"


def worker_line(worker_id: int, payload: bytes) -> bytes:
    """A worker's protocol line (with its newline), addressed."""
    return b"%d " % worker_id + payload


def split_line(line: bytes) -> tuple[int, bytes] | LinkMessage:
    """(worker id, its protocol line) or the link's own message. LinkError if neither."""
    if line.startswith(CONTROL_PREFIX):
        try:
            return _messages.validate_json(line[len(CONTROL_PREFIX) :])
        except ValidationError as exc:
            raise LinkError(f"not a link message: {exc.errors()[0]['msg']}") from None
    head, space, payload = line.partition(b" ")
    if not space or not head.isdigit() or len(head) > MAX_ID_DIGITS:
        raise LinkError("neither a worker's line nor a link message")
    return int(head), payload


def new_nonce() -> str:
    return secrets.token_hex(16)


def prove(
    secret: str, nonce: str, role: Literal["controller", "media"], message: _LinkMessage
) -> str:
    """The proof for `message` (its other fields, as sent), answering `nonce`."""
    signed = message.model_dump_json(exclude={"proof"})
    return hmac.new(
        secret.encode(), f"{role}:{nonce}:{signed}".encode(), hashlib.sha256
    ).hexdigest()


def proof_holds(
    secret: str,
    nonce: str,
    role: Literal["controller", "media"],
    message: ControllerProof | Welcome,
) -> bool:
    expected = prove(secret, nonce, role, message).encode()
    return hmac.compare_digest(expected, message.proof.encode())
