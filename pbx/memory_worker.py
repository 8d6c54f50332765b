"""The in-memory twin of a media worker: the worker protocol answered inside the event loop,
with the far end of every leg (the caller, the dialled phone or trunk) scripted by a test.

It stands where forked PJSUA2 workers and Kamailio stand: the pool starts it through its
launcher interface (pbx.channel) and drives it with the same Commands, and it answers with
the Events a real worker (pbx.worker) sends, in the same order, each passed through the wire
encoding. Nothing waits on the wall clock unless a test asks: a prompt plays out at once (or
when the test says), a dialled phone rings, answers, is busy or rings out when told.

    twin = MemoryWorkers()
    pool = WorkerPool(settings, trusted=[], on_inbound=flows.handle, edge=twin.edge,
                      launcher=twin)
    caller = twin.call_in("4930111", "4930700100")          # a trunk call
    await twin.until(lambda: caller.playing is not None)     # the greeting plays
    caller.press("1001")
    agent = await twin.dialled("1001")                       # the flow rang extension 1001
    agent.answer()
    await twin.until(lambda: caller.bridged_to is agent)
"""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
import wave
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

from pbx.capacity import LEGS_PER_INBOUND_CALL, legs_reserved
from pbx.channel import WorkerSpec
from pbx.kamailio import WorkerSlot
from pbx.protocol import (
    MEDIA_TIMEOUT_REASON,
    RING_HEADER,
    SOURCE_HEADER,
    Answer,
    Attach,
    Attached,
    Bridge,
    CallRefused,
    Command,
    CommandResult,
    Detach,
    Dial,
    DtmfReceived,
    Event,
    Hangup,
    HeldLeg,
    Hello,
    IncomingCall,
    LegAnswered,
    LegEnded,
    LegRinging,
    Monitor,
    Play,
    PlaybackEnded,
    Record,
    RecordingEnded,
    Reject,
    ReportTransfer,
    SendDtmf,
    Shutdown,
    StopPlay,
    StopRecord,
    TransferRequested,
    Unbridge,
    _Message,
    decode_command,
    decode_event,
    encode,
)

if TYPE_CHECKING:
    from core.context import PhoneContacts, PhoneRegistrations
    from pbx.channel import WorkerChannel, WorkerLauncher
    from pbx.edge_mirror import WorkerEdge

# The pinned PJSUA2 wheel's cap (notes/pjsua2.md); a real worker measures it.
DEFAULT_MAX_LEGS = 4
# The edge adds this to calls from registered phones: the authenticated extension
# (templates/kamailio.cfg.j2, read by flows.calls).
PHONE_USER_HEADER = "X-PBX-User"
# How long `until` and `dialled` wait before the test fails.
DEFAULT_WAIT_S = 5.0
# Codes and reasons as PJSUA2 reports them for each way a leg ends (tests/integration/
# test_media_workers.py checks the codes against real phones).
NORMAL_CLEARING = (200, "Normal call clearing")  # a BYE, from either side
CANCELLED = (487, "Request Terminated")  # an unanswered leg given up by its caller
RING_TIMEOUT = (408, "Request Timeout")  # Dial.timeout_s ran out: the worker CANCELs
NOT_NOW = (480, "Temporarily Unavailable")  # an unanswered caller hung up by the worker
MEDIA_TIMEOUT = (408, MEDIA_TIMEOUT_REASON)
REASONS = {
    403: "Forbidden", 404: "Not Found", 408: "Request Timeout", 480: "Temporarily Unavailable",
    484: "Address Incomplete", 486: "Busy Here", 487: "Request Terminated",
    500: "Server Internal Error", 503: "Service Unavailable", 600: "Busy Everywhere",
    603: "Decline",
}  # fmt: skip
WAV_RATE = 8000
C = TypeVar("C", bound=_Message)


class CommandFailed(Exception):
    """A command the worker cannot carry out; its text is the CommandResult's error."""


class ScriptError(Exception):
    """The test asked a far end for something it cannot do (keys before the call is up...)."""


@dataclass
class _Prompt:
    number: int
    path: Path
    loop: bool
    barge_in: bool


@dataclass
class _Recording:
    path: Path
    started: float
    silence_s: float | None


