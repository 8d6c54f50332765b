"""Call legs as the controller sees them: awaitable handles on a leg living in a media worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from pbx.protocol import (
    MEDIA_TIMEOUT_REASON,
    Answer,
    Bridge,
    Command,
    Hangup,
    Monitor,
    Play,
    Record,
    Reject,
    ReportTransfer,
    SendDtmf,
    StopPlay,
    StopRecord,
    Unbridge,
)

T = TypeVar("T")

# The worker reports this for a leg it no longer has: it ended meanwhile.
NO_SUCH_LEG = "no leg "
WORKER_LOST = "worker lost"


class LegGone(Exception):
    """The leg ended (hung up, or its worker died) before or while a command ran."""

    def __init__(self, leg_id: str) -> None:
        super().__init__(f"leg {leg_id} is gone")
        self.leg_id = leg_id


class WorkerCommandFailed(Exception):
    """The worker could not carry a command out (a bad prompt file, a refused dial)."""


@dataclass(frozen=True)
class LegEnd:
    code: int
    reason: str

    @property
    def lost(self) -> bool:
        """Its worker died: the call failed, nobody hung up."""
        return self.reason == WORKER_LOST

    def ended_by(self, party: str) -> str:
        """Who ended the leg, for the call record: `party` (who was on it), or "system" when
        the service cut it (its worker died, its media stopped)."""
        return "system" if self.reason in (WORKER_LOST, MEDIA_TIMEOUT_REASON) else party


@dataclass
class Playback:
    # True when a digit, a new prompt, a bridge or the leg's end cut it short.
    finished: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass
class Recording:
    # The seconds recorded, once stopped.
    finished: asyncio.Future[float] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


# Sends one command built from its command id; raises WorkerCommandFailed or LegGone.
SendCommand = Callable[[Callable[[int], Command]], Awaitable[None]]
# Creates an outbound leg in the same worker.
DialLeg = Callable[["Leg", str, float, str | None, dict[str, str], str | None], Awaitable["Leg"]]


@dataclass(frozen=True)
class TransferRequest:
    """The leg's phone asked to connect its far end elsewhere (pbx.protocol.TransferRequested);
    `replaces`: the phone's other dialog whose far end it is to be connected to (attended)."""

    request: int
    target: str
    replaces: str | None = None

    @property
    def target_user(self) -> str:
        return _user_part(self.target)


