"""A media worker process: one PJSUA2 endpoint executing the controller's media commands.

Forked by the fork server (pbx.forkserver) for the worker pool: commands arrive as JSON lines
on the stream socket given by --channel-fd, and events leave as JSON lines on it (pjsua
itself prints to stdout). The worker decides nothing about routing; it answers, plays,
collects DTMF, dials, bridges, records and hangs up when told, and reports what happens.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, BinaryIO

import pjsua2 as pj
import structlog

from pbx import unheard_speech
from pbx.capacity import LEGS_PER_INBOUND_CALL, legs_reserved
from pbx.media_timeout import RxWatch, sweep_interval
from pbx.protocol import (
    FINAL_HEADER,
    FULL_STATUS,
    MEDIA_TIMEOUT_REASON,
    SOURCE_HEADER,
    TRUNK_SOURCE,
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
    ProtocolError,
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
    encode,
)
from pbx.refer_hook import ReferInterceptor, ReferRequest
from pbx.ua_thread import Timer, UserAgentThread

log = structlog.get_logger("pbx.worker")

# Ask for far more than any wheel grants; the probe finds what was granted.
MAX_CALLS_ASKED = 64
# Objects pjsua may still touch for a clock tick after stopTransmit (pjproject issue 4526).
RETIRE_AFTER_S = 1.0
# Ten conference-bridge ticks: enough for the bridge to apply a change made before.
RECORDER_CLOSE_S = 0.2
HEADER_PREFIX = "x-pbx-"
# Silence detection while recording: the far end's level (0-255, pjmedia's u-law-like scale)
# at or below this counts as silence (about -44 dBFS, Asterisk's default threshold), sampled
# this often.
SILENCE_LEVEL = 20
SILENCE_POLL_S = 0.2
RING_TIMEOUT = (408, "Request Timeout")
TRANSFER_DECLINED = 603
# How long the phone's transfer subscription lives (RFC 3515): the controller reports the
# outcome well within it.
TRANSFER_SUBSCRIPTION_S = 60
MEDIA_TIMEOUT = (408, MEDIA_TIMEOUT_REASON)
# Let BYEs and final answers leave before the endpoint goes.
SHUTDOWN_LINGER_S = 0.2
# The media clock stops this long after the last leg: recorders finish their WAV on its ticks,
# and a worker between two calls need not stop and start it each time.
CLOCK_IDLE_S = 2.0
MEDIA_SWEEP = ("*", "media")
CLOCK_STOP = ("*", "clock")
DETACHED_LIMIT = ("*", "detached")
# The longest a call goes on in a worker whose controller is gone (Detach).
DETACHED_CALL_LIMIT_S = 4 * 3600.0
UNADOPTED = ("*", "unadopted")
# A caller on no bridge waits this long, detached, for a new controller (Attach): a takeover
# takes a few seconds with the default lease, at most twice its longest (30 s). Then nobody
# is coming, and the caller is hung up.
ADOPTION_WAIT_S = 60.0
# A leg nobody hears has its speech filtered after this long: by then pjmedia has latched
# onto the address the caller really sends from (10 packets), and a leg bridged at once is
# never filtered.
UNHEARD_FOR_S = 1.0


class CommandFailed(Exception):
    pass


class Prompt(pj.AudioMediaPlayer):  # type: ignore[misc]
    """A WAV playing to one leg; reports its end unless it loops.

    It holds its leg's id, not the leg or itself: a reference cycle through a pjsua2 object
    would let the garbage collector free it later on whatever thread runs the collection.
    """

    def __init__(self, agent: WorkerAgent, leg_id: str, number: int, *, loop: bool) -> None:
        super().__init__()
        self.agent = agent
        self.leg_id = leg_id
        self.number = number
        self.loop = loop

    def onEof2(self) -> None:
        # Measured: called on the media clock's thread (mainThreadOnly does not cover it),
        # and at every wrap of a looping file too.
        if not self.loop:
            agent, leg_id, number = self.agent, self.leg_id, self.number
            agent.ua.post(lambda: agent.prompt_finished(leg_id, number))


class Deadlines:
    """Keyed one-shot timers on the UA thread; a newer deadline replaces the older.

    The functions run on the UA thread's own timer heap: no thread per timer, and nothing
    wakes the worker while none is due.
    """

    def __init__(self, ua: UserAgentThread) -> None:
        self._ua = ua
        self._timers: dict[tuple[str, str], Timer] = {}

    def start(self, key: tuple[str, str], seconds: float, fn: Callable[[], None]) -> None:
        self.cancel(key)

        def run() -> None:
            if self._timers.get(key) is timer:
                del self._timers[key]
                fn()

        timer = self._ua.call_later(seconds, run)
        self._timers[key] = timer

    def cancel(self, key: tuple[str, str]) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def cancel_all(self) -> None:
        for key in list(self._timers):
            self.cancel(key)

    def pending(self, key: tuple[str, str]) -> bool:
        return key in self._timers


class WorkerLeg(pj.Call):  # type: ignore[misc]
    """One call leg; lives on the UA thread and reports its life to the agent."""

    def __init__(
        self,
        agent: WorkerAgent,
        leg_id: str,
        direction: str,
        call_id: int,
        parent: str | None,
        account: pj.Account | None = None,
    ) -> None:
        # `account`: the one an outbound call is placed from (its route set and credentials).
        super().__init__(agent.account if account is None else account, call_id)
        self.agent = agent
        self.leg_id = leg_id
        self.direction = direction
        self.parent = parent
        # Room for a leg it dials is kept (Dial.keep_room; inbound legs always have it).
        self.keeps_room = direction == "inbound"
        self.prompt: Prompt | None = None
        self.barge_in = False
        self.recorder: pj.AudioMediaRecorder | None = None
        self.recording: tuple[str, float] | None = None
        # The recorder hears the bridged peer too (Record.both_sides).
        self.recording_peer = False
        self.peer: WorkerLeg | None = None
        self.ringing_reported = False
        self.answered = False
        self.hangup_sent = False
        self.timed_out = False
        self.rx_watch: RxWatch | None = None  # from the answer on
        self.media_timed_out = False
        self.ended = False
        # The speech payload type its RTP socket drops (pbx.unheard_speech); None: none.
        self.speech_dropped: int | None = None
        # CSeqs of the REFERs taken on this leg: a retransmission is answered, not reported.
        self.transfer_requests: set[int] = set()
        # A supervisor's leg: the two legs it hears and who hears it (Monitor).
        self.monitor: Monitor | None = None

    def _audio_index(self) -> int | None:
        info = self.getInfo()
        for index, media in enumerate(info.media):
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                return index
        return None

    def audio(self) -> Any | None:
        """The leg's conference port once its media is up."""
        index = self._audio_index()
        return None if index is None else self.getAudioMedia(index)

    def rtp_socket(self) -> tuple[str, int, int] | None:
        """(host, port, speech payload type) of the active audio stream's RTP socket."""
        index = self._audio_index()
        if index is None:
            return None
        host, _, port = self.getMedTransportInfo(index).localRtpName.rpartition(":")
        return host, int(port), int(self.getStreamInfo(index).rxPt)

    def rx_packets(self) -> int | None:
        """RTP packets received so far; None while there is no stream that should carry any
        (media not up, on hold either way, a stream the far end only receives)."""
        info = self.getInfo()
        for index, media in enumerate(info.media):
            if (
                media.type == pj.PJMEDIA_TYPE_AUDIO
                and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE
                and media.dir & pj.PJMEDIA_DIR_DECODING
            ):
                return int(self.getStreamStat(index).rtcp.rxStat.pkt)
        return None

    def onCallState(self, prm: Any) -> None:
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_EARLY and self.direction == "outbound":
            if not self.ringing_reported and info.lastStatusCode in (180, 183):
                self.ringing_reported = True
                self.agent.emit(LegRinging(leg=self.leg_id))
        elif info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            self.answered = True
            self.rx_watch = RxWatch(alive_at=time.monotonic())
            self.agent.deadlines.cancel((self.leg_id, "ring"))
            self.agent.emit(
                LegAnswered(
                    leg=self.leg_id, sip_call_id=info.callIdString, contact=info.remoteContact
                )
            )
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.agent.leg_disconnected(self, info.lastStatusCode, info.lastReason)

    def onCallMediaState(self, prm: Any) -> None:
        self.agent.connect_media(self)

    def onCallTransferRequest(self, prm: Any) -> None:
        # Only a REFER the interceptor (pbx.refer_hook) left alone gets here: one on a leg not
        # in a call. Accepted (any 2xx), pjsua would dial the Refer-To itself, past the
        # controller, and hand this leg's object the new call (docs/notes/refer-in-pjsua2.md):
        # 603, the phone keeps its call.
        prm.statusCode = TRANSFER_DECLINED
        log.warning("transfer_declined", leg=self.leg_id, target=prm.dstUri)

    def onDtmfDigit(self, prm: Any) -> None:
        self.agent.emit(DtmfReceived(leg=self.leg_id, digit=prm.digit))
        if self.barge_in and self.prompt is not None:
            self.agent.stop_prompt(self, interrupted=True)


