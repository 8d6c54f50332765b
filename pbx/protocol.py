"""The worker protocol: a closed set of small, versioned, immutable messages, one JSON line each.

Commands go from the controller to a media worker and each gets exactly one CommandResult;
events go from the worker to the controller. Nothing else crosses the process line.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    model_validator,
)

PROTOCOL_VERSION: Literal[1] = 1
# The worker answers 503 only for "full": Kamailio then tries the next worker.
FULL_STATUS = 503
# Every final answer a worker gives an INVITE on purpose carries this header. pjsua itself
# answers 486 when all its call slots are taken, before we see the INVITE: without the header
# a 486 or 503 means "this worker is full" and Kamailio tries the next one.
FINAL_HEADER = "X-PBX-Final"
# On a Dial to an extension: more extensions (comma-separated) the edge rings in parallel
# with the same leg; the first to answer wins (see LegAnswered.contact).
RING_HEADER = "X-PBX-Ring"
# Set by the edge on every INVITE it sends a worker: "trunk" (the provider) or "phone".
SOURCE_HEADER = "X-PBX-Source"
# On a Dial from one worker to another (WorkerPool.link): the token the pool waits for, so
# that the other worker's IncomingCall joins the link instead of starting a call flow.
LINK_HEADER = "X-PBX-Link"
TRUNK_SOURCE = "trunk"
# LegEnded's reason when the worker hung up a leg whose RTP stopped (pbx.media_timeout).
MEDIA_TIMEOUT_REASON = "Media Timeout"


class ProtocolError(Exception):
    """A line that is not a valid message of this protocol version."""


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    v: Literal[1] = PROTOCOL_VERSION

    @model_validator(mode="before")
    @classmethod
    def _version_on_the_wire(cls, data: Any, info: ValidationInfo) -> Any:
        # Built in code, `v` defaults; read off the wire, a line without it is not ours.
        if info.mode == "json" and isinstance(data, dict) and "v" not in data:
            raise ValueError("the protocol version `v` is missing")
        return data


class _Command(_Message):
    cid: int


class Answer(_Command):
    type: Literal["answer"] = "answer"
    leg: str


class Reject(_Command):
    type: Literal["reject"] = "reject"
    leg: str
    code: int = Field(486, ge=300, le=699)
    reason: str | None = None


class Hangup(_Command):
    """Ends a leg in any state: BYE once answered, CANCEL while an outbound leg rings."""

    type: Literal["hangup"] = "hangup"
    leg: str


class Play(_Command):
    type: Literal["play"] = "play"
    leg: str
    path: str
    loop: bool = False
    # The first DTMF digit stops the prompt (the digit is still reported).
    barge_in: bool = True


class StopPlay(_Command):
    type: Literal["stop_play"] = "stop_play"
    leg: str


class Dial(_Command):
    """A new outbound leg in this worker, using the leg reserved with its inbound call."""

    type: Literal["dial"] = "dial"
    leg: str
    # The inbound leg whose reserved second leg this one uses (None: a spare leg).
    parent: str | None = None
    uri: str
    from_uri: str | None = None
    # Ring at most this long, then the worker CANCELs and reports LegEnded(408); the worker
    # decides answered-or-not on its own thread, so a late 200 cannot race the timer.
    timeout_s: float | None = Field(None, gt=0)
    headers: dict[str, str] = {}
    # A loose router the INVITE goes through, as a pre-loaded route set (RFC 3261 8.1.2) and
    # not a mere header: the edge, for calls to the provider, so that it knows the call and
    # can end it if this worker dies. The Request-URI and To stay `uri`; what follows the
    # answer takes the route the far end's Record-Route gives.
    route: str | None = Field(None, pattern=r"^sips?:[^\s<>\"]+$")
    # The leg will dial one leg of its own (a callback's agent leg, then the customer's):
    # room for that one is kept as for an inbound caller's (pbx.capacity.legs_reserved).
    keep_room: bool = False


class Bridge(_Command):
    """Both legs hear each other; any prompt on either stops."""

    type: Literal["bridge"] = "bridge"
    a: str
    b: str


class Unbridge(_Command):
    type: Literal["unbridge"] = "unbridge"
    a: str
    b: str


class SendDtmf(_Command):
    type: Literal["send_dtmf"] = "send_dtmf"
    leg: str
    digits: str = Field(pattern=r"^[0-9*#A-D]{1,32}$")


class Record(_Command):
    """Record what the leg's far end says to a WAV until StopRecord, max_seconds, the end, or
    (with silence_s) once the far end has been silent that long. `both_sides`: what the leg's
    bridged peer says too, mixed in (a call recording), whoever the peer is at the time."""

    type: Literal["record"] = "record"
    leg: str
    path: str
    max_seconds: float = Field(gt=0)
    silence_s: float | None = Field(None, gt=0)
    both_sides: bool = False


class StopRecord(_Command):
    type: Literal["stop_record"] = "stop_record"
    leg: str


class Monitor(_Command):
    """`leg` (a supervisor's) hears the talk between `a` and `b`; whisper: `b` (the agent)
    hears `leg` too; barge: both do. Sent again to change the mode; hanging `leg` up ends it.
    Listening takes nothing from the talk: a and b stay bridged to each other."""

    type: Literal["monitor"] = "monitor"
    leg: str
    a: str
    b: str
    mode: Literal["listen", "whisper", "barge"]


class ReportTransfer(_Command):
    """Tells the phone that asked for a transfer (TransferRequested) how it goes: a NOTIFY
    with the SIP status line; below 200 the transfer goes on, from 200 on it is over (2xx:
    done, the phone hangs up; else failed, the phone keeps its call)."""

    type: Literal["report_transfer"] = "report_transfer"
    leg: str
    request: int
    code: int = Field(ge=100, le=699)
    reason: str = Field(min_length=1, max_length=64, pattern=r"^[\x20-\x7e]+$")


class Shutdown(_Command):
    type: Literal["shutdown"] = "shutdown"


class Detach(_Command):
    """The controller is gone (its media host lost the link, pbx.media_host): each bridged
    pair stays up until one side hangs up, and then the other is hung up; an answered caller
    on no bridge (in a greeting, a menu, a queue) stays too, hearing what it heard; every
    other leg is hung up now; no new call is taken; the worker exits once it holds no leg,
    or at Attach takes a controller again."""

    type: Literal["detach"] = "detach"


class Attach(_Command):
    """A new controller takes a detached worker over (after a takeover): the worker answers
    with Attached, the legs it holds, then takes commands and calls as before."""

    type: Literal["attach"] = "attach"


Command = Annotated[
    Answer
    | Reject
    | Hangup
    | Play
    | StopPlay
    | Dial
    | Bridge
    | Unbridge
    | SendDtmf
    | Record
    | StopRecord
    | ReportTransfer
    | Monitor
    | Shutdown
    | Detach
    | Attach,
    Field(discriminator="type"),
]


class Hello(_Message):
    type: Literal["hello"] = "hello"
    worker_id: int
    max_legs: int
    sip_port: int
    pid: int


class HeldLeg(BaseModel):
    """One leg a detached worker kept (Attached)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    leg: str
    direction: Literal["inbound", "outbound"]
    from_uri: str
    to_uri: str
    sip_call_id: str
    # The leg it is bridged to, if any (held legs are all answered).
    peer: str | None = None


class Attached(_Message):
    """Before Attach's result: what the worker holds, for its new controller."""

    type: Literal["attached"] = "attached"
    worker_id: int
    max_legs: int
    pid: int
    legs: list[HeldLeg] = []


class CommandResult(_Message):
    type: Literal["result"] = "result"
    cid: int
    ok: bool
    error: str | None = None


class IncomingCall(_Message):
    type: Literal["incoming_call"] = "incoming_call"
    leg: str
    from_uri: str
    to_uri: str
    request_uri: str
    sip_call_id: str
    headers: dict[str, str] = {}
    # HOST:PORT the INVITE came from: one of the cluster's edges, or a sibling worker.
    source: str = ""


class CallRefused(_Message):
    """An INVITE the worker refused before the controller saw it (no leg exists)."""

    type: Literal["call_refused"] = "call_refused"
    reason: Literal["worker_full", "untrusted_source"]


class LegRinging(_Message):
    type: Literal["leg_ringing"] = "leg_ringing"
    leg: str


class LegAnswered(_Message):
    type: Literal["leg_answered"] = "leg_answered"
    leg: str
    sip_call_id: str | None = None
    # The answering side's Contact URI: which phone took a call rung on several.
    contact: str | None = None


class LegEnded(_Message):
    type: Literal["leg_ended"] = "leg_ended"
    leg: str
    code: int
    reason: str


class DtmfReceived(_Message):
    type: Literal["dtmf"] = "dtmf"
    leg: str
    digit: str


class PlaybackEnded(_Message):
    type: Literal["playback_ended"] = "playback_ended"
    leg: str
    interrupted: bool


class RecordingEnded(_Message):
    type: Literal["recording_ended"] = "recording_ended"
    leg: str
    path: str
    seconds: float


class TransferRequested(_Message):
    """The leg's phone asked (REFER, answered 202) to connect its far end elsewhere: `target`
    (a SIP URI); with `replaces`, to the far end of that other dialog of the phone (attended:
    "call-id;to-tag=..;from-tag=.."). Answer with ReportTransfer(request=...)."""

    type: Literal["transfer_requested"] = "transfer_requested"
    leg: str
    request: int
    target: str
    replaces: str | None = None


Event = Annotated[
    Hello
    | Attached
    | CommandResult
    | IncomingCall
    | CallRefused
    | LegRinging
    | LegAnswered
    | LegEnded
    | DtmfReceived
    | PlaybackEnded
    | RecordingEnded
    | TransferRequested,
    Field(discriminator="type"),
]

_commands: TypeAdapter[Command] = TypeAdapter(Command)
_events: TypeAdapter[Event] = TypeAdapter(Event)


def encode(message: _Message) -> bytes:
    """One message as one JSON line."""
    return message.model_dump_json().encode() + b"\n"


def decode_command(line: bytes | str) -> Command:
    try:
        return _commands.validate_json(line)
    except ValidationError as exc:
        raise ProtocolError(f"not a command: {_first_error(exc)}") from None


def decode_event(line: bytes | str) -> Event:
    try:
        return _events.validate_json(line)
    except ValidationError as exc:
        raise ProtocolError(f"not an event: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]