class Leg:
    """One call leg in one worker: commands are awaitable, its life shows in the futures."""

    def __init__(
        self,
        *,
        leg_id: str,
        worker_id: int,
        direction: Literal["inbound", "outbound"],
        from_uri: str,
        to_uri: str,
        request_uri: str,
        headers: dict[str, str],
        sip_call_id: str | None,
        send: SendCommand,
        dial: DialLeg,
        source: str = "",
    ) -> None:
        """`source`: HOST:PORT of the edge an inbound leg's INVITE came from; an outbound
        leg's is its parent's (the flows dial a call's parties through that edge)."""
        self.id = leg_id
        self.worker_id = worker_id
        self.direction = direction
        self.from_uri = from_uri
        self.to_uri = to_uri
        self.request_uri = request_uri
        self.headers = headers
        self.sip_call_id = sip_call_id
        self.source = source
        # Set on answer: the Contact of the phone that took the call.
        self.answered_contact: str | None = None
        loop = asyncio.get_running_loop()
        self.ringing: asyncio.Future[None] = loop.create_future()
        self.answered: asyncio.Future[None] = loop.create_future()
        self.ended: asyncio.Future[LegEnd] = loop.create_future()
        self._send = send
        self._dial = dial
        self._digits: asyncio.Queue[str] = asyncio.Queue()
        self._playbacks: deque[Playback] = deque()
        self._recording: Recording | None = None
        # Where the phone's transfer requests go while a flow takes them; None: declined.
        self._transfers: asyncio.Queue[TransferRequest] | None = None
        # Another call's flow took this leg over (hand_on): its first flow's drop leaves it.
        self._handed_on = False

    @property
    def caller(self) -> str:
        return _user_part(self.from_uri)

    @property
    def called(self) -> str:
        return _user_part(self.request_uri or self.to_uri)

    # -- commands -------------------------------------------------------------------------

    async def answer(self) -> None:
        await self._command(lambda cid: Answer(cid=cid, leg=self.id))

    async def reject(self, code: int = 486, reason: str | None = None) -> None:
        await self._command(lambda cid: Reject(cid=cid, leg=self.id, code=code, reason=reason))

    async def hangup(self) -> None:
        await self._command(lambda cid: Hangup(cid=cid, leg=self.id))

    def hand_on(self) -> None:
        """Another call's flow takes this leg over (an attended transfer joins the consulted
        party to the caller): the flow that dialled it no longer ends it with `drop`; the new
        one ends it with `hangup`."""
        self._handed_on = True

    async def drop(self) -> None:
        """Hang up unless the leg has ended already or was handed on; a leg that is gone is
        not an error."""
        if not self.ended.done() and not self._handed_on:
            with contextlib.suppress(LegGone):
                await self.hangup()

    async def play(self, path: Path, *, loop: bool = False, barge_in: bool = True) -> Playback:
        playback = Playback()
        self._playbacks.append(playback)
        try:
            await self._command(
                lambda cid: Play(cid=cid, leg=self.id, path=str(path), loop=loop, barge_in=barge_in)
            )
        except BaseException:
            with contextlib.suppress(ValueError):
                self._playbacks.remove(playback)
            raise
        return playback

    async def stop_playback(self) -> None:
        if any(not p.finished.done() for p in self._playbacks):
            await self._command(lambda cid: StopPlay(cid=cid, leg=self.id))

    async def next_digit(
        self,
        timeout: float | None,  # noqa: ASYNC109  # "no digit" is an answer, not an error
        *,
        until: asyncio.Future[Any] | None = None,
    ) -> str | None:
        """The next DTMF digit (queued since the leg began); None on timeout, when the leg
        ended, or when `until` completed first. A digit is never lost: one that arrived is
        returned even if `until` completed at the same moment."""
        if not self._digits.empty():
            return self._digits.get_nowait()
        getter = asyncio.ensure_future(self._digits.get())
        watched: set[asyncio.Future[Any]] = {getter, self.ended}
        if until is not None:
            watched.add(until)
        try:
            await asyncio.wait(watched, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not getter.done():
                # Cancelling a waiting get() leaves any item in the queue.
                getter.cancel()
        return getter.result() if getter.done() and not getter.cancelled() else None

    async def dial(
        self,
        uri: str,
        *,
        timeout: float,  # noqa: ASYNC109  # the ring timeout: CANCEL after it
        from_uri: str | None = None,
        headers: dict[str, str] | None = None,
        route: str | None = None,
    ) -> Leg:
        """A new outbound leg in this leg's worker; returns once the INVITE is sent. `route`:
        a loose router (a SIP URI with ;lr) the INVITE passes first (Dial.route)."""
        return await self._dial(self, uri, timeout, from_uri, headers or {}, route)

    async def bridge(self, other: Leg) -> None:
        """Both legs hear each other (they live in one worker); prompts on either stop."""
        await self._command(lambda cid: Bridge(cid=cid, a=self.id, b=other.id))

    async def unbridge(self, other: Leg) -> None:
        await self._command(lambda cid: Unbridge(cid=cid, a=self.id, b=other.id))

    async def monitor(self, a: Leg, b: Leg, mode: Literal["listen", "whisper", "barge"]) -> None:
        """This leg (a supervisor's) hears the talk of `a` and `b` (pbx.protocol.Monitor)."""
        await self._command(lambda cid: Monitor(cid=cid, leg=self.id, a=a.id, b=b.id, mode=mode))

    async def send_dtmf(self, digits: str) -> None:
        await self._command(lambda cid: SendDtmf(cid=cid, leg=self.id, digits=digits))

    async def record(
        self,
        path: Path,
        max_seconds: float,
        *,
        silence_s: float | None = None,
        both_sides: bool = False,
    ) -> Recording:
        """Record what the far end says (with `both_sides`, the bridged peer too) to a WAV
        until stop_recording, max_seconds, the end of the leg or `silence_s` of silence.
        `finished` settles once the WAV is complete, also when the leg ended first (only a
        lost worker settles it without a file)."""
        recording, previous = Recording(), self._recording
        # Set first: a very short recording may end before the command's result arrives.
        self._recording = recording
        try:
            await self._command(
                lambda cid: Record(
                    cid=cid,
                    leg=self.id,
                    path=str(path),
                    max_seconds=max_seconds,
                    silence_s=silence_s,
                    both_sides=both_sides,
                )
            )
        except BaseException:
            self._recording = previous
            raise
        return recording

    async def stop_recording(self) -> None:
        if self._recording is not None and not self._recording.finished.done():
            await self._command(lambda cid: StopRecord(cid=cid, leg=self.id))

    @contextlib.contextmanager
    def taking_transfers(self) -> Iterator[asyncio.Queue[TransferRequest]]:
        """While inside, the phone's transfer requests queue here for the flow to answer
        (report_transfer); outside, the pool declines them at once."""
        requests: asyncio.Queue[TransferRequest] = asyncio.Queue()
        self._transfers = requests
        try:
            yield requests
        finally:
            if self._transfers is requests:  # a leg handed on may be taken by its new flow
                self._transfers = None

    async def report_transfer(self, request: TransferRequest, code: int, reason: str) -> None:
        """How the requested transfer goes, for the phone: 1xx on, 2xx done, else failed."""
        await self._command(
            lambda cid: ReportTransfer(
                cid=cid, leg=self.id, request=request.request, code=code, reason=reason
            )
        )

    async def _command(self, make: Callable[[int], Command]) -> None:
        if self.ended.done():
            raise LegGone(self.id)
        try:
            await self._send(make)
        except WorkerCommandFailed as exc:
            if self.ended.done() or str(exc).startswith(NO_SUCH_LEG):
                raise LegGone(self.id) from None
            raise

    # -- events from the worker (called by the pool) --------------------------------------

    def on_ringing(self) -> None:
        _settle(self.ringing, None)

    def on_answered(self, sip_call_id: str | None, contact: str | None = None) -> None:
        if sip_call_id:
            self.sip_call_id = sip_call_id
        self.answered_contact = contact
        _settle(self.answered, None)

    def on_digit(self, digit: str) -> None:
        self._digits.put_nowait(digit)

    def on_transfer_requested(self, request: TransferRequest) -> bool:
        """False when no flow takes transfers on this leg now (the pool declines it)."""
        if self._transfers is None:
            return False
        self._transfers.put_nowait(request)
        return True

    def on_playback_ended(self, interrupted: bool) -> None:
        if self._playbacks:
            _settle(self._playbacks.popleft().finished, interrupted)

    def on_recording_ended(self, seconds: float) -> None:
        if self._recording is not None:
            _settle(self._recording.finished, seconds)

    @property
    def recording_open(self) -> bool:
        """A recording whose file the worker has not reported complete yet."""
        return self._recording is not None and not self._recording.finished.done()

    def on_ended(self, end: LegEnd) -> None:
        while self._playbacks:
            _settle(self._playbacks.popleft().finished, True)
        if self._recording is not None and end.reason == WORKER_LOST:
            # Otherwise the worker closes the file and reports RecordingEnded after LegEnded.
            _settle(self._recording.finished, 0.0)
        _settle(self.ended, end)


def _settle(future: asyncio.Future[T], value: T) -> None:
    if not future.done():
        future.set_result(value)


def _user_part(uri: str) -> str:
    """sip:1001@host:5060;tag=x or "Name" <sip:+4930@host> -> 1001 / +4930."""
    inner = uri.split("<", 1)[1].split(">", 1)[0] if "<" in uri else uri
    address = inner.split(":", 1)[1] if ":" in inner else inner
    return address.split("@", 1)[0] if "@" in address else ""
