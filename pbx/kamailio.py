"""Kamailio, the SIP edge: its config rendered from the settings, its process and its RPC client."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import math
import re
import socket
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jinja2
import structlog
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from core.child_process import ChildProcess, check_ports_free
from core.context import EdgeUnavailable
from core.settings import MAX_RING_TIMEOUT_S, Settings, WorkerSettings
from pbx.capacity import max_workers
from pbx.protocol import FINAL_HEADER, RING_HEADER
from pbx.provider_registration import (
    REGISTRATION_ID,
    RETRY_AFTER_FAILURE_S,
    renewal_tick_seconds,
    store_registration,
    unregister,
)

log = structlog.get_logger(__name__)

READY_TIMEOUT_SECONDS = 15.0
SHARED_MEMORY_MB = 64
PRIVATE_MEMORY_MB = 8
LOCATION_TABLE = "location"
# Why the edge's guard drops (or refuses) a request:
#   banned          from an address banned for wrong digest answers (silence)
#   banned_account  for an account refused at that address for its wrong answers (403)
#   auth_failures   a wrong digest answer (challenged again, and counted towards those bans)
#   phone_flood     over the phones' flood limit (pike; silence)
#   trunk_limit     over the trunk's limit (503)
#   no_worker       a call no media worker had room for (every worker full, or none ready; 503)
#   malformed       a request or reply that fails the sanity checks
#   unknown_dialog  an in-dialog request without a route of ours (404)
DROP_REASONS = (
    "banned",
    "banned_account",
    "auth_failures",
    "phone_flood",
    "trunk_limit",
    "no_worker",
    "malformed",
    "unknown_dialog",
)
# Kamailio's statistic for a reason is this prefix + the reason, in the group "script".
DROP_STAT_PREFIX = "edge_dropped_"
# Drops are logged as one summary line per source and reason this often; the bans and blocks
# made in that time are logged with them. Never more lines than DROP_SUMMARY_LINES at a time
# (plus one saying how much was left out).
DROP_SUMMARY_SECONDS = 10
# A ring ends at the worker that dialled it: it CANCELs at the Dial's timeout_s and reports
# 408. The edge must not end it first, yet tm's defaults would: fr_inv_timer (120 s after the
# first 1xx) and max_inv_lifetime (180 s, RFC 3261 timer C) cut a queue's 600 s ring. Both
# follow the longest ring the settings allow, plus this margin for the CANCEL and its 487.
RING_TIMER_MARGIN_S = 10
DROP_SUMMARY_LINES = 20
# Sources with at least this many drops are logged before the others.
DROP_SUMMARY_LOUD = 10
# How long the edge keeps an answered call's dialog (the dialog module's default_timeout;
# in-dialog requests start it again): past it the edge forgets the call, which goes on, and
# could not end it for a dead worker. A day is longer than any call a contact center holds.
DIALOG_LIFETIME_S = 24 * 3600
# How long a Kamailio process waits for the service's SQLite write lock before a write fails.
DB_BUSY_TIMEOUT_MS = 2000
# Kamailio's URL parser takes what follows "sqlite:///" as the file name: an absolute path
# therefore gives four slashes. Three would leave a path relative to Kamailio's working
# directory ("/").
_SQLITE_PREFIX = "sqlite:///"
# Hosts and SIP domains go into the config verbatim: host names and IPv4 addresses only.
_CONFIG_NAME = re.compile(r"^[A-Za-z0-9.\-]+$")
# Characters that would end or break a quoted string in kamailio.cfg.
_CONFIG_STRING_UNSAFE = re.compile(r'["\\\s]')

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("pbx", "templates"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,
)


class KamailioError(Exception):
    """Kamailio's configuration is invalid or the process did not come up."""