class WorkerAccount(pj.Account):  # type: ignore[misc]
    def __init__(self, agent: WorkerAgent) -> None:
        super().__init__()
        self.agent = agent

    def onIncomingCall(self, prm: Any) -> None:
        self.agent.incoming_call(prm)


class WorkerAgent:
    """Everything the worker holds; every method runs on the UA thread."""

    def __init__(
        self,
        ua: UserAgentThread,
        *,
        worker_id: int,
        host: str,
        rtp_port: int,
        rtp_ports: int,
        trusted: frozenset[str],
        trunk_username: str,
        trunk_password: str,
        media_timeout: float,
        drop_unheard_speech: bool,
        emit: Callable[[_Message], None],
    ) -> None:
        self.ua = ua
        self.media_timeout = media_timeout
        self.drop_unheard_speech = drop_unheard_speech
        self.worker_id = worker_id
        self.trusted = trusted
        self.emit = emit
        self.legs: dict[str, WorkerLeg] = {}
        self.max_legs = 0
        self.deadlines = Deadlines(ua)
        # Called once Detach came and no leg is left: the command loop ends (main).
        self.on_drained: Callable[[], None] = lambda: None
        self._detached = False
        self._drained = False
        self._probing = False
        self._retired: list[tuple[float, object]] = []
        self._leg_numbers = 0
        self._prompt_numbers = 0
        self._recorder_numbers = 0
        self._closing_recorders: dict[int, pj.AudioMediaRecorder] = {}
        self._host = host
        self._rtp_ports = (rtp_port, rtp_ports)
        self._trunk_credentials = (trunk_username, trunk_password)
        # Accounts for calls placed through a loose router (Dial.route), by its URI.
        self._routed_accounts: dict[str, int] = {}
        account = WorkerAccount(self)
        account.create(self._account_config(), True)
        # In the UA registry, so the endpoint shuts it down on its own thread at stop.
        self._account_handle = ua.keep(account)
        # pjsip points into it until libDestroy: it lives as long as this agent (the process).
        self._refer_interceptor = ReferInterceptor(self.refer_received)

    def _account_config(self, route: str | None = None) -> pj.AccountConfig:
        config = pj.AccountConfig()
        config.idUri = f"sip:worker{self.worker_id}@{self._host}:{self.ua.sip_port}"
        config.sipConfig.transportId = self.ua.transport_id
        media = config.mediaConfig.transportConfig
        media.port, media.portRange = self._rtp_ports
        media.boundAddress = self._host
        media.publicAddress = self._host
        # Both accounts have the same address: an incoming call must find the default one.
        config.priority = 1 if route is None else 0
        if route is not None:
            # The account's proxy is the pre-loaded route set of every call it places: the
            # INVITE (and its resend with credentials, and its CANCEL) goes to `route` with
            # a real Route header. A "Route" among the Dial's headers would only be text:
            # pjsip routes by the parsed route set, so it would go straight to the target.
            # In angle brackets: parsed as a Route header's value, ;lr is then the URI's.
            config.sipConfig.proxies.append(f"<{route}>")
            username, password = self._trunk_credentials
            if username:
                # Answers the provider's digest challenge on outbound calls.
                config.sipConfig.authCreds.append(
                    pj.AuthCredInfo("digest", "*", username, 0, password)
                )
        return config

    def _routed_account(self, route: str) -> WorkerAccount:
        """The account whose calls go through `route`, made on first use (incoming calls
        still land on the default account)."""
        handle = self._routed_accounts.get(route)
        account = self.ua.kept(handle, WorkerAccount) if handle is not None else None
        if account is None:
            account = WorkerAccount(self)
            account.create(self._account_config(route), False)
            self._routed_accounts[route] = self.ua.keep(account)
        return account

    @property
    def account(self) -> WorkerAccount:
        account = self.ua.kept(self._account_handle, WorkerAccount)
        if account is None:
            raise CommandFailed("the worker is shutting down")
        return account

    # -- capacity -------------------------------------------------------------------------

    def probe_capacity(self) -> int:
        """How many legs this process may hold: call ourselves until pjsua refuses.

        The calls we place and receive are refused at once (486 from ourselves), so their
        slots free within milliseconds; a silent target would hold them until timer B.
        """
        self._probing = True
        target = f"sip:probe@{self.ua.host}:{self.ua.sip_port}"
        probes: list[pj.Call] = []
        try:
            for _ in range(MAX_CALLS_ASKED):
                call = pj.Call(self.account)
                try:
                    call.makeCall(target, pj.CallOpParam(True))
                except pj.Error:
                    break
                probes.append(call)
            capacity = len(probes)
            deadline = time.monotonic() + 5.0
            endpoint = self.ua.endpoint
            while any(p.isActive() for p in probes) and time.monotonic() < deadline:
                endpoint.libHandleEvents(10)
            for _ in range(10):
                endpoint.libHandleEvents(10)
        finally:
            self._probing = False
        # No live call exists yet, so freeing them now cannot hit a reused call id.
        probes.clear()
        gc.collect()
        self.max_legs = capacity
        return capacity

    def _legs_reserved(self) -> int:
        return legs_reserved(
            (leg.leg_id for leg in self.legs.values() if leg.keeps_room),
            (leg.parent for leg in self.legs.values() if not leg.keeps_room),
        )

    # -- calls in ---------------------------------------------------------------------------

    def incoming_call(self, prm: Any) -> None:
        self._leg_numbers += 1
        leg = WorkerLeg(self, f"w{self.worker_id}-{self._leg_numbers}", "inbound", prm.callId, None)
        reply = pj.CallOpParam()
        source = prm.rdata.srcAddress
        if self._probing:
            reply.statusCode = 486
        elif self._detached:
            reply.statusCode = FULL_STATUS  # the edge tries a worker that has a controller
        elif source not in self.trusted:
            log.warning("invite_from_untrusted_source", source=source)
            reply = _final_answer(403)
            self.emit(CallRefused(reason="untrusted_source"))
        elif self._legs_reserved() + LEGS_PER_INBOUND_CALL > self.max_legs:
            reply.statusCode = FULL_STATUS  # unmarked: the edge tries the next worker
            self.emit(CallRefused(reason="worker_full"))
        else:
            reply.statusCode = 180
        if reply.statusCode != 180 and not self._probing:
            # A final answer given inside onIncomingCall to an INVITE without SDP aborts the
            # process in pjsua 2.15.1 (pjsip_rx_data_free_cloned: Assertion `rdata' failed):
            # refuse on the thread's next turn. (The probe's own INVITEs carry SDP.)
            self._retire(leg)
            self.ua.post(lambda: leg.answer(reply))
            return
        request_line, headers = _parse_request(prm.rdata.wholeMsg)
        if reply.statusCode != 180:
            leg.answer(reply)
            self._retire(leg)
            return
        # A provider's call is answered (greeting) or refused within milliseconds: a 180 first
        # only races the 200 through the edge's processes, and a caller that gets the 180
        # after the 200 may drop the call (measured with SIPp at 50 calls/s). pjsua has sent
        # 100 Trying. A phone's call rings its callee first: its caller hears ringback.
        if headers.get(SOURCE_HEADER) != TRUNK_SOURCE:
            leg.answer(reply)
        self.legs[leg.leg_id] = leg
        self._legs_changed()
        info = leg.getInfo()
        self.emit(
            IncomingCall(
                leg=leg.leg_id,
                from_uri=info.remoteUri,
                to_uri=info.localUri,
                request_uri=request_line,
                sip_call_id=info.callIdString,
                headers=headers,
                source=source,
            )
        )

    def leg_disconnected(self, leg: WorkerLeg, code: int, reason: str) -> None:
        if leg.ended:
            return
        leg.ended = True
        # Keep the Call object alive past its own callback: freeing it here is unsafe.
        self._retire(leg)
        if self.legs.pop(leg.leg_id, None) is None:
            return  # refused at the door: the controller never heard of it
        self._legs_changed()
        self.deadlines.cancel((leg.leg_id, "ring"))
        if leg.recording is not None:
            self._stop_recording(leg)
        if leg.prompt is not None:
            self.stop_prompt(leg, interrupted=True)
        if leg.peer is not None:
            peer, leg.peer.peer, leg.peer = leg.peer, None, None
            self._drop_speech_if_unheard(peer)
            if self._detached:
                self._hang_up_quietly(peer)  # no controller to decide: the call is over
        if leg.timed_out and not leg.answered:
            code, reason = RING_TIMEOUT
        elif leg.media_timed_out:
            code, reason = MEDIA_TIMEOUT
        self.emit(LegEnded(leg=leg.leg_id, code=code, reason=reason))
        if self._detached and not self.legs:
            self._drain()

    # -- transfers --------------------------------------------------------------------------

    def refer_received(self, request: ReferRequest) -> bool:
        """A REFER on one of our answered legs is the controller's to decide: reported, and
        answered 202 by the interceptor; the phone hears "100 Trying" at once."""
        leg = next(
            (
                leg
                for leg in self.legs.values()
                if leg.answered and not leg.hangup_sent
                and leg.getInfo().callIdString == request.sip_call_id
            ),
            None,
        )  # fmt: skip
        if leg is None:
            return False
        if request.cseq in leg.transfer_requests:
            return True  # a retransmission: our 202 was lost
        leg.transfer_requests.add(request.cseq)
        log.info("transfer_requested", leg=leg.leg_id, target=request.target,
                 attended=request.replaces is not None)  # fmt: skip
        leg_id, cseq = leg.leg_id, request.cseq
        # Not from inside pjsip's receive path: on the thread's next turn, and before any
        # answer the controller sends (a command runs on a later turn).
        if self._detached:
            # No controller to carry it out: refused, and the phone keeps its call.
            self.ua.post(lambda: self._decline_transfer(leg_id, cseq))
            return True
        self.ua.post(lambda: self._notify_trying(leg_id, cseq))
        self.emit(
            TransferRequested(
                leg=leg.leg_id,
                request=request.cseq,
                target=request.target,
                replaces=request.replaces,
            )
        )
        return True

    def _notify_trying(self, leg_id: str, request: int) -> None:
        leg = self.legs.get(leg_id)
        if leg is None or leg.hangup_sent:
            return
        try:
            self._notify_transfer(leg, request, 100, "Trying")
        except pj.Error as exc:
            log.info("transfer_notify_failed", leg=leg_id, error=exc.info())

    def _decline_transfer(self, leg_id: str, request: int) -> None:
        leg = self.legs.get(leg_id)
        if leg is not None:
            try:
                self._notify_transfer(leg, request, 603, "Decline")
            except pj.Error as exc:
                log.error("transfer_decline_failed", leg=leg_id, error=exc.info())

    def _notify_transfer(self, leg: WorkerLeg, request: int, code: int, reason: str) -> None:
        """A NOTIFY of the REFER's progress (RFC 3515): a sipfrag with the status line."""
        state = (
            "terminated;reason=noresource" if code >= 200
            else f"active;expires={TRANSFER_SUBSCRIPTION_S}"
        )  # fmt: skip
        prm = pj.CallSendRequestParam()
        prm.method = "NOTIFY"
        for name, value in (("Event", f"refer;id={request}"), ("Subscription-State", state)):
            header = pj.SipHeader()
            header.hName, header.hValue = name, value
            prm.txOption.headers.append(header)
        prm.txOption.contentType = "message/sipfrag;version=2.0"
        prm.txOption.msgBody = f"SIP/2.0 {code} {reason}\r\n"
        leg.sendRequest(prm)

    # -- commands ---------------------------------------------------------------------------

    def execute(self, command: Command) -> None:
        self._forget_retired()
        if isinstance(command, Answer):
            reply = pj.CallOpParam()
            reply.statusCode = 200
            self._leg(command.leg).answer(reply)
        elif isinstance(command, Reject):
            leg = self._leg(command.leg)
            leg.hangup(_final_answer(command.code, command.reason))
            leg.hangup_sent = True
        elif isinstance(command, Hangup):
            self._hangup(self._leg(command.leg))
        elif isinstance(command, Play):
            self._play(self._leg(command.leg), command)
        elif isinstance(command, StopPlay):
            leg = self._leg(command.leg)
            if leg.prompt is not None:
                self.stop_prompt(leg, interrupted=True)
        elif isinstance(command, Dial):
            self._dial(command)
        elif isinstance(command, Bridge):
            self._bridge(self._leg(command.a), self._leg(command.b))
        elif isinstance(command, Unbridge):
            self._unbridge(self._leg(command.a), self._leg(command.b))
        elif isinstance(command, SendDtmf):
            self._leg(command.leg).dialDtmf(command.digits)
        elif isinstance(command, Record):
            self._record(
                self._leg(command.leg), command.path, command.max_seconds, command.both_sides
            )
            if command.silence_s is not None:
                self._watch_silence(command.leg, command.silence_s, time.monotonic())
        elif isinstance(command, StopRecord):
            leg = self._leg(command.leg)
            if leg.recording is not None:
                self._stop_recording(leg)
        elif isinstance(command, Monitor):
            self._monitor(self._leg(command.leg), command)
        elif isinstance(command, ReportTransfer):
            leg = self._leg(command.leg)
            if command.request not in leg.transfer_requests:
                raise CommandFailed(f"no transfer {command.request} on leg {command.leg}")
            self._notify_transfer(leg, command.request, command.code, command.reason)
        elif isinstance(command, Shutdown):
            self.hangup_all()
        elif isinstance(command, Detach):
            self._detach()
        elif isinstance(command, Attach):
            self._attach()

    def _detach(self) -> None:
        self._detached = True
        for leg in list(self.legs.values()):
            if not _kept_when_detached(leg):
                self._hang_up_quietly(leg)
        log.info("detached", legs_kept=len(self.legs))
        if not self.legs:
            self._drain()
        # Without media timeouts (or with both sides on hold) nothing would end a call whose
        # BYEs went to a dead edge: a detached call lasts at most this long.
        self.deadlines.start(DETACHED_LIMIT, DETACHED_CALL_LIMIT_S, self._end_detached_calls)
        self.deadlines.start(UNADOPTED, ADOPTION_WAIT_S, self._end_unbridged_calls)

    def _drain(self) -> None:
        self._drained = True
        self.on_drained()

    def _end_unbridged_calls(self) -> None:
        waiting = [leg for leg in self.legs.values() if leg.peer is None]
        log.warning("unadopted_callers_hung_up", legs=len(waiting))
        for leg in waiting:
            self._hang_up_quietly(leg)

    def _attach(self) -> None:
        """A new controller: it hears what we hold, then drives it as the last one did."""
        if not self._detached or self._drained:
            raise CommandFailed("not detached" if not self._detached else "exiting: no call left")
        held = []
        for leg in self.legs.values():
            if not leg.hangup_sent:
                try:
                    held.append(_held(leg))
                except pj.Error:  # going as we speak: its LegEnded is for nobody
                    continue
        self._detached = False
        self.deadlines.cancel(DETACHED_LIMIT)
        self.deadlines.cancel(UNADOPTED)
        log.info("attached", legs=len(held))
        self.emit(Attached(worker_id=self.worker_id, max_legs=self.max_legs, pid=os.getpid(),
                           legs=held))  # fmt: skip

    def _end_detached_calls(self) -> None:
        log.warning("detached_calls_ended", legs=len(self.legs))
        for leg in list(self.legs.values()):
            self._hang_up_quietly(leg)

    def _hang_up_quietly(self, leg: WorkerLeg) -> None:
        """Detached, nobody hears of a failure: one leg pjsua refuses to end must not stop
        the others (or escape a pjsua callback)."""
        try:
            self._hangup(leg)
        except pj.Error as exc:
            log.error("hangup_failed", leg=leg.leg_id, error=exc.info())

    def hangup_all(self) -> None:
        for leg in list(self.legs.values()):
            self._hangup(leg)

    def release_all(self) -> None:
        """Drop every pjsua2 object now, on this thread: one freed after libDestroy aborts."""
        self.deadlines.cancel_all()
        self._closing_recorders.clear()
        for leg in self.legs.values():
            leg.prompt, leg.recorder, leg.peer = None, None, None
        self.legs.clear()
        self._retired.clear()
        gc.collect()

    def _leg(self, leg_id: str) -> WorkerLeg:
        leg = self.legs.get(leg_id)
        if leg is None:
            raise CommandFailed(f"no leg {leg_id}")
        return leg

    def _hangup(self, leg: WorkerLeg) -> None:
        """BYE, CANCEL or 480 depending on the leg's state; once (pjsua refuses a second)."""
        if leg.hangup_sent:
            return
        reply = pj.CallOpParam()
        info = leg.getInfo()
        if leg.direction == "inbound" and info.state < pj.PJSIP_INV_STATE_CONNECTING:
            reply = _final_answer(480)  # an unanswered caller: "not now", not "busy"
        leg.hangup(reply)
        leg.hangup_sent = True

    def _ring_timeout(self, leg_id: str) -> None:
        leg = self.legs.get(leg_id)
        if leg is not None and not leg.answered:
            log.info("ring_timeout", leg=leg_id)
            leg.timed_out = True
            self._hangup(leg)

    # -- dead media -------------------------------------------------------------------------

    def _legs_changed(self) -> None:
        """The media clock and the dead-media sweep run only while the worker holds legs: an
        idle worker sleeps until a packet arrives."""
        if self.legs:
            self.deadlines.cancel(CLOCK_STOP)
            self.ua.media_clock(True)
            if not self.deadlines.pending(MEDIA_SWEEP):
                self.watch_media()
        else:
            self.deadlines.cancel(MEDIA_SWEEP)
            self.deadlines.start(CLOCK_STOP, CLOCK_IDLE_S, self._stop_idle_clock)

    def _stop_idle_clock(self) -> None:
        if self.legs:
            return
        if self._closing_recorders:
            self.deadlines.start(CLOCK_STOP, CLOCK_IDLE_S, self._stop_idle_clock)
            return
        self.ua.media_clock(False)

    def watch_media(self) -> None:
        """Look for legs without RTP every little while (pbx.media_timeout); 0 turns it off."""
        if self.media_timeout > 0 and self.legs:
            interval = sweep_interval(self.media_timeout)
            self.deadlines.start(MEDIA_SWEEP, interval, self._sweep_media)

    def _sweep_media(self) -> None:
        now = time.monotonic()
        try:
            for leg in list(self.legs.values()):
                if leg.rx_watch is None or leg.hangup_sent:
                    continue
                try:
                    silent = leg.rx_watch.silent_for(leg.rx_packets(), now)
                    if silent >= self.media_timeout:
                        log.warning("media_timeout", leg=leg.leg_id, silent_s=round(silent, 1))
                        leg.media_timed_out = True
                        self._hangup(leg)
                except pj.Error as exc:  # the leg ended in between: its own events say so
                    log.info("media_sweep_skipped", leg=leg.leg_id, error=exc.info())
        finally:
            self.watch_media()

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
            raise CommandFailed(f"no free leg in worker {self.worker_id}")
        account = self._routed_account(command.route) if command.route else self.account
        leg = WorkerLeg(self, command.leg, "outbound", pj.PJSUA_INVALID_ID, command.parent, account)
        leg.keeps_room = command.keep_room
        call = pj.CallOpParam(True)
        if command.from_uri:
            call.txOption.localUri = command.from_uri
        for name, value in command.headers.items():
            header = pj.SipHeader()
            header.hName = name
            header.hValue = value
            call.txOption.headers.append(header)
        self.legs[leg.leg_id] = leg
        self._legs_changed()
        try:
            leg.makeCall(command.uri, call)
        except pj.Error:
            self.legs.pop(leg.leg_id, None)
            self._legs_changed()
            self._retire(leg)
            raise
        if command.timeout_s is not None:
            self.deadlines.start(
                (leg.leg_id, "ring"), command.timeout_s, lambda: self._ring_timeout(command.leg)
            )

    def _bridge(self, a: WorkerLeg, b: WorkerLeg) -> None:
        if a is b:
            raise CommandFailed(f"cannot bridge leg {a.leg_id} to itself")
        for leg in (a, b):
            if leg.peer is not None and leg.peer not in (a, b):
                self._unbridge(leg, leg.peer)
            if leg.prompt is not None:
                self.stop_prompt(leg, interrupted=True)
        a.peer, b.peer = b, a
        self.connect_media(a)

    def _unbridge(self, a: WorkerLeg, b: WorkerLeg) -> None:
        if a.peer is not b:
            raise CommandFailed(f"legs {a.leg_id} and {b.leg_id} are not bridged")
        a.peer, b.peer = None, None
        audio_a, audio_b = a.audio(), b.audio()
        if audio_a is not None and audio_b is not None:
            audio_a.stopTransmit(audio_b)
            audio_b.stopTransmit(audio_a)
            for leg, peer_audio in ((a, audio_b), (b, audio_a)):
                if leg.recorder is not None and leg.recording_peer:
                    peer_audio.stopTransmit(leg.recorder)
        self._drop_speech_if_unheard(a)
        self._drop_speech_if_unheard(b)

    def _monitor(self, supervisor: WorkerLeg, command: Monitor) -> None:
        talkers = (self._leg(command.a), self._leg(command.b))
        if supervisor in talkers or supervisor.peer is not None:
            raise CommandFailed(f"leg {supervisor.leg_id} cannot supervise that talk")
        if supervisor.prompt is not None:
            self.stop_prompt(supervisor, interrupted=True)
        if supervisor.monitor is not None:
            self._unwire_monitor(supervisor)
        supervisor.monitor = command
        self.connect_media(supervisor)

    def _unwire_monitor(self, supervisor: WorkerLeg) -> None:
        """Undo what a supervisor's leg hears and who hears it (a mode change)."""
        command = supervisor.monitor
        audio = supervisor.audio() if not supervisor.ended else None
        if command is None or audio is None:
            return
        for leg_id in (command.a, command.b):
            talker = self.legs.get(leg_id)
            talker_audio = talker.audio() if talker is not None else None
            if talker_audio is not None:
                talker_audio.stopTransmit(audio)
                audio.stopTransmit(talker_audio)

    def _wire_monitors(self, changed: WorkerLeg) -> None:
        """(Re)connect every supervisor's leg that hears `changed` or is `changed`."""
        for supervisor in self.legs.values():
            command = supervisor.monitor
            if command is None or changed.leg_id not in (supervisor.leg_id, command.a, command.b):
                continue
            audio = supervisor.audio()
            if audio is None:
                continue
            heard_by = {"listen": (), "whisper": (command.b,), "barge": (command.a, command.b)}
            for leg_id in (command.a, command.b):
                talker = self.legs.get(leg_id)
                talker_audio = talker.audio() if talker is not None else None
                if talker_audio is None:
                    continue
                talker_audio.startTransmit(audio)
                if leg_id in heard_by[command.mode]:
                    audio.startTransmit(talker_audio)

    def connect_media(self, leg: WorkerLeg) -> None:
        """(Re)connect a leg's audio once its media is up: to its peer or its prompt."""
        audio = leg.audio()
        if audio is None:
            return
        if leg.peer is not None:
            peer_audio = leg.peer.audio()
            if peer_audio is not None:
                audio.startTransmit(peer_audio)
                peer_audio.startTransmit(audio)
        elif leg.prompt is not None:
            leg.prompt.startTransmit(audio)
        self._feed_recorder(leg, audio)
        if leg.peer is not None:
            peer_audio = leg.peer.audio()
            if peer_audio is not None:
                self._feed_recorder(leg.peer, peer_audio)
        self._wire_monitors(leg)
        self._drop_speech_if_unheard(leg)
        if leg.peer is not None:
            self._drop_speech_if_unheard(leg.peer)

    @staticmethod
    def _feed_recorder(leg: WorkerLeg, audio: Any) -> None:
        """The leg's recorder hears its far end, and with both_sides its bridged peer."""
        if leg.recorder is None:
            return
        audio.startTransmit(leg.recorder)
        if leg.recording_peer and leg.peer is not None:
            peer_audio = leg.peer.audio()
            if peer_audio is not None:
                peer_audio.startTransmit(leg.recorder)

    def _drop_speech_if_unheard(self, leg: WorkerLeg) -> None:
        """Filter the leg's speech in the kernel once no peer or recorder has heard it for a
        while, and take the filter off before one does (pbx.unheard_speech)."""
        if not self.drop_unheard_speech or leg.ended:
            return
        key = (leg.leg_id, "unheard")
        heard = leg.monitor is not None and leg.monitor.mode != "listen"
        if leg.peer is not None or leg.recorder is not None or heard:
            self.deadlines.cancel(key)
            if leg.speech_dropped is not None:
                self._filter_speech(leg, unheard=False)
        elif leg.speech_dropped is None and not self.deadlines.pending(key):
            leg_id = leg.leg_id
            self.deadlines.start(key, UNHEARD_FOR_S, lambda: self._unheard_for_a_while(leg_id))

    def _unheard_for_a_while(self, leg_id: str) -> None:
        leg = self.legs.get(leg_id)
        heard = leg is not None and leg.monitor is not None and leg.monitor.mode != "listen"
        if leg is not None and leg.peer is None and leg.recorder is None and not heard:
            self._filter_speech(leg, unheard=True)

    def _filter_speech(self, leg: WorkerLeg, *, unheard: bool) -> None:
        try:
            found = leg.rtp_socket()
        except pj.Error:
            return  # the media went in between; its own callback follows
        if found is None:
            return  # no media yet: connect_media comes back when it is up
        host, port, speech = found
        sock = unheard_speech.udp_socket_on(port, host)
        if sock is None:
            log.warning("rtp_socket_not_found", leg=leg.leg_id, port=port)
            return
        with sock:
            if unheard:
                unheard_speech.attach(sock, unheard_speech.speech_drop_program(speech))
            else:
                unheard_speech.detach(sock)
        leg.speech_dropped = speech if unheard else None

    def _play(self, leg: WorkerLeg, command: Play) -> None:
        self._prompt_numbers += 1
        prompt = Prompt(self, leg.leg_id, self._prompt_numbers, loop=command.loop)
        # Opened before the old prompt stops: a missing file leaves the old one playing.
        prompt.createPlayer(command.path, 0 if command.loop else pj.PJMEDIA_FILE_NO_LOOP)
        if leg.prompt is not None:
            self.stop_prompt(leg, interrupted=True)
        leg.prompt = prompt
        leg.barge_in = command.barge_in
        self.connect_media(leg)

    def prompt_finished(self, leg_id: str, number: int) -> None:
        leg = self.legs.get(leg_id)
        if leg is not None and leg.prompt is not None and leg.prompt.number == number:
            self.stop_prompt(leg, interrupted=False)

    def stop_prompt(self, leg: WorkerLeg, *, interrupted: bool) -> None:
        prompt = leg.prompt
        if prompt is None:
            return
        leg.prompt = None
        audio = leg.audio() if not leg.ended else None
        if audio is not None:
            prompt.stopTransmit(audio)
        self._retire(prompt)
        self.emit(PlaybackEnded(leg=leg.leg_id, interrupted=interrupted))

    def _record(self, leg: WorkerLeg, path: str, max_seconds: float, both_sides: bool) -> None:
        if leg.recording is not None:
            raise CommandFailed(f"leg {leg.leg_id} is already recording")
        recorder = pj.AudioMediaRecorder()
        recorder.createRecorder(path)
        leg.recorder = recorder
        leg.recording_peer = both_sides
        leg.recording = (path, time.monotonic())
        self.connect_media(leg)
        leg_id = leg.leg_id
        self.deadlines.start((leg_id, "record"), max_seconds, lambda: self._recording_full(leg_id))

    def _watch_silence(self, leg_id: str, silence_s: float, loud_at: float) -> None:
        """Stop the leg's recording once its far end has been quiet for `silence_s`."""
        leg = self.legs.get(leg_id)
        if leg is None or leg.recording is None:
            return
        audio = leg.audio()
        # A call port "transmits" into the bridge what its far end sends (pjsua2's naming).
        level = int(audio.getTxLevel()) if audio is not None else 0
        now = time.monotonic()
        if level > SILENCE_LEVEL:
            loud_at = now
        if now - loud_at >= silence_s:
            log.info("recording_silence", leg=leg_id, seconds=round(now - loud_at, 1))
            self._stop_recording(leg)
            return
        self.deadlines.start(
            (leg_id, "silence"),
            SILENCE_POLL_S,
            lambda: self._watch_silence(leg_id, silence_s, loud_at),
        )

    def _recording_full(self, leg_id: str) -> None:
        leg = self.legs.get(leg_id)
        if leg is not None and leg.recording is not None:
            self._stop_recording(leg)

    def _stop_recording(self, leg: WorkerLeg) -> None:
        assert leg.recording is not None and leg.recorder is not None
        self.deadlines.cancel((leg.leg_id, "record"))
        self.deadlines.cancel((leg.leg_id, "silence"))
        path, started = leg.recording
        audio = leg.audio() if not leg.ended else None
        if audio is not None:
            audio.stopTransmit(leg.recorder)
        peer = leg.peer if leg.recording_peer else None
        peer_audio = peer.audio() if peer is not None and not peer.ended else None
        if peer_audio is not None:
            peer_audio.stopTransmit(leg.recorder)
        self._recorder_numbers += 1
        number = self._recorder_numbers
        self._closing_recorders[number] = leg.recorder
        leg.recorder, leg.recording, leg.recording_peer = None, None, False
        self._drop_speech_if_unheard(leg)
        ended = RecordingEnded(leg=leg.leg_id, path=path, seconds=time.monotonic() - started)

        key = (leg.leg_id, f"recorder-{number}")

        def close() -> None:
            # Destroying the recorder writes the WAV header, on the bridge's next tick too
            # (measured: the header's sizes are 0 right after, final within 20 ms).
            del self._closing_recorders[number]
            self.deadlines.start(key, RECORDER_CLOSE_S, lambda: self.emit(ended))

        # Not at once: the bridge applies stopTransmit on its next tick (pjproject #4526).
        self.deadlines.start(key, RECORDER_CLOSE_S, close)

    def _retire(self, *objects: object) -> None:
        now = time.monotonic()
        self._retired.extend((now, obj) for obj in objects)

    def _forget_retired(self) -> None:
        # A disconnected pj.Call keeps its old call id, and its destructor hangs up whatever
        # call holds that id then: free one only while no live leg uses the id (measured: a
        # probe call freed after its slot was reused hung up the caller on that slot).
        cutoff = time.monotonic() - RETIRE_AFTER_S
        live_ids = {leg.getId() for leg in self.legs.values()}
        self._retired = [
            (at, obj)
            for at, obj in self._retired
            if at > cutoff or (isinstance(obj, pj.Call) and obj.getId() in live_ids)
        ]


