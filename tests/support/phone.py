"""A SIP desk phone for tests: one pjsua2 account on the shared user-agent thread.

It registers (or not), places and takes calls, sends RFC 4733 digits, plays a tone (or any
WAV) into every call so RTP really flows, and counts the RTP packets it receives.
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pjsua2 as pj

from pbx.ua_thread import UserAgentThread, shared_user_agent
from pbx.worker import RECORDER_CLOSE_S

UNREGISTER_SECONDS = 5.0


T = TypeVar("T")


def _settle(future: asyncio.Future[T], value: T) -> None:
    if not future.done():
        future.set_result(value)


TONE = Path("/tmp/pbx-test-phone-tone.wav")


def tone_file() -> str:
    if not TONE.exists():
        subprocess.run(
            ["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(TONE), "synth", "2", "sine",
             "600", "vol", "0.3"],
            check=True,
        )  # fmt: skip
    return str(TONE)


@dataclass
class CallProgress:
    """What the test sees of one call, updated from the user-agent thread."""

    ringing: asyncio.Future[None]
    answered: asyncio.Future[None]
    ended: asyncio.Future[int]  # the final SIP status (200 for a normal end after answer)
    digits: list[str] = field(default_factory=list)
    # The SIP message that ended an unanswered call (a final answer), as received.
    final_answer: str = ""
    # The far end's request that ended the call (its BYE), as received.
    ending_request: str = ""
    # What became of this phone's transfers (REFER): each final status reported.
    transfer_results: list[int] = field(default_factory=list)


class _PhoneCall(pj.Call):  # type: ignore[misc]
    def __init__(self, account: _PhoneAccount, progress: CallProgress, call_id: int) -> None:
        super().__init__(account, call_id)
        self.account = account
        self.progress = progress
        self.player: Any = None
        # Replaced players live as long as the call: the bridge may still read one for a
        # tick after stopTransmit (pjproject issue 4526).
        self.old_players: list[Any] = []
        self.handle = 0
        # Hang up the moment the call is answered (the caller who changed their mind).
        self.hang_up_when_answered = False

    def onCallState(self, prm: Any) -> None:
        info = self.getInfo()
        loop = self.account.loop
        if loop.is_closed():
            return  # the endpoint hangs up what a failed test left, after the loop ended
        if info.state == pj.PJSIP_INV_STATE_EARLY:
            loop.call_soon_threadsafe(_settle, self.progress.ringing, None)
        elif info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            loop.call_soon_threadsafe(_settle, self.progress.answered, None)
            if self.hang_up_when_answered:
                self.account.ua.post(lambda: self.hangup(pj.CallOpParam()))
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            if prm.e.type == pj.PJSIP_EVENT_TSX_STATE and (
                prm.e.body.tsxState.type == pj.PJSIP_EVENT_RX_MSG
            ):
                message = prm.e.body.tsxState.src.rdata.wholeMsg
                if message.startswith("SIP/2.0 "):
                    self.progress.final_answer = message
                else:
                    self.progress.ending_request = message
            code = int(info.lastStatusCode)
            loop.call_soon_threadsafe(_settle, self.progress.ended, code)
            ua = self.account.ua
            # Released on the thread's next turn: never inside the call's own callback.
            ua.post(lambda: ua.release(self.handle))

    def onCallMediaState(self, prm: Any) -> None:
        audio = self._audio()
        if audio is None:
            return
        if self.player is None:
            self.player = pj.AudioMediaPlayer()
            self.player.createPlayer(tone_file(), 0)
        self.player.startTransmit(audio)
        # "The speaker": the bridge only reads (and measures) a port that goes somewhere.
        audio.startTransmit(pj.Endpoint.instance().audDevManager().getPlaybackDevMedia())

    def play(self, path: str, loop: bool) -> None:
        player = pj.AudioMediaPlayer()
        player.createPlayer(path, 0 if loop else pj.PJMEDIA_FILE_NO_LOOP)
        audio = self._audio()
        if self.player is not None:
            if audio is not None:
                self.player.stopTransmit(audio)
            self.old_players.append(self.player)
        self.player = player
        if audio is not None:
            player.startTransmit(audio)

    def onDtmfDigit(self, prm: Any) -> None:
        digit = prm.digit
        self.account.loop.call_soon_threadsafe(self.progress.digits.append, digit)

    def onCallTransferStatus(self, prm: Any) -> None:
        # The REFER's final answer, or the final NOTIFY of an accepted one.
        if prm.finalNotify or prm.statusCode >= 300:
            code = int(prm.statusCode)
            self.account.loop.call_soon_threadsafe(self.progress.transfer_results.append, code)

    def _audio(self) -> Any:
        # Keep the CallInfo alive while reading its media vector (SWIG hands out views).
        info = self.getInfo()
        for index, media in enumerate(info.media):
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                return self.getAudioMedia(index)
        return None

    def rx_packets(self) -> int:
        try:
            return int(self.getStreamStat(0).rtcp.rxStat.pkt)
        except pj.Error:
            return 0


class _PhoneAccount(pj.Account):  # type: ignore[misc]  # pjsua2 has no type hints
    """Hands REGISTER answers and incoming calls back to the asyncio loop waiting for them."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        ua: UserAgentThread,
        incoming: asyncio.Queue[TestCall],
    ) -> None:
        super().__init__()
        self.loop = loop
        self.ua = ua
        self.answer: asyncio.Future[int] | None = None
        self.incoming = incoming
        # None: ring until the test answers; a number: answer with that status at once.
        self.auto_answer: int | None = None

    def onRegState(self, prm: pj.OnRegStateParam) -> None:  # pjsua2's callback name
        if self.answer is not None:
            self.loop.call_soon_threadsafe(_settle, self.answer, int(prm.code))

    def onIncomingCall(self, prm: Any) -> None:
        progress = CallProgress(
            ringing=self.loop.create_future(),
            answered=self.loop.create_future(),
            ended=self.loop.create_future(),
        )
        call = _PhoneCall(self, progress, prm.callId)
        call.handle = self.ua.keep(call)
        reply = pj.CallOpParam()
        reply.statusCode = self.auto_answer or 180
        call.answer(reply)
        self.loop.call_soon_threadsafe(
            self.incoming.put_nowait, TestCall(self.ua, call.handle, progress)
        )


