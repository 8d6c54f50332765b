"""The process's one PJSUA2 Endpoint, owned by one thread through which every pjsua2 call goes."""

from __future__ import annotations

import asyncio
import atexit
import gc
import heapq
import itertools
import queue
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import pjsua2 as pj
import structlog

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Desk phones and trunks speak these; preferring them avoids transcoding.
PREFERRED_CODECS = ("PCMU/8000", "PCMA/8000", "G722/16000")
# The loop sleeps in libHandleEvents until a packet (SIP or RTP: media shares the SIP ioqueue),
# a pjsip timer, one of our timers or a job's wake-up packet; this only bounds a sleep.
# Measured: polling every 10 ms cost each idle worker ~0.7 % of a core.
_MAX_SLEEP_MS = 1000
# RFC 5626 keep-alive: pjsip drops a datagram of bare CRLFs without a log line or a reply,
# so sending one to our own SIP port is how another thread wakes libHandleEvents.
_WAKE_DATAGRAM = b"\r\n\r\n"
_CODEC_TOP_PRIORITY = 255

_Job = tuple[Callable[[], Any], "Future[Any]"]


class Timer:
    """A callback due at a monotonic time on the user-agent thread; `cancel` stops it."""

    __slots__ = ("cancelled", "fn", "when")

    def __init__(self, when: float, fn: Callable[[], object]) -> None:
        self.when = when
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class UserAgentError(Exception):
    """The Endpoint could not start, is not running, or a second one was asked for."""


# PJSUA2 allows one Endpoint per process; this is the thread that owns it, if any.
_owner_lock = threading.Lock()
_owner: UserAgentThread | None = None