class FarEnd:
    """The party at the other end of one leg: the caller of an inbound leg, the phone (or the
    edge's fork to several) or trunk an outbound leg rings. Its methods are what that party
    does; its attributes are what it has heard and been told."""

    def __init__(
        self,
        worker: MemoryWorker,
        leg_id: str,
        direction: Literal["inbound", "outbound"],
        *,
        uri: str,
        from_uri: str,
        headers: dict[str, str],
        parent: str | None = None,
        route: str | None = None,
    ) -> None:
        self.worker = worker
        self.leg_id = leg_id
        self.direction = direction
        # Inbound: the number dialled (Request-URI); outbound: the URI the worker dialled.
        self.uri = uri
        self.from_uri = from_uri
        self.headers = headers
        self.parent = parent
        # Room for a leg it dials is kept (Dial.keep_room; inbound legs always have it).
        self.keeps_room = direction == "inbound"
        # Outbound: the loose router the worker's INVITE went through (Dial.route).
        self.route = route
        self.sip_call_id = f"{uuid.uuid4()}@twin"
        loop = asyncio.get_running_loop()
        self.answered: asyncio.Future[None] = loop.create_future()
        # The final SIP code as this party saw it: 200 after a BYE, 487 when CANCELled...
        self.ended: asyncio.Future[int] = loop.create_future()
        # Every prompt played to this party, in order; the one playing now.
        self.prompts: list[Path] = []
        self.dtmf_received = ""  # what the worker sent (SendDtmf)
        self.recordings: list[Path] = []  # files completed from what this party said
        # What the worker told this phone of its transfer requests: (code, reason), in order.
        self.transfer_reports: list[tuple[int, str]] = []
        # A supervisor's leg: the two legs it hears and the mode (Monitor).
        self.supervising: tuple[str, str, str] | None = None
        self._transfer_requests = 0
        self._prompt: _Prompt | None = None
        self._peer: FarEnd | None = None
        self._recording: _Recording | None = None
        self._ringing_reported = False
        self._hangup_sent = False
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def __repr__(self) -> str:
        return f"<FarEnd {self.leg_id} {self.direction} {self.uri}>"

    # -- what it knows --------------------------------------------------------------------

    @property
    def extension(self) -> str:
        """The user part of `uri`: the extension or number dialled."""
        return _user_part(self.uri)

    @property
    def rung(self) -> list[str]:
        """The extensions an outbound leg rings: its own and those the edge forks it to."""
        others = self.headers.get(RING_HEADER, "")
        return [self.extension, *(e for e in others.split(",") if e)]

    @property
    def is_up(self) -> bool:
        """Answered and not ended: media flows."""
        return self.answered.done() and not self.ended.done()

    @property
    def playing(self) -> Path | None:
        return self._prompt.path if self._prompt is not None else None

    @property
    def bridged_to(self) -> FarEnd | None:
        return self._peer

    @property
    def recording(self) -> bool:
        return self._recording is not None

    # -- what it does ---------------------------------------------------------------------

    def press(self, digits: str) -> None:
        """Send DTMF digits (RFC 4733), one event each; the first stops a barge-in prompt."""
        self._require(self.is_up, "press keys on a call that is not up")
        for digit in digits:
            self.worker.emit(DtmfReceived(leg=self.leg_id, digit=digit))
            if self._prompt is not None and self._prompt.barge_in:
                self.worker.stop_prompt(self, interrupted=True)

    def hang_up(self) -> None:
        """A caller gives up (CANCEL before the answer) or either party sends BYE."""
        self._require(not self.ended.done(), "hang up a call that has ended")
        if self.answered.done():
            self.worker.leg_ended(self, NORMAL_CLEARING, far_code=200)
        else:
            self._require(self.direction == "inbound", "hang up a phone that rings (refuse)")
            self.worker.leg_ended(self, CANCELLED, far_code=487)

    def transfer(self, target: str, replaces: str | None = None) -> None:
        """The phone asks to pass its far end on (REFER): to `target`, a SIP URI; with
        `replaces`, to the far end of its other dialog (attended). The worker answers 202 and
        "100 Trying" at once, as a real one does."""
        self._require(self.is_up, "transfer a call that is not up")
        self._transfer_requests += 1
        request = self._transfer_requests
        self.worker.emit(
            TransferRequested(leg=self.leg_id, request=request, target=target, replaces=replaces)
        )
        self.transfer_reports.append((100, "Trying"))

    def ring(self) -> None:
        """The dialled phone rings (180)."""
        self._ringing_first("ring")
        if not self._ringing_reported:
            self._ringing_reported = True
            self.worker.emit(LegRinging(leg=self.leg_id))

    def answer(self, contact: str | None = None) -> None:
        """The dialled phone (the one with `contact`, for a leg rung on several) answers."""
        self._ringing_first("answer")
        self.worker.cancel_timer(self, "ring")
        self._answered(contact or phone_contact(self.extension))

    def busy(self) -> None:
        self.refuse(486)

    def refuse(self, code: int = 603, reason: str | None = None) -> None:
        """The dialled side answers with a final failure (486 busy, 480 not there, 404...)."""
        self._ringing_first("refuse")
        self.worker.leg_ended(self, (code, reason or REASONS.get(code, "Failed")), far_code=code)

    def ring_out(self) -> None:
        """Nobody answers: the worker's ring timeout (Dial.timeout_s) passes now."""
        self._ringing_first("ring out")
        self.worker.ring_timeout(self)

    def lose_media(self) -> None:
        """Its RTP stops: the worker's dead-media rule hangs the leg up."""
        self._require(self.is_up, "lose the media of a call that is not up")
        self.worker.leg_ended(self, MEDIA_TIMEOUT, far_code=200)

    def finish_prompt(self) -> None:
        """The prompt playing now plays to its end (when prompts do not end by themselves)."""
        prompt = self._prompt
        self._require(prompt is not None and not prompt.loop, "finish a prompt that never ends")
        self.worker.stop_prompt(self, interrupted=False)

    def fall_silent(self) -> None:
        """It stops talking: a recording that ends on silence ends now (as if the silence
        had lasted `Record.silence_s`)."""
        recording = self._recording
        if recording is not None and recording.silence_s is not None:
            self.worker.stop_recording(self)

    # -- the worker's side ----------------------------------------------------------------

    def _answered(self, contact: str | None) -> None:
        if self.ended.done() or self.answered.done():
            return
        self.answered.set_result(None)
        self.worker.emit(
            LegAnswered(leg=self.leg_id, sip_call_id=self.sip_call_id, contact=contact)
        )

    def _ringing_first(self, what: str) -> None:
        self._require(
            self.direction == "outbound" and not self.answered.done() and not self.ended.done(),
            f"{what}: only a dialled leg that has not answered can",
        )

    def _require(self, condition: bool, what: str) -> None:
        if not condition:
            raise ScriptError(f"{self!r} cannot {what}")