class TestCall:
    """A call of a test phone, driven from asyncio."""

    __test__ = False

    def __init__(self, ua: UserAgentThread, handle: int, progress: CallProgress) -> None:
        self._ua = ua
        self._handle = handle
        self.progress = progress

    @property
    def answered(self) -> asyncio.Future[None]:
        return self.progress.answered

    @property
    def ended(self) -> asyncio.Future[int]:
        """The final SIP status: an unanswered call's failure code, 200 after a normal end."""
        return self.progress.ended

    @property
    def code(self) -> int | None:
        """The final SIP status once the call ended."""
        return self.progress.ended.result() if self.progress.ended.done() else None

    @property
    def dtmf_received(self) -> list[str]:
        """RFC 4733 digits heard from the far end, in order."""
        return self.progress.digits

    async def answer(self, code: int = 200) -> None:
        def answer() -> None:
            reply = pj.CallOpParam()
            reply.statusCode = code
            self._call().answer(reply)

        await self._ua.run_async(answer)

    async def hangup(self) -> None:
        await self._ua.run_async(lambda: self._call().hangup(pj.CallOpParam()))

    async def transfer(self, target: str) -> None:
        """A blind transfer, as a desk phone's transfer key does: REFER to `target`."""
        await self._ua.run_async(lambda: self._call().xfer(target, pj.CallOpParam()))

    async def transfer_to_call(self, consultation: TestCall) -> None:
        """An attended transfer, as a desk phone's transfer key after consulting: REFER with
        Replaces naming this phone's other call, whose far end is to take this one's."""
        await self._ua.run_async(
            lambda: self._call().xferReplaces(consultation._call(), pj.CallOpParam())
        )

    @property
    def transfer_results(self) -> list[int]:
        return self.progress.transfer_results

    async def send_dtmf(self, digits: str) -> None:
        """RFC 4733 events, paced by pjsua (one digit after the other)."""
        await self._ua.run_async(lambda: self._call().dialDtmf(digits))

    async def play(self, path: Path, loop: bool = False) -> None:
        """Send this WAV (8 kHz mono 16-bit) instead of the phone's tone."""
        await self._ua.run_async(lambda: self._call().play(str(path), loop))

    async def record_heard(self, path: Path, seconds: float) -> Path:
        """What this phone hears for `seconds`, as a WAV (8 kHz mono 16-bit)."""

        def start() -> int:
            recorder = pj.AudioMediaRecorder()
            recorder.createRecorder(str(path))
            audio = self._call()._audio()
            assert audio is not None, "no media"
            audio.startTransmit(recorder)
            return self._ua.keep(recorder)

        def stop(handle: int) -> None:
            recorder = self._ua.kept(handle, pj.AudioMediaRecorder)
            call = self._ua.kept(self._handle, _PhoneCall)
            audio = call._audio() if call is not None else None
            if recorder is not None and audio is not None:
                audio.stopTransmit(recorder)

        handle = await self._ua.run_async(start)
        await asyncio.sleep(seconds)  # the length of the sample, not a wait for an event
        await self._ua.run_async(lambda: stop(handle))
        # The bridge may touch a port for a tick after stopTransmit (the worker's
        # RECORDER_CLOSE_S): ten ticks, then the recorder goes and writes the WAV's header.
        await asyncio.sleep(RECORDER_CLOSE_S)

        def close(handle: int) -> None:
            self._ua.release(handle)
            gc.collect()  # the recorder's destructor writes the header: now, on this thread

        await self._ua.run_async(lambda: close(handle))
        return path

    async def rx_level(self) -> int:
        """Signal level (0-255) of what this phone hears now: silence is near 0."""

        def level() -> int:
            call = self._ua.kept(self._handle, _PhoneCall)
            audio = call._audio() if call is not None else None
            # pjsua2 names levels from the bridge's side: a call port "transmits" into the
            # bridge what its far end sends, which is what the phone hears.
            return int(audio.getTxLevel()) if audio is not None else 0

        return await self._ua.run_async(level)

    async def rx_packets(self) -> int:
        def count() -> int:
            call = self._ua.kept(self._handle, _PhoneCall)
            return call.rx_packets() if call is not None else 0

        return await self._ua.run_async(count)

    def _call(self) -> _PhoneCall:
        call = self._ua.kept(self._handle, _PhoneCall)
        if call is None:
            raise RuntimeError("the call has ended")
        return call