class KamailioRpcError(EdgeUnavailable):
    """A JSON-RPC call failed: no answer, or an error answer (`code` is then Kamailio's)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def kamailio_db_url(database_url: str) -> str:
    """Translate the service's SQLAlchemy URL into the db_url Kamailio's modules understand."""
    try:
        url = make_url(database_url)
    except ArgumentError as exc:
        raise ValueError(f"not a database URL: {database_url!r}") from exc
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise ValueError("Kamailio needs an SQLite database file, not an in-memory one")
        kamailio_url = f"{_SQLITE_PREFIX}{Path(url.database).resolve()}"
    elif backend == "postgresql":
        if not url.host or not url.database:
            raise ValueError("Kamailio needs a PostgreSQL URL with a host and a database name")
        if url.username and (":" in url.username or "@" in url.username):
            raise ValueError("Kamailio cannot parse a PostgreSQL user name with ':' or '@'")
        credentials = ""
        if url.username:
            password = f":{url.password}" if url.password else ""
            credentials = f"{url.username}{password}@"
        port = f":{url.port}" if url.port else ""
        kamailio_url = f"postgres://{credentials}{url.host}{port}/{url.database}"
    else:
        raise ValueError(f"Kamailio supports SQLite and PostgreSQL, not {backend!r}")
    if _CONFIG_STRING_UNSAFE.search(kamailio_url):
        raise ValueError("the database URL must not contain quotes, backslashes or whitespace")
    return kamailio_url


# The dialog profile the edge files every call to or from a media worker in, by the worker's
# URI (kamailio.cfg.j2, route[FILE_UNDER_WORKER]).
WORKER_PROFILE = "worker"
# The dialog variable naming the worker the dispatcher sent (and counted) a call to; a call
# the worker placed itself has none.
_DISPATCHED_TO_VARIABLE = "worker"
# The dialog module's states: INVITE sent, ringing, answered (ACK awaited), answered and
# ACKed. A dialog in any other state is already ending.
_DIALOG_UNCONFIRMED, _DIALOG_EARLY, _DIALOG_ANSWERED, _DIALOG_CONFIRMED = 1, 2, 3, 4
# What the edge answers a caller whose worker died before answering it.
WORKER_LOST_ANSWER = (500, "Worker Lost")
# Where the edge's script (kamailio.cfg.j2, xhttp:request) ends a dead worker's INVITE still
# unanswered: answering its caller, or CANCELling the phone it rings.
ANSWER_CALLER_PATH = "/answer-caller"
CANCEL_RING_PATH = "/cancel-ring"
# Marks the edge's BYEs for a call the dispatcher counted on its worker (kamailio.cfg.j2,
# event_route[tm:local-request]); never sent on.
COUNTED_HEADER = "X-PBX-Counted"

# Dispatcher list flags: 0 takes calls, 4 is off ("admin disabled": nothing turns it on again
# but dispatcher.set_state).
_SLOT_ON, _SLOT_OFF = 0, 4


@dataclass(frozen=True)
class WorkerSlot:
    """One place a media worker can run, as the edge's dispatcher lists it."""

    uri: str
    duid: str  # the dispatcher's id for its call count
    max_calls: int  # maxload: callers the worker admits (its legs / 2)


def render_dispatcher_list(slots: list[WorkerSlot], ready: Collection[str] = ()) -> str:
    """Kamailio dispatcher set 1: every worker slot, on when its URI is in `ready`."""
    return "".join(
        f"1 {slot.uri} {_SLOT_ON if slot.uri in ready else _SLOT_OFF} 0"
        f" duid={slot.duid};maxload={slot.max_calls}\n"
        for slot in slots
    )


def worker_port_range(workers: WorkerSettings) -> tuple[int, int]:
    """The SIP ports any media worker may send from: first and last, inclusive."""
    return workers.first_sip_port, workers.first_sip_port + max_workers(workers) - 1


def worker_hosts(settings: Settings) -> list[str]:
    """Where media workers run: the media hosts when there are (pbx.media_link), else here."""
    return settings.cluster.media_host_addresses or [settings.workers.host]


def dispatcher_list_path(settings: Settings) -> Path:
    return settings.data_dir / "kamailio" / "dispatcher.list"


class EdgeWorkerSet:
    """The edge's dispatcher set of media workers, as the worker pool drives it."""

    def __init__(self, list_file: Path, rpc: KamailioRpc) -> None:
        self._list_file = list_file
        self._rpc = rpc

    async def install(self, slots: list[WorkerSlot], ready: Collection[str]) -> None:
        """List every slot (file, then one reload); KamailioRpcError if the edge refused."""
        staged = self._list_file.with_suffix(".new")
        staged.write_text(render_dispatcher_list(slots, ready))
        staged.replace(self._list_file)  # atomic: a reload never reads half a file
        await self._rpc.call("dispatcher.reload")

    async def set_ready(self, uri: str, ready: bool) -> None:
        """Turn one slot on or off; KamailioRpcError if the edge refused."""
        await self._rpc.call("dispatcher.set_state", "a" if ready else "d", 1, uri)

    async def end_calls(self, uri: str) -> int:
        """End the calls of the worker at this URI for their far ends (it died); how many."""
        return await self._rpc.end_worker_calls(uri)