class MemoryWorker:
    """One in-memory worker (pbx.channel.WorkerChannel): commands are carried out as they
    arrive, events queue up in the order a real worker emits them."""

    def __init__(self, hub: MemoryWorkers, spec: WorkerSpec, max_legs: int) -> None:
        self.hub = hub
        self.id = spec.worker_id
        self.sip_port = spec.sip_port
        self.max_legs = max_legs
        self.legs: dict[str, FarEnd] = {}
        self.closed = False
        self.detached = False
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()
        self._leg_numbers = itertools.count(1)
        self._prompt_numbers = itertools.count(1)
        self.emit(
            Hello(worker_id=self.id, max_legs=max_legs, sip_port=self.sip_port, pid=os.getpid())
        )

    # -- the channel ----------------------------------------------------------------------

    async def send(self, command: Command) -> None:
        if self.closed:
            raise ConnectionError(f"in-memory worker {self.id} is gone")
        command = decode_command(encode(command))  # what a real worker would have read
        self.hub.commands.append(command)
        if self.hub.scripted_death(command):
            self.kill()
            return
        error = self.hub.scripted_failure(command)
        if error is None:
            try:
                self.execute(command)
            except CommandFailed as exc:
                error = str(exc)
        self.emit(CommandResult(cid=command.cid, ok=error is None, error=error))

    async def events(self) -> AsyncIterator[Event]:
        while (event := await self._events.get()) is not None:
            yield event
            # Resumed once the pool has handled the event: checks on what it made of it
            # (a leg's end, its refusal count) may hold now.
            self.hub.changed()

    def close(self) -> None:
        """EOF: hang up every leg, then exit (its events end)."""
        if not self.closed:
            self.hangup_all()
            # A real worker lingers until its CANCELs are answered (pbx.worker).
            for leg in [leg for leg in self.legs.values() if leg._hangup_sent]:
                self.leg_ended(leg, CANCELLED, far_code=487)
            self._exit()

    def kill(self) -> None:
        """Die at once: no more events, the far ends hear nothing more."""
        if not self.closed:
            for leg in self.legs.values():
                self._cancel_timers(leg)
            self._exit()

    def emit(self, event: Event) -> None:
        if not self.closed:
            self._events.put_nowait(decode_event(encode(event)))
            self.hub.changed()

    def _exit(self) -> None:
        self.closed = True
        self._events.put_nowait(None)
        self.hub.worker_gone(self)

    # -- calls in -------------------------------------------------------------------------

    def room(self) -> int:
        """Legs a new caller could still take here (pairs: its own and its agent's)."""
        return self.max_legs - self._legs_reserved()

    def incoming(
        self, from_uri: str, request_uri: str, headers: dict[str, str], source: str = ""
    ) -> FarEnd | None:
        """An INVITE from the edge (at `source`); None when refused as full (the edge tries
        the next)."""
        if self.room() < LEGS_PER_INBOUND_CALL:
            self.emit(CallRefused(reason="worker_full"))
            return None
        leg_id = f"w{self.id}-{next(self._leg_numbers)}"
        caller = FarEnd(self, leg_id, "inbound", uri=request_uri, from_uri=from_uri,
                        headers=headers)  # fmt: skip
        self.legs[leg_id] = caller
        self.emit(
            IncomingCall(
                leg=leg_id, from_uri=from_uri, to_uri=request_uri.split(";", 1)[0],
                request_uri=request_uri, sip_call_id=caller.sip_call_id, headers=headers,
                source=source,
            )
        )  # fmt: skip
        return caller

    # -- commands -------------------------------------------------------------------------

    def execute(self, command: Command) -> None:
        if isinstance(command, Answer):
            self._answer(self._leg(command.leg))
        elif isinstance(command, Reject):
            leg = self._leg(command.leg)
            if leg.answered.done() or leg.direction == "outbound":
                self._hangup(leg)  # a final answer can only refuse a caller: BYE or CANCEL
            else:
                end = (command.code, command.reason or REASONS.get(command.code, "Rejected"))
                self.leg_ended(leg, end, far_code=command.code)
        elif isinstance(command, Hangup):
            self._hangup(self._leg(command.leg))
        elif isinstance(command, Play):
            self._play(self._leg(command.leg), command)
        elif isinstance(command, StopPlay):
            leg = self._leg(command.leg)
            if leg._prompt is not None:
                self.stop_prompt(leg, interrupted=True)
        elif isinstance(command, Dial):
            self._dial(command)
        elif isinstance(command, Bridge):
            self._bridge(self._leg(command.a), self._leg(command.b))
        elif isinstance(command, Unbridge):
            self._unbridge(self._leg(command.a), self._leg(command.b))
        elif isinstance(command, SendDtmf):
            self._leg(command.leg).dtmf_received += command.digits
        elif isinstance(command, Record):
            self._record(self._leg(command.leg), command)
        elif isinstance(command, StopRecord):
            leg = self._leg(command.leg)
            if leg._recording is not None:
                self.stop_recording(leg)
        elif isinstance(command, Monitor):
            leg = self._leg(command.leg)
            self._leg(command.a), self._leg(command.b)
            leg.supervising = (command.a, command.b, command.mode)
        elif isinstance(command, ReportTransfer):
            leg = self._leg(command.leg)
            if not 0 < command.request <= leg._transfer_requests:
                raise CommandFailed(f"no transfer {command.request} on leg {command.leg}")
            leg.transfer_reports.append((command.code, command.reason))
        elif isinstance(command, Shutdown):
            self.hangup_all()
        elif isinstance(command, Detach):
            self.detached = True
            for leg in list(self.legs.values()):
                if not _kept_when_detached(leg):
                    self._hangup(leg)
        elif isinstance(command, Attach):
            if not self.detached:
                raise CommandFailed("not detached")
            self.detached = False
            held = [_held(leg) for leg in self.legs.values() if not leg._hangup_sent]
            self.emit(Attached(worker_id=self.id, max_legs=self.max_legs, pid=os.getpid(),
                               legs=held))  # fmt: skip

    def hangup_all(self) -> None:
        for leg in list(self.legs.values()):
            self._hangup(leg)

    def _leg(self, leg_id: str) -> FarEnd:
        leg = self.legs.get(leg_id)
        if leg is None:
            raise CommandFailed(f"no leg {leg_id}")  # pbx.legs reads this as "leg gone"
        return leg

    def _answer(self, leg: FarEnd) -> None:
        if leg.direction != "inbound" or leg.answered.done():
            raise CommandFailed(f"leg {leg.leg_id} cannot be answered")
        # The 200 goes out now; LegAnswered follows the caller's ACK, after the result.
        self._later(leg, lambda: leg._answered(None))

    def _hangup(self, leg: FarEnd) -> None:
        """BYE, CANCEL or 480 depending on the leg's state; once."""
        if leg._hangup_sent:
            return
        leg._hangup_sent = True
        if leg.answered.done():
            self.leg_ended(leg, NORMAL_CLEARING, far_code=200)
        elif leg.direction == "inbound":
            self.leg_ended(leg, NOT_NOW, far_code=480)
        else:
            # The CANCEL's 487 comes back after the command's result.
            self.cancel_timer(leg, "ring")
            self._later(leg, lambda: self.leg_ended(leg, CANCELLED, far_code=487))

    def _play(self, leg: FarEnd, command: Play) -> None:
        path = Path(command.path)
        if not path.is_file():
            raise CommandFailed(f"cannot play {path}: no such file")
        if leg._prompt is not None:
            self.stop_prompt(leg, interrupted=True)
        prompt = _Prompt(next(self._prompt_numbers), path, command.loop, command.barge_in)
        leg._prompt = prompt
        leg.prompts.append(path)
        seconds = self.hub.prompt_seconds
        if command.loop or seconds is None:
            return  # a loop plays until stopped; otherwise the test says when it ends

        def played_out() -> None:
            if leg._prompt is prompt:
                self.stop_prompt(leg, interrupted=False)

        self._later(leg, played_out, seconds, key="prompt")

    def stop_prompt(self, leg: FarEnd, *, interrupted: bool) -> None:
        if leg._prompt is None:
            return
        leg._prompt = None
        self.cancel_timer(leg, "prompt")
        self.emit(PlaybackEnded(leg=leg.leg_id, interrupted=interrupted))

    def _dial(self, command: Dial) -> None:
        if command.leg in self.legs:
            raise CommandFailed(f"leg {command.leg} exists already")
        parent = self.legs.get(command.parent) if command.parent else None
        has_reserved_leg = (
            parent is not None
            and parent.keeps_room
            and not any(leg.parent == parent.leg_id for leg in self.legs.values())
        )
        needed = LEGS_PER_INBOUND_CALL if command.keep_room else 1
        if not has_reserved_leg and self._legs_reserved() + needed > self.max_legs:
            raise CommandFailed(f"no free leg in worker {self.id}")
        if command.leg in self.legs:
            raise CommandFailed(f"leg {command.leg} exists already")
        callee = FarEnd(
            self, command.leg, "outbound", uri=command.uri,
            from_uri=command.from_uri or f"sip:worker{self.id}@twin",
            headers=dict(command.headers), parent=command.parent, route=command.route,
        )  # fmt: skip
        callee.keeps_room = command.keep_room
        self.legs[command.leg] = callee
        self.hub.dials.append(callee)
        if self.hub.phones.unregistered(callee.extension):
            # What Kamailio's location look-up answers at once for a phone not registered.
            asyncio.get_running_loop().call_soon(
                lambda: self.leg_ended(callee, NOT_NOW, far_code=NOT_NOW[0])
            )
            return
        if command.timeout_s is not None:
            self._later(callee, lambda: self.ring_timeout(callee), command.timeout_s, key="ring")

    def ring_timeout(self, leg: FarEnd) -> None:
        if leg.answered.done() or leg.ended.done():
            return
        leg._hangup_sent = True
        self.cancel_timer(leg, "ring")
        self.leg_ended(leg, RING_TIMEOUT, far_code=487)

    def _bridge(self, a: FarEnd, b: FarEnd) -> None:
        if a is b:
            raise CommandFailed(f"cannot bridge leg {a.leg_id} to itself")
        for leg in (a, b):
            if leg._peer is not None and leg._peer not in (a, b):
                self._unbridge(leg, leg._peer)
            if leg._prompt is not None:
                self.stop_prompt(leg, interrupted=True)
        a._peer, b._peer = b, a

    def _unbridge(self, a: FarEnd, b: FarEnd) -> None:
        if a._peer is not b:
            raise CommandFailed(f"legs {a.leg_id} and {b.leg_id} are not bridged")
        a._peer, b._peer = None, None

    def _record(self, leg: FarEnd, command: Record) -> None:
        if leg._recording is not None:
            raise CommandFailed(f"leg {leg.leg_id} is already recording")
        path = Path(command.path)
        if not path.parent.is_dir():
            raise CommandFailed(f"cannot record to {path}: no such folder")
        leg._recording = _Recording(path, asyncio.get_running_loop().time(), command.silence_s)
        self._later(leg, lambda: self.stop_recording(leg), command.max_seconds, key="record")

    def stop_recording(self, leg: FarEnd) -> None:
        """Close the WAV; RecordingEnded follows (after LegEnded when the leg is ending)."""
        recording = leg._recording
        if recording is None:
            return
        leg._recording = None
        self.cancel_timer(leg, "record")
        seconds = asyncio.get_running_loop().time() - recording.started
        _write_silence(recording.path, seconds)
        leg.recordings.append(recording.path)
        ended = RecordingEnded(leg=leg.leg_id, path=str(recording.path), seconds=seconds)
        asyncio.get_running_loop().call_soon(self.emit, ended)

    # -- the end of a leg -----------------------------------------------------------------

    def leg_ended(self, leg: FarEnd, end: tuple[int, str], *, far_code: int) -> None:
        if self.legs.pop(leg.leg_id, None) is None:
            return
        self._cancel_timers(leg)
        if leg._recording is not None:
            self.stop_recording(leg)
        if leg._prompt is not None:
            self.stop_prompt(leg, interrupted=True)
        if leg._peer is not None:
            peer, leg._peer._peer, leg._peer = leg._peer, None, None
            if self.detached:
                self._hangup(peer)
        code, reason = end
        if not leg.ended.done():
            leg.ended.set_result(far_code)
        self.emit(LegEnded(leg=leg.leg_id, code=code, reason=reason))

    # -- timers ---------------------------------------------------------------------------

    def _later(
        self, leg: FarEnd, action: Callable[[], None], seconds: float = 0.0, key: str = ""
    ) -> None:
        """Run `action` after `seconds` (0: right after the current command's result) unless
        the leg has ended by then; a keyed timer replaces the leg's earlier one."""

        def run() -> None:
            if key:
                leg._timers.pop(key, None)
            if leg.leg_id in self.legs and not self.closed:
                action()

        handle = asyncio.get_running_loop().call_later(seconds, run)
        if key:
            self.cancel_timer(leg, key)
            leg._timers[key] = handle

    def cancel_timer(self, leg: FarEnd, key: str) -> None:
        handle = leg._timers.pop(key, None)
        if handle is not None:
            handle.cancel()

    def _cancel_timers(self, leg: FarEnd) -> None:
        for key in list(leg._timers):
            self.cancel_timer(leg, key)

    def _legs_reserved(self) -> int:
        return legs_reserved(
            (leg.leg_id for leg in self.legs.values() if leg.keeps_room),
            (leg.parent for leg in self.legs.values() if not leg.keeps_room),
        )