class TestPhone:
    """Registers like a desk phone; a failed registration is removed so it cannot retry."""

    __test__ = False  # not a test class, despite the name

    def __init__(
        self, user_agent: UserAgentThread | None = None, *, auto_answer: int | None = None
    ) -> None:
        self._ua = user_agent or shared_user_agent()
        self._handle: int | None = None
        self.auto_answer = auto_answer
        # Calls to this phone, ringing (or answered with auto_answer), in arrival order.
        self.incoming: asyncio.Queue[TestCall] = asyncio.Queue()

    async def open_unregistered(self, username: str, domain: str = "127.0.0.1") -> None:
        """An account that calls and is called directly, without a registrar."""
        await self._drop_account()
        loop = asyncio.get_running_loop()

        def create_account() -> int:
            config = pj.AccountConfig()
            config.idUri = f"sip:{username}@{domain}"
            config.sipConfig.transportId = self._ua.transport_id
            config.mediaConfig.transportConfig.boundAddress = self._ua.host
            config.mediaConfig.transportConfig.publicAddress = self._ua.host
            account = _PhoneAccount(loop, self._ua, self.incoming)
            account.auto_answer = self.auto_answer
            account.create(config)
            return self._ua.keep(account)

        self._handle = await self._ua.run_async(create_account)

    @property
    def address(self) -> str:
        return f"{self._ua.host}:{self._ua.sip_port}"

    async def call(
        self,
        uri: str,
        headers: dict[str, str] | None = None,
        *,
        hang_up_when_answered: bool = False,
    ) -> TestCall:
        """Place a call from this phone's account (with extra SIP headers); returns once the
        INVITE is sent. `hang_up_when_answered`: BYE at once after the ACK."""
        handle = self._handle
        if handle is None:
            raise RuntimeError("register the phone first")
        loop = asyncio.get_running_loop()
        progress = CallProgress(
            ringing=loop.create_future(), answered=loop.create_future(), ended=loop.create_future()
        )

        def place() -> int:
            account = self._ua.kept(handle, _PhoneAccount)
            assert account is not None
            call = _PhoneCall(account, progress, pj.PJSUA_INVALID_ID)
            call.handle = self._ua.keep(call)
            call.hang_up_when_answered = hang_up_when_answered
            options = pj.CallOpParam(True)
            for name, value in (headers or {}).items():
                header = pj.SipHeader()
                header.hName = name
                header.hValue = value
                options.txOption.headers.append(header)
            try:
                call.makeCall(uri, options)
            except pj.Error:
                self._ua.release(call.handle)
                raise
            return int(call.handle)

        return TestCall(self._ua, await self._ua.run_async(place), progress)

    async def next_incoming(self, timeout: float = 10.0) -> TestCall:
        async with asyncio.timeout(timeout):
            return await self.incoming.get()

    async def register(
        self,
        username: str,
        password: str,
        domain: str,
        registrar_host: str,
        registrar_port: int,
        timeout: float = 5.0,  # no answer is an outcome: the account must go
        *,
        auth_username: str | None = None,
    ) -> int:
        """The final SIP status of the REGISTER (200 when registered); TimeoutError if none.

        `auth_username` answers the challenge as another user (default: `username`).
        """
        await self._drop_account()
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[int] = loop.create_future()

        def create_account() -> int:
            # Every pjsua2 object, config structs included, lives on the user-agent thread.
            config = pj.AccountConfig()
            config.idUri = f"sip:{username}@{domain}"
            config.regConfig.registrarUri = f"sip:{registrar_host}:{registrar_port}"
            # Report a failure once; the test decides what happens next.
            config.regConfig.retryIntervalSec = 0
            credentials = pj.AuthCredInfo("digest", "*", auth_username or username, 0, password)
            config.sipConfig.authCreds.append(credentials)
            config.sipConfig.transportId = self._ua.transport_id
            config.mediaConfig.transportConfig.boundAddress = self._ua.host
            config.mediaConfig.transportConfig.publicAddress = self._ua.host
            account = _PhoneAccount(loop, self._ua, self.incoming)
            account.answer = answer
            account.auto_answer = self.auto_answer
            account.create(config)
            return self._ua.keep(account)

        self._handle = await self._ua.run_async(create_account)
        try:
            async with asyncio.timeout(timeout):
                code = await answer
        except TimeoutError:
            await self._drop_account()
            raise TimeoutError(
                f"no final answer to REGISTER from {registrar_host}:{registrar_port}"
                f" within {timeout:g} s"
            ) from None
        if not 200 <= code < 300:
            await self._drop_account()
        return code

    async def unregister(self) -> None:
        """Remove the binding at the registrar (REGISTER with Expires 0), then the account."""
        handle = self._handle
        if handle is None:
            return
        answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def send_unregister() -> None:
            account = self._ua.kept(handle, _PhoneAccount)
            if account is None:
                raise RuntimeError("the phone's account is gone (user agent stopped?)")
            account.answer = answer
            account.setRegistration(False)

        try:
            await self._ua.run_async(send_unregister)
            async with asyncio.timeout(UNREGISTER_SECONDS):
                await answer
        finally:
            await self._drop_account()

    def close(self) -> None:
        """Drop the account (pjsua unregisters it if it is registered). Safe to repeat."""
        handle, self._handle = self._handle, None
        if handle is not None and self._ua.running:
            self._ua.run(lambda: self._shut_down(handle))

    async def _drop_account(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None and self._ua.running:
            await self._ua.run_async(lambda: self._shut_down(handle))

    def _shut_down(self, handle: int) -> None:
        account = self._ua.kept(handle, _PhoneAccount)
        if account is not None:
            account.shutdown()
        self._ua.release(handle)