def invite_timer_ms(settings: Settings) -> int:
    """tm's INVITE timers: the longest ring a queue (its ring_timeout's bound) or a call
    (calls.ring_timeout) may have, plus RING_TIMER_MARGIN_S, in milliseconds."""
    longest = max(MAX_RING_TIMEOUT_S, settings.calls.ring_timeout)
    return math.ceil((longest + RING_TIMER_MARGIN_S) * 1000)


def render_kamailio_config(settings: Settings, run_dir: Path, dispatcher_list: Path) -> str:
    """kamailio.cfg for these settings; ValueError if a setting cannot go into it safely."""
    sip = settings.sip
    for source in settings.trunk.sources:
        try:
            ipaddress.ip_address(source)
        except ValueError:
            raise ValueError(f"trunk.sources: {source!r} is not an IP address") from None
    for key, value in (("sip.host", sip.host), ("sip.domain", sip.domain)):
        if not _CONFIG_NAME.match(value):
            raise ValueError(f"{key} must be a host name or an IP address, not {value!r}")
    if sip.rpc_port == sip.port:
        raise ValueError("sip.rpc_port must differ from sip.port")
    if settings.trunk.registration and _is_wildcard(sip.host):
        raise ValueError(f"trunk.register needs a sip.host the provider can reach, not {sip.host}")
    if _CONFIG_STRING_UNSAFE.search(str(run_dir)):
        raise ValueError(f"the Kamailio run directory {run_dir} must not contain spaces or quotes")
    db_url = kamailio_db_url(settings.database_url)
    sqlite_path = db_url.removeprefix(_SQLITE_PREFIX) if db_url.startswith(_SQLITE_PREFIX) else None
    return _templates.get_template("kamailio.cfg.j2").render(
        sip_host=sip.host,
        sip_port=sip.port,
        rpc_port=sip.rpc_port,
        domain=sip.domain,
        realm=sip.domain,
        children=sip.children,
        max_auth_failures=sip.max_auth_failures,
        max_auth_accounts_per_address=sip.max_auth_accounts_per_address,
        max_auth_failures_per_address=sip.max_auth_failures_per_address,
        auth_ban_seconds=sip.auth_ban_seconds,
        max_requests_per_2s=sip.max_requests_per_2s,
        trunk_max_requests_per_s=settings.trunk.max_requests_per_s,
        drop_reasons=DROP_REASONS,
        drop_stat_prefix=DROP_STAT_PREFIX,
        drop_summary_s=DROP_SUMMARY_SECONDS,
        invite_timer_ms=invite_timer_ms(settings),
        dialog_early_timeout_s=math.ceil(invite_timer_ms(settings) / 1000),
        dialog_lifetime_s=DIALOG_LIFETIME_S,
        drop_summary_lines=DROP_SUMMARY_LINES,
        drop_summary_loud=DROP_SUMMARY_LOUD,
        db_busy_timeout_ms=DB_BUSY_TIMEOUT_MS,
        # A cluster's edges share the location table (DB-only); one node keeps it in memory.
        usrloc_db_mode=3 if settings.cluster.node else 1,
        db_module="db_sqlite" if sqlite_path else "db_postgres",
        db_url=db_url,
        sqlite_path=sqlite_path,
        run_dir=run_dir,
        dispatcher_list=dispatcher_list,
        worker_hosts=worker_hosts(settings),
        worker_ports=worker_port_range(settings.workers),
        trunk_sources=settings.trunk.sources,
        trunk_host=settings.trunk.provider_host,
        trunk_port=settings.trunk.provider_port,
        final_header=FINAL_HEADER,
        ring_header=RING_HEADER,
        answer_caller_path=ANSWER_CALLER_PATH,
        cancel_ring_path=CANCEL_RING_PATH,
        counted_header=COUNTED_HEADER,
        worker_lost_code=WORKER_LOST_ANSWER[0],
        worker_lost_reason=WORKER_LOST_ANSWER[1],
        registration_id=REGISTRATION_ID if settings.trunk.registration else None,
        registration_tick_s=renewal_tick_seconds(settings.trunk),
        registration_retry_s=RETRY_AFTER_FAILURE_S,
    )


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False  # a host name