def _final_answer(code: int, reason: str | None = None) -> pj.CallOpParam:
    """A final answer to an INVITE that the edge relays as it is (see FINAL_HEADER)."""
    reply = pj.CallOpParam()
    reply.statusCode = code
    if reason:
        reply.reason = reason
    header = pj.SipHeader()
    header.hName = FINAL_HEADER
    header.hValue = "1"
    reply.txOption.headers.append(header)
    return reply


def _siblings(hosts: list[str], ports: str) -> frozenset[str]:
    """ "5080:40" -> {"host:5080", ..., "host:5119"} for each host."""
    if not ports:
        return frozenset()
    first, count = (int(part) for part in ports.split(":"))
    return frozenset(f"{host}:{port}" for host in hosts for port in range(first, first + count))


def _parse_request(message: str) -> tuple[str, dict[str, str]]:
    """The Request-URI and the X-PBX-* headers of a raw INVITE."""
    head = message.split("\r\n\r\n", 1)[0].split("\r\n")
    parts = head[0].split(" ")
    request_uri = parts[1] if len(parts) >= 3 else ""
    headers: dict[str, str] = {}
    for line in head[1:]:
        name, sep, value = line.partition(":")
        if sep and name.strip().lower().startswith(HEADER_PREFIX):
            headers[_canonical(name.strip())] = value.strip()
    return request_uri, headers