class MemoryEdge:
    """The edge's worker list, kept in memory (pbx.edge_mirror.WorkerEdge): which workers the pool
    says take calls. `MemoryWorkers.call_in` sends callers only to those."""

    def __init__(self, on_change: Callable[[], None] = lambda: None) -> None:
        self.installed = False
        self.installs = 0  # each a reload of Kamailio's list, which loses its call counts
        self.slots: list[WorkerSlot] = []
        self.ready: set[str] = set()
        # The workers whose calls the pool asked the edge to end, in order (their URIs).
        self.calls_ended_for: list[str] = []
        self._on_change = on_change

    async def install(self, slots: list[WorkerSlot], ready: Collection[str]) -> None:
        self.installed = True
        self.installs += 1
        self.slots = list(slots)
        self.ready = set(ready)
        self._on_change()

    async def set_ready(self, uri: str, ready: bool) -> None:
        if ready:
            self.ready.add(uri)
        else:
            self.ready.discard(uri)
        self._on_change()

    async def end_calls(self, uri: str) -> int:
        """The far ends here are the test's: it sees the request, and no call is counted."""
        self.calls_ended_for.append(uri)
        self._on_change()
        return 0

    def takes_calls(self, sip_port: int) -> bool:
        return not self.installed or any(uri.endswith(f":{sip_port}") for uri in self.ready)