class KamailioProcess:
    """The Kamailio edge as a child of the service, configured from its settings."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.config_path = settings.data_dir / "kamailio" / "kamailio.cfg"
        self.run_dir = settings.data_dir / "kamailio" / "run"
        self.dispatcher_list = dispatcher_list_path(settings)
        self._process: ChildProcess | None = None

    async def start(self) -> None:
        """Render and check the config, start Kamailio, return once its RPC answers."""
        sip = self._settings.sip
        self._require_sqlite_file()
        check_ports_free(
            "kamailio",
            [
                (sip.host, sip.port, socket.SOCK_DGRAM),
                (sip.host, sip.port, socket.SOCK_STREAM),
                ("127.0.0.1", sip.rpc_port, socket.SOCK_STREAM),
            ],
        )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # Empty: the worker pool publishes its workers once they are up.
        self.dispatcher_list.write_text(render_dispatcher_list([]))
        self.config_path.write_text(
            render_kamailio_config(self._settings, self.run_dir, self.dispatcher_list)
        )
        await self._check_config()
        # Kamailio reads the registration at the provider from the database as it starts.
        await store_registration(self._settings)
        process = ChildProcess(
            "kamailio",
            [
                sip.kamailio_binary,
                "-DD",  # stay in the foreground, as our child
                "-E",  # log to stderr, which ChildProcess forwards
                "-f", str(self.config_path),
                "-Y", str(self.run_dir),
                "-P", str(self.run_dir / "kamailio.pid"),
                "-m", str(SHARED_MEMORY_MB),
                "-M", str(PRIVATE_MEMORY_MB),
            ],
        )  # fmt: skip
        self._process = process
        await process.start()
        rpc = KamailioRpc("127.0.0.1", sip.rpc_port)
        try:
            await process.wait_ready(rpc.is_answering, READY_TIMEOUT_SECONDS)
        except BaseException:
            await process.stop()
            raise
        finally:
            await rpc.close()
        log.info("kamailio_ready", sip=f"{sip.host}:{sip.port}", rpc_port=sip.rpc_port)

    @property
    def pid(self) -> int | None:
        """Kamailio's main process (its workers share its process group), once started."""
        return self._process.pid if self._process is not None else None

    async def wait(self) -> int:
        """Return Kamailio's exit code once it exits (for a supervisor)."""
        if self._process is None:
            raise RuntimeError("kamailio was not started")
        return await self._process.wait()

    async def stop(self) -> None:
        if self._process is not None:
            if self._process.returncode is None:
                rpc = KamailioRpc("127.0.0.1", self._settings.sip.rpc_port)
                try:
                    await unregister(self._settings.trunk, rpc)
                finally:
                    await rpc.close()
            await self._process.stop()

    def _require_sqlite_file(self) -> None:
        # db_sqlite fails to open a missing read-only file in every child, and Kamailio then
        # stays up half-started instead of exiting.
        db_url = kamailio_db_url(self._settings.database_url)
        if db_url.startswith(_SQLITE_PREFIX):
            path = Path(db_url.removeprefix(_SQLITE_PREFIX))
            if not path.is_file():
                raise KamailioError(f"database {path} does not exist: run the migrations first")

    async def _check_config(self) -> None:
        checker = await asyncio.create_subprocess_exec(
            self._settings.sip.kamailio_binary,
            "-c",
            "-f",
            str(self.config_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await checker.communicate()
        if checker.returncode != 0:
            lines = output.decode(errors="replace").splitlines()
            problems = [line for line in lines if "ERROR" in line or "CRITICAL" in line]
            detail = "\n".join(problems or lines[-20:])
            raise KamailioError(f"{self.config_path} is not a valid Kamailio config:\n{detail}")


class KamailioRpc:
    """JSON-RPC over HTTP to Kamailio's jsonrpcs module (xhttp on the loopback RPC port)."""

    def __init__(self, host: str, port: int, *, timeout: float = 5.0) -> None:
        self._base_url = f"http://{host}:{port}"
        self.url = f"{self._base_url}/RPC"
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, method: str, *params: Any) -> Any:
        """The call's result; KamailioRpcError if Kamailio cannot be reached or answers an error."""
        request = {
            "jsonrpc": "2.0",
            "method": method,
            "params": list(params),
            "id": next(self._ids),
        }
        try:
            try:
                reply = await self._post(request)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                # Kamailio closed a kept connection (idle, or restarted). Every method this
                # client calls may run twice with the same outcome, so send it once more.
                reply = await self._post(request)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise KamailioRpcError(f"Kamailio RPC {method} failed: {exc!r}") from exc
        if not isinstance(reply, dict):
            raise KamailioRpcError(f"Kamailio RPC {method}: unexpected answer {reply!r}")
        error = reply.get("error")
        if isinstance(error, dict):
            raise KamailioRpcError(
                f"Kamailio RPC {method}: {error.get('message')}", code=error.get("code")
            )
        if error is not None:
            raise KamailioRpcError(f"Kamailio RPC {method}: {error!r}")
        return reply.get("result")

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            # Created on first use: a ClientSession belongs to the running event loop. Its
            # connections are kept: a call to a phone asks first whether it is registered, and
            # a new TCP connection each time cost that path a millisecond.
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def _post(self, request: Mapping[str, Any]) -> Any:
        async with self._client().post(self.url, json=request) as response:
            return await response.json(content_type=None)

    async def is_answering(self) -> bool:
        try:
            await self.call("core.version")
        except KamailioRpcError:
            return False
        return True

    async def registered_contacts(self, username: str) -> list[str]:
        """Contact URIs registered for an extension (usrloc keys AORs by username alone)."""
        try:
            result = await self.call("ul.lookup", LOCATION_TABLE, username)
        except KamailioRpcError as exc:
            # usrloc answers an unknown AOR with code 500 "AOR not found in location table".
            if "not found" in str(exc):
                return []
            raise
        return [entry["Contact"]["Address"] for entry in result["Contacts"]]

    async def uac_registration(self, l_uuid: str) -> Mapping[str, Any] | None:
        """Kamailio's record of a registration at a provider; None if it holds none by that id."""
        try:
            record: Mapping[str, Any] = await self.call("uac.reg_info", "l_uuid", l_uuid)
        except KamailioRpcError as exc:
            if exc.code == 404:  # "Record not found"
                return None
            raise
        return record

    async def uac_unregister(self, l_uuid: str) -> None:
        """Send a REGISTER with expires 0 for a registration at a provider."""
        await self.call("uac.reg_unregister", "l_uuid", l_uuid)

    async def dropped_requests(self) -> dict[str, int]:
        """Requests the edge's guard dropped since Kamailio started, by reason (DROP_REASONS)."""
        result = await self.call("stats.fetch", "script:")
        if not isinstance(result, dict):
            raise KamailioRpcError(f"Kamailio RPC stats.fetch: unexpected answer {result!r}")
        # {"script.edge_dropped_banned": "3", ...}: values are strings, to hold large numbers.
        return {
            reason: int(result.get(f"script.{DROP_STAT_PREFIX}{reason}", 0))
            for reason in DROP_REASONS
        }

    async def end_worker_calls(self, worker_uri: str) -> int:
        """End, for the far ends, every call the edge holds to or from this worker (it died):
        BYE both ways once answered; before that, its caller gets WORKER_LOST_ANSWER, or the
        phones it rings a CANCEL. Returns how many calls were ended."""
        listed = await self.call("dlg.profile_list", WORKER_PROFILE, worker_uri)
        # jsonrpcs answers a single dialog as itself, several as a list, none as nothing.
        dialogs: list[Mapping[str, Any]] = (
            listed if isinstance(listed, list) else [listed] if listed else []
        )
        ended = 0
        for dialog in dialogs:
            call_id = dialog["call-id"]
            variables = dialog.get("variables", [])
            to_worker = any(_DISPATCHED_TO_VARIABLE in each for each in variables)
            try:
                if dialog["state"] in (_DIALOG_ANSWERED, _DIALOG_CONFIRMED):
                    marks = [f"{COUNTED_HEADER}: 1\r\n"] if to_worker else []
                    await self.call("dlg.end_dlg", dialog["h_entry"], dialog["h_id"], *marks)
                elif dialog["state"] in (_DIALOG_UNCONFIRMED, _DIALOG_EARLY):
                    # dlg.end_dlg refuses dialogs not yet answered (Kamailio 5.6); their INVITE
                    # transaction is still there to be answered or CANCELled.
                    await self._edge_script(
                        ANSWER_CALLER_PATH if to_worker else CANCEL_RING_PATH,
                        f"{dialog['caller']['cseq']},{call_id}",
                    )
                else:
                    continue
            except KamailioRpcError as exc:
                if exc.code is None:
                    raise  # no answer from the edge: the other calls would fare no better
                if exc.code != 404:  # 404: it ended by itself since it was listed
                    log.warning("worker_call_not_ended", sip_call_id=call_id, error=str(exc))
                continue
            ended += 1
        return ended

    async def _edge_script(self, path: str, body: str) -> None:
        """POST to one of the edge script's own paths; KamailioRpcError unless it answers 200
        (`code` is then its HTTP status)."""
        try:
            async with self._client().post(f"{self._base_url}{path}", data=body) as response:
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KamailioRpcError(f"Kamailio {path} failed: {exc!r}") from exc
        if status != 200:
            raise KamailioRpcError(f"Kamailio {path}: HTTP {status}", code=status)

    async def drop_registrations(self, username: str) -> None:
        """Forget every binding of an extension; an extension with none is fine."""
        await self.call("ul.rm", LOCATION_TABLE, username)