class UserAgentThread:
    """A pjsua2 Endpoint on a dedicated thread (threadCnt 0, mainThreadOnly, libHandleEvents).

    pjsua2 objects (Account, Call, players) must be created, used and dropped on this thread:
    pass closures to `run` / `run_async`, and keep the objects in the registry (`keep`) so the
    garbage collector never finalises one on another thread or after libDestroy.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        sip_port: int = 0,
        log_level: int = 1,
        console_log: bool = False,
        max_calls: int | None = None,
        clock_always_on: bool = True,
    ) -> None:
        self.host = host
        # The null sound device's clock drives the conference bridge (players, recorders,
        # bridged audio, outgoing RFC 4733). Off: it runs only while `media_clock(True)`.
        self._clock_always_on = clock_always_on
        self._clock_running = False
        # Asked for, not granted: the wheel clamps it (see pbx.worker's capacity probe).
        self._max_calls = max_calls
        self._requested_port = sip_port
        self._log_level = log_level
        self._console_log = console_log
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        # Guards `_accepting`, so no job is queued behind the stop sentinel.
        self._submit_lock = threading.Lock()
        self._accepting = False
        self._endpoint: Any = None
        self._transport_id = -1
        self._sip_port = 0
        self._registry: dict[int, object] = {}
        self._handles = itertools.count(1)
        self._timers: list[tuple[float, int, Timer]] = []
        self._timer_order = itertools.count()
        self._waker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._wake_sent = False

    @property
    def running(self) -> bool:
        return self._accepting

    @property
    def endpoint(self) -> Any:
        """The pj.Endpoint; touch it only on the user-agent thread."""
        self._require_own_thread()
        return self._endpoint

    @property
    def transport_id(self) -> int:
        """The UDP transport accounts must use (AccountConfig.sipConfig.transportId)."""
        return self._transport_id

    @property
    def sip_port(self) -> int:
        """The UDP port the transport is bound to (the actual one when 0 was asked for)."""
        return self._sip_port

    def start(self) -> None:
        """Create the Endpoint on a new thread; return once it is up. UserAgentError if not."""
        global _owner
        with _owner_lock:
            if _owner is not None:
                raise UserAgentError("a PJSUA2 Endpoint already runs in this process; share it")
            _owner = self
        # A daemon thread, so interpreter exit reaches atexit handlers that stop it cleanly.
        self._thread = threading.Thread(target=self._main, name="pjsua", daemon=True)
        self._thread.start()
        self._ready.wait()
        error = self._startup_error
        if error is not None:
            self._thread.join()
            self._thread = None
            self._release_ownership()
            reason = error.info() if isinstance(error, pj.Error) else repr(error)
            raise UserAgentError(f"PJSUA2 did not start: {reason}") from error
        with self._submit_lock:
            self._accepting = True

    def run(self, fn: Callable[[], T]) -> T:
        """Call `fn` on the user-agent thread and return its result (or raise its exception)."""
        if threading.current_thread() is self._thread:
            return fn()
        future: Future[T] = Future()
        self._submit(fn, future)
        return future.result()

    async def run_async(self, fn: Callable[[], T]) -> T:
        """`run` for asyncio code: the event loop keeps going while `fn` waits its turn."""
        future: Future[T] = Future()
        self._submit(fn, future)
        return await asyncio.wrap_future(future)

    def post(self, fn: Callable[[], object]) -> None:
        """Run `fn` on the user-agent thread's next turn without waiting (callable from it too:
        pjsua callbacks use it to act after the callback has returned)."""
        self._submit(fn, Future())

    def call_later(self, seconds: float, fn: Callable[[], object]) -> Timer:
        """Run `fn` on this thread after `seconds` (from this thread only)."""
        self._require_own_thread()
        timer = Timer(time.monotonic() + max(0.0, seconds), fn)
        heapq.heappush(self._timers, (timer.when, next(self._timer_order), timer))
        return timer

    def media_clock(self, running: bool) -> None:
        """Start or stop the conference bridge's clock (a no-op when it always runs).

        Measured: the null device's clock thread costs an idle worker ~0.2 % of a core.
        """
        self._require_own_thread()
        if self._clock_always_on or running == self._clock_running:
            return
        if running:
            self._endpoint.audDevManager().setNullDev()
        else:
            self._endpoint.audDevManager().setNoDev()
        self._clock_running = running

    def keep(self, obj: object) -> int:
        """Hold a strong reference to a pjsua2 object until `release`; returns its handle."""
        self._require_own_thread()
        handle = next(self._handles)
        self._registry[handle] = obj
        return handle

    def kept(self, handle: int, kind: type[T]) -> T | None:
        """The object kept under `handle`, or None once released or after stop."""
        self._require_own_thread()
        obj = self._registry.get(handle)
        return obj if isinstance(obj, kind) else None

    def release(self, handle: int) -> None:
        # On this thread, so a pjsua2 destructor that runs now runs where pjsua expects it.
        self._require_own_thread()
        self._registry.pop(handle, None)

    def stop(self) -> None:
        """Hang up, drop accounts and calls, destroy the Endpoint, join the thread. Idempotent."""
        thread = self._thread
        if thread is None:
            return
        with self._submit_lock:
            self._accepting = False
            self._jobs.put(None)
            self._wake()
        thread.join()
        self._waker.close()
        self._thread = None
        self._release_ownership()

    def _submit(self, fn: Callable[[], Any], future: Future[Any]) -> None:
        with self._submit_lock:
            if not self._accepting:
                raise UserAgentError("the PJSUA2 user-agent thread is not running")
            self._jobs.put((fn, future))
            self._wake()

    def _wake(self) -> None:
        # The loop clears the flag before it drains the queue, so a job queued after the drain
        # always finds it clear and sends; one datagram wakes it for every job queued since.
        if self._wake_sent or threading.current_thread() is self._thread:
            return
        self._wake_sent = True
        self._waker.sendto(_WAKE_DATAGRAM, (self.host, self._sip_port))

    def _require_own_thread(self) -> None:
        if threading.current_thread() is not self._thread:
            raise UserAgentError("pjsua2 objects may only be used on the user-agent thread")

    def _release_ownership(self) -> None:
        global _owner
        with _owner_lock:
            if _owner is self:
                _owner = None

    def _main(self) -> None:
        try:
            self._create_endpoint()
        except BaseException as exc:  # re-raised by start() on the caller's thread
            self._startup_error = exc
            self._destroy_endpoint()
            self._ready.set()
            return
        self._ready.set()
        log.info("pjsua_started", address=f"{self.host}:{self._sip_port}")
        try:
            while self._handle_events_and_jobs():
                pass
        finally:
            with self._submit_lock:
                self._accepting = False
            self._fail_waiting_jobs()
            self._shutdown()

    def _fail_waiting_jobs(self) -> None:
        # Only left when the loop itself failed; after a clean stop the queue is empty.
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None and job[1].set_running_or_notify_cancel():
                job[1].set_exception(UserAgentError("the PJSUA2 user-agent thread failed"))

    def _create_endpoint(self) -> None:
        endpoint = pj.Endpoint()
        self._endpoint = endpoint
        endpoint.libCreate()
        config = pj.EpConfig()
        config.uaConfig.threadCnt = 0
        config.uaConfig.mainThreadOnly = True
        config.logConfig.level = self._log_level
        config.logConfig.consoleLevel = self._log_level if self._console_log else 0
        config.logConfig.msgLogging = self._console_log
        # The null sound device clocks the conference bridge; never let it close, or players
        # stop advancing and RFC 4733 digits are not sent.
        config.medConfig.sndAutoCloseTime = -1
        # RTP is read by this thread's libHandleEvents too, not by a media thread that polls
        # its own ioqueue every 10 ms (measured: part of an idle worker's cost).
        config.medConfig.hasIoqueue = False
        config.medConfig.threadCnt = 0
        config.medConfig.clockRate = 8000
        # Continuous RTP as desk phones and trunks send it; VAD also cut our test tones short.
        config.medConfig.noVad = True
        if self._max_calls is not None:
            config.uaConfig.maxCalls = self._max_calls
        endpoint.libInit(config)
        transport = pj.TransportConfig()
        transport.port = self._requested_port
        transport.boundAddress = self.host
        transport.publicAddress = self.host
        self._transport_id = endpoint.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
        local_name: str = endpoint.transportGetInfo(self._transport_id).localName
        self._sip_port = int(local_name.rsplit(":", 1)[1])
        endpoint.libStart()
        if self._clock_always_on:
            endpoint.audDevManager().setNullDev()
            self._clock_running = True
        else:
            endpoint.audDevManager().setNoDev()
        for rank, codec in enumerate(PREFERRED_CODECS):
            endpoint.codecSetPriority(codec, _CODEC_TOP_PRIORITY - rank)

    def _handle_events_and_jobs(self) -> bool:
        """One turn of the loop; False once stop was asked for."""
        self._endpoint.libHandleEvents(self._sleep_ms())
        self._wake_sent = False
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return False
            fn, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except Exception as exc:  # handed to the caller, which raises it
                future.set_exception(exc)
            else:
                future.set_result(result)
        self._run_due_timers()
        return True

    def _sleep_ms(self) -> int:
        if not self._jobs.empty():
            return 0
        if not self._timers:
            return _MAX_SLEEP_MS
        due_in = self._timers[0][0] - time.monotonic()
        return max(0, min(_MAX_SLEEP_MS, int(due_in * 1000) + 1))

    def _run_due_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            timer = heapq.heappop(self._timers)[2]
            if not timer.cancelled:
                try:
                    timer.fn()
                except Exception:  # one failing timer must not stop the endpoint's thread
                    log.exception("timer_failed")

    def _shutdown(self) -> None:
        self._timers.clear()
        self._endpoint.hangupAllCalls()
        for obj in self._registry.values():
            if isinstance(obj, pj.Account):
                obj.shutdown()
        self._registry.clear()
        # Reference cycles holding Calls/Accounts must go now, not after libDestroy.
        gc.collect()
        self._destroy_endpoint()
        log.info("pjsua_stopped")

    def _destroy_endpoint(self) -> None:
        if self._endpoint is not None:
            self._endpoint.libDestroy()
            self._endpoint = None


_shared: UserAgentThread | None = None
_shared_lock = threading.Lock()


def shared_user_agent() -> UserAgentThread:
    """The process-wide user agent for code that does not own one (test phones).

    Started on first use on an ephemeral loopback port and stopped when the interpreter exits.
    """
    global _shared
    with _shared_lock:
        if _shared is None or not _shared.running:
            user_agent = UserAgentThread()
            user_agent.start()
            atexit.register(user_agent.stop)
            _shared = user_agent
        return _shared