class MemoryPhones:
    """Phone registrations as the edge's location table holds them (core.context's
    PhoneContacts and PhoneRegistrations). Every extension counts as registered with
    `phone_contact(extension)` unless the test unregisters it or registers other contacts."""

    def __init__(self) -> None:
        self._contacts: dict[str, list[str]] = {}

    def register(self, extension: str, *contacts: str) -> None:
        self._contacts[extension] = list(contacts or [phone_contact(extension)])

    def unregister(self, extension: str) -> None:
        self._contacts[extension] = []

    def unregistered(self, extension: str) -> bool:
        """Only what the test unregistered: any other number may be a phone or the trunk's."""
        return self._contacts.get(extension) == []

    async def registered_contacts(self, username: str) -> list[str]:
        return list(self._contacts.get(username, [phone_contact(username)]))

    async def drop_registrations(self, username: str) -> None:
        self.unregister(username)


class MemoryWorkers:
    """Starts in-memory workers for the pool (pbx.channel.WorkerLauncher) and is the test's
    handle on them: callers come in here, dialled legs and every command are seen here.

    `prompt_seconds`: how long a prompt that does not loop plays; 0 ends it right after the
    Play (the default), None only when the test calls `FarEnd.finish_prompt`."""

    def __init__(
        self, *, max_legs: int = DEFAULT_MAX_LEGS, prompt_seconds: float | None = 0.0
    ) -> None:
        self.max_legs = max_legs
        self.prompt_seconds = self._default_prompt_seconds = prompt_seconds
        self.edge = MemoryEdge(on_change=self.changed)
        self.phones = MemoryPhones()
        self.workers: dict[int, MemoryWorker] = {}
        # Every command any worker received, in order (as decoded off the wire).
        self.commands: list[Command] = []
        # Every outbound leg, in the order dialled; `dialled` hands each out once.
        self.dials: list[FarEnd] = []
        self._claimed: set[str] = set()
        self._failures: dict[type[_Message], deque[str]] = defaultdict(deque)
        self._deaths: set[type[_Message]] = set()
        self._change: asyncio.Future[None] | None = None

    # -- the launcher ---------------------------------------------------------------------

    @property
    def available(self) -> bool:
        return True

    async def start(self, on_available: Callable[[], None]) -> None:
        pass

    def can_launch_on(self, sip_port: int) -> bool:
        return True

    async def launch(self, spec: WorkerSpec) -> MemoryWorker:
        worker = MemoryWorker(self, spec, spec.max_legs or self.max_legs)
        self.workers[worker.id] = worker
        return worker

    async def stop(self) -> None:
        pass

    def worker_gone(self, worker: MemoryWorker) -> None:
        if self.workers.get(worker.id) is worker:
            del self.workers[worker.id]
        self.changed()

    # -- scripting ------------------------------------------------------------------------

    def reset(self) -> None:
        """Start a new test on the same workers: prompts play as at construction, no
        failure is scripted, and `dialled` hands out only legs dialled from now on."""
        self.prompt_seconds = self._default_prompt_seconds
        self._failures.clear()
        self._deaths.clear()
        self._claimed.update(far.leg_id for far in self.dials)

    def call_in(
        self,
        caller: str,
        dialled: str,
        *,
        source: Literal["trunk", "phone"] = "trunk",
        headers: dict[str, str] | None = None,
        via: str = "",
    ) -> FarEnd:
        """A call arriving through the edge: from the provider (`source="trunk"`, `caller` a
        number) or from a registered phone (`source="phone"`, `caller` its extension). It
        goes to the ready worker with the most room, as the edge's dispatcher sends it; if
        that one is full the call is refused and the far end ends with 503. `via`: the edge
        it came through (HOST:PORT; default: none named)."""
        edge_headers: dict[str, str] = {SOURCE_HEADER: source}
        if source == "phone":
            edge_headers[PHONE_USER_HEADER] = caller
        candidates = [
            w for w in self.workers.values() if not w.closed and self.edge.takes_calls(w.sip_port)
        ]
        if not candidates:
            raise ScriptError("no in-memory worker takes calls")
        worker = max(candidates, key=lambda w: (w.room(), -w.id))
        request_uri = f"sip:{dialled}@127.0.0.1:{worker.sip_port}"
        far = worker.incoming(
            f"sip:{caller}@twin", request_uri, {**edge_headers, **(headers or {})}, via
        )
        if far is None:
            refused = FarEnd(worker, "refused", "inbound", uri=request_uri,
                             from_uri=f"sip:{caller}@twin", headers=edge_headers)  # fmt: skip
            refused.ended.set_result(503)
            return refused
        return far

    async def dialled(
        self,
        extension: str | None = None,
        timeout: float = DEFAULT_WAIT_S,  # noqa: ASYNC109  # a test's bound, not a deadline
    ) -> FarEnd:
        """The next outbound leg not handed out yet (to `extension`, if given), once dialled."""

        def unclaimed() -> FarEnd | None:
            for far in self.dials:
                if far.leg_id not in self._claimed and extension in (None, far.extension):
                    return far
            return None

        await self.until(lambda: unclaimed() is not None, timeout)
        far = unclaimed()
        assert far is not None
        self._claimed.add(far.leg_id)
        return far

    def fail_next(self, command: type[_Message], error: str) -> None:
        """The next command of this type fails with `error`, as a worker refusing it would
        (a Dial with "no free leg in worker 0", a Play of a file it cannot open)."""
        self._failures[command].append(error)

    def die_on_next(self, command: type[_Message]) -> None:
        """The worker that gets the next command of this type dies at once (kill -9): no
        result, no more events."""
        self._deaths.add(command)

    def scripted_death(self, command: Command) -> bool:
        if type(command) in self._deaths:
            self._deaths.discard(type(command))
            return True
        return False

    def scripted_failure(self, command: Command) -> str | None:
        failures = self._failures.get(type(command))
        return failures.popleft() if failures else None

    def sent(self, kind: type[C]) -> list[C]:
        """The commands of one type received so far."""
        return [c for c in self.commands if isinstance(c, kind)]

    async def until(
        self,
        check: Callable[[], bool],
        timeout: float = DEFAULT_WAIT_S,  # noqa: ASYNC109  # a test's bound, not a deadline
    ) -> None:
        """Return once `check()` holds. It is tried again after every command, every event
        (once the pool has handled it) and every far end action: it may look at the twin and
        at what the pool holds (legs, counts), not at SQL or Redis."""
        async with asyncio.timeout(timeout):
            while not check():
                if self._change is None or self._change.done():
                    self._change = asyncio.get_running_loop().create_future()
                await asyncio.shield(self._change)

    def changed(self) -> None:
        if self._change is not None and not self._change.done():
            self._change.set_result(None)