def _canonical(name: str) -> str:
    return "-".join(part.upper() if part.lower() == "pbx" else part.capitalize()
                    for part in name.split("-"))  # fmt: skip


class EventWriter:
    """Events from the UA thread and results from the command loop share one descriptor."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self._controller_gone = False

    def __call__(self, message: _Message) -> None:
        data = encode(message)
        with self._lock:
            if self._controller_gone:
                return
            try:
                while data:
                    written = os.write(self._fd, data)
                    data = data[written:]
            except ConnectionError:  # a broken pipe or a reset socket
                # The controller died: stdin's EOF (or SIGTERM) follows and we hang up. An
                # exception here would escape a pjsua callback and cut that clean-up short.
                self._controller_gone = True
                _quiet_output()


class _Stderr:
    """The log's file: stderr, until the controller reading it is gone (then nowhere)."""

    def write(self, text: str) -> None:
        try:
            sys.stderr.write(text)
        except BrokenPipeError:
            _quiet_output()

    def flush(self) -> None:
        try:
            sys.stderr.flush()
        except BrokenPipeError:
            _quiet_output()


def _quiet_output() -> None:
    """Point stdout and stderr at /dev/null once their reader, the controller, is gone.

    Measured: with the controller SIGKILLed, the worker hung up its calls, then aborted
    (SIGABRT) while a log line raised BrokenPipeError; with this it exits 0.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.dup2(devnull, sys.stderr.fileno())
    os.close(devnull)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pbx.worker", description=__doc__)
    parser.add_argument("--worker-id", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--sip-port", type=int, required=True)
    parser.add_argument("--rtp-port", type=int, required=True)
    parser.add_argument("--rtp-ports", type=int, default=40)
    parser.add_argument("--channel-fd", type=int, required=True, help="commands in, events out")
    parser.add_argument("--max-legs", type=int, default=0, help="known leg cap; 0: probe it")
    parser.add_argument("--trusted", action="append", default=[], help="HOST:PORT of the edge")
    parser.add_argument(
        "--sibling-ports", default="", help="FIRST:COUNT: the SIP ports of the other workers on "
        "--host and each --sibling-host, trusted too (links between workers)",
    )  # fmt: skip
    parser.add_argument(
        "--sibling-host", action="append", default=[], help="another media host's address"
    )
    parser.add_argument("--trunk-username", default="")
    parser.add_argument("--media-timeout", type=float, default=0.0, help="seconds; 0: off")
    parser.add_argument(
        "--drop-unheard-speech", action=argparse.BooleanOptionalAction, default=True,
        help="filter RTP speech in the kernel while no peer or recorder hears the leg",
    )  # fmt: skip
    parser.add_argument("--pjsua-log-level", type=int, default=1, help="5 shows SIP messages")
    # The password comes in the environment, never on the command line (ps shows argv).
    return parser.parse_args(argv)


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # SIGTERM (the pool's stop, or the parent's death) ends like stdin EOF: calls hung up.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    structlog.configure(
        # It only calls write and flush, which is all _Stderr has.
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        processors=[
            structlog.processors.add_log_level,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
    )
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    emit = EventWriter(args.channel_fd)
    ua = UserAgentThread(
        host=args.host,
        sip_port=args.sip_port,
        max_calls=MAX_CALLS_ASKED,
        log_level=args.pjsua_log_level,
        console_log=args.pjsua_log_level > 1,
        clock_always_on=False,
    )
    ua.start()
    try:
        agent = ua.run(
            lambda: WorkerAgent(
                ua,
                worker_id=args.worker_id,
                host=args.host,
                rtp_port=args.rtp_port,
                rtp_ports=args.rtp_ports,
                trusted=frozenset(args.trusted)
                | _siblings([args.host, *args.sibling_host], args.sibling_ports),
                trunk_username=args.trunk_username,
                trunk_password=os.environ.get("PBX_TRUNK_PASSWORD", ""),
                media_timeout=args.media_timeout,
                drop_unheard_speech=args.drop_unheard_speech,
                emit=emit,
            )
        )
    except BaseException:
        ua.stop()
        raise
    try:
        if args.max_legs > 0:
            agent.max_legs = max_legs = args.max_legs
        else:
            max_legs = ua.run(agent.probe_capacity)
        log.info("worker_ready", worker_id=args.worker_id, sip_port=ua.sip_port, max_legs=max_legs)
        agent.on_drained = lambda: _stop_reading(args.channel_fd)
        hello = Hello(
            worker_id=args.worker_id, max_legs=max_legs, sip_port=ua.sip_port, pid=os.getpid()
        )
        emit(hello)
        with open(args.channel_fd, "rb", closefd=False) as commands:
            try:
                _serve_commands(ua, agent, emit, commands)
            except ConnectionResetError:
                # The pool closed its end with our events unread (it died): EOF all the same.
                log.info("controller_gone")
    finally:
        # The controller is gone or asked us to stop: no call outlives its controller. A
        # second SIGTERM must not cut this short (pjsua2 objects left alive abort the exit).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        ua.run(agent.hangup_all)
        time.sleep(SHUTDOWN_LINGER_S)
        ua.run(agent.release_all)
        ua.stop()
    return 0


def _serve_commands(
    ua: UserAgentThread, agent: WorkerAgent, emit: EventWriter, commands: BinaryIO
) -> None:
    """Execute commands until Shutdown or EOF (the pool is gone); one CommandResult each."""
    for line in commands:
        try:
            command = decode_command(line)
        except ProtocolError as exc:
            log.error("bad_command", error=str(exc))
            continue
        try:
            ua.run(lambda command=command: agent.execute(command))  # type: ignore[misc]
        except (pj.Error, CommandFailed) as exc:
            reason = exc.info() if isinstance(exc, pj.Error) else str(exc)
            emit(CommandResult(cid=command.cid, ok=False, error=reason))
        else:
            emit(CommandResult(cid=command.cid, ok=True))
        if isinstance(command, Shutdown):
            return


def _held(leg: WorkerLeg) -> HeldLeg:
    info = leg.getInfo()
    inbound = leg.direction == "inbound"
    return HeldLeg(
        leg=leg.leg_id, direction="inbound" if inbound else "outbound",
        from_uri=info.remoteUri if inbound else info.localUri,
        to_uri=info.localUri if inbound else info.remoteUri,
        sip_call_id=info.callIdString,
        peer=leg.peer.leg_id if leg.peer is not None else None,
    )  # fmt: skip


def _kept_when_detached(leg: WorkerLeg) -> bool:
    """A bridged pair, or an answered caller on no bridge (in a greeting, a menu, a queue):
    a new controller may take them over (Attach)."""
    if leg.hangup_sent or not leg.answered:
        return False
    if leg.peer is not None:
        return leg.peer.answered
    return leg.direction == "inbound"


def _stop_reading(fd: int) -> None:
    """The command loop reads EOF: a detached worker with no call left exits. Events may
    still be written; the media host's lines to us fail from now on (an Attach too late)."""
    with socket.fromfd(fd, socket.AF_UNIX, socket.SOCK_STREAM) as channel:
        channel.shutdown(socket.SHUT_RD)


if __name__ == "__main__":
    sys.exit(main())