def phone_contact(extension: str) -> str:
    """The Contact a twin phone registers and answers with."""
    return f"sip:{extension}@127.0.0.1:5062"


def _user_part(uri: str) -> str:
    address = uri.split(":", 1)[1] if ":" in uri else uri
    return address.split("@", 1)[0] if "@" in address else ""


def _write_silence(path: Path, seconds: float) -> None:
    """What the twin records: silence as long as the recording (8 kHz mono 16-bit, as the
    worker writes)."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(WAV_RATE)
        wav.writeframes(b"\0\0" * round(seconds * WAV_RATE))


if TYPE_CHECKING:

    def _stands_in_for_the_real_thing(
        twin: MemoryWorkers, worker: MemoryWorker
    ) -> tuple[WorkerLauncher, WorkerChannel, WorkerEdge, PhoneContacts, PhoneRegistrations]:
        """mypy checks here that the twin's parts fit the interfaces they stand in for."""
        return twin, worker, twin.edge, twin.phones, twin.phones


def _held(leg: FarEnd) -> HeldLeg:
    inbound = leg.direction == "inbound"
    return HeldLeg(
        leg=leg.leg_id, direction=leg.direction,
        from_uri=leg.from_uri if inbound else "", to_uri=leg.uri.split(";", 1)[0],
        sip_call_id=leg.sip_call_id,
        peer=leg._peer.leg_id if leg._peer is not None else None,
    )  # fmt: skip


def _kept_when_detached(leg: FarEnd) -> bool:
    """As pbx.worker's: a bridged pair, or an answered caller on no bridge."""
    if leg._hangup_sent or not leg.answered.done():
        return False
    if leg._peer is not None:
        return leg._peer.answered.done()
    return leg.direction == "inbound"
