"""The one settings object: config.toml, then PBX_* environment overrides, validated once."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

ENV_PREFIX = "PBX_"
# PBX_API__PORT=8081 overrides [api] port; the double underscore separates section and key.
ENV_SECTION_SEPARATOR = "__"
# Variables that are not config keys (they select the file or carry a secret).
ENV_NOT_KEYS = frozenset({"PBX_CONFIG", "PBX_ADMIN_TOKEN"})
# A trunk URI: sip:[user@]host[:port][;params]; a registration is for the host's domain.
_TRUNK_URI = re.compile(
    r"^sip:(?:[^@\s;]+@)?(?P<host>[A-Za-z0-9.\-]+)(?::(?P<port>\d{1,5}))?(?:;\S*)?$"
)
# A SIP URI without a port means this one (RFC 3261 19.1.2, UDP and TCP).
DEFAULT_SIP_PORT = 5060
# The longest a phone may ring, in seconds: the bound of calls.ring_timeout and of a queue's
# ring_timeout. The edge's INVITE timers are rendered from it (pbx.kamailio.invite_timer_ms),
# so the worker that dialled always ends a ring, never Kamailio.
MAX_RING_TIMEOUT_S = 600


# Nodes a cluster may have (ClusterSettings.node_index): ids stay 32-bit for years at this.
MAX_NODES = 8
MIN_CLUSTER_SECRET = 16


class SettingsError(Exception):
    """config.toml or an override is invalid; the message says which key and why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSettings(_Section):
    # Relative paths are resolved against the folder config.toml sits in.
    dir: Path = Path("data")


class DatabaseSettings(_Section):
    # Empty: an SQLite file <data.dir>/pbx.sqlite3. PostgreSQL: postgresql+asyncpg://user:pw@host/db
    url: str = ""


class RedisSettings(_Section):
    # managed: the service starts its own redis-server on host:port, its files in <data.dir>/redis.
    managed: bool = True
    host: str = "127.0.0.1"
    port: int = Field(6380, ge=1, le=65535)
    # Used instead of host/port when set (an external Redis); managed must then be false.
    url: str = ""


class SipSettings(_Section):
    # The Kamailio edge: where phones register and trunks send.
    host: str = "127.0.0.1"
    port: int = Field(5060, ge=1, le=65535)
    # SIP domain and digest realm of every phone account.
    domain: str = "127.0.0.1"
    # Kamailio's JSON-RPC over HTTP (loopback only): the service uses it to drop registrations.
    rpc_port: int = Field(5071, ge=1, le=65535)
    # Brute-force guard, each count over auth_ban_seconds from its first failure. An account
    # with max_auth_failures wrong digest answers from one address is refused (403) from that
    # address for auth_ban_seconds; its neighbours behind the same address are not. The address
    # itself is ignored for auth_ban_seconds only when max_auth_accounts_per_address accounts
    # failed there (names being tried) or max_auth_failures_per_address answers failed there
    # in all; trunk.sources never are.
    max_auth_failures: int = Field(10, ge=1)
    max_auth_accounts_per_address: int = Field(10, ge=2)
    max_auth_failures_per_address: int = Field(100, ge=2)
    auth_ban_seconds: int = Field(300, ge=1)
    # Flood guard (pike): more than this many requests from one address in 2 s are dropped.
    # Not for trunk.sources: they have trunk.max_requests_per_s.
    max_requests_per_2s: int = Field(200, ge=1)
    kamailio_binary: str = "/usr/sbin/kamailio"
    # Kamailio worker processes per listening socket.
    children: int = Field(2, ge=1, le=64)

    @model_validator(mode="after")
    def _one_account_cannot_ban_its_address(self) -> SipSettings:
        if self.max_auth_failures_per_address <= self.max_auth_failures:
            raise ValueError(
                "max_auth_failures_per_address must exceed max_auth_failures: otherwise one"
                " phone with an old password bans every phone behind its address"
            )
        return self


class WorkerSettings(_Section):
    # Media worker processes (one PJSUA2 endpoint each, 4 legs with the pinned wheel). A caller
    # takes two legs of one worker: its own and the one its agent will be dialled on. The pool
    # forks workers as calls come and keeps this many free legs ahead of the load.
    spare_legs: int = Field(40, ge=2, le=10_000)
    # At most this many workers; 0: as many as the machine holds (pbx.capacity).
    max_workers: int = Field(0, ge=0, le=5_000)
    # A worker idle this long is retired, if the others keep spare_legs free without it.
    idle_retire_after: float = Field(60.0, gt=0, le=86_400)
    host: str = "127.0.0.1"
    # Worker i listens for SIP on first_sip_port + i and sends RTP from
    # first_rtp_port + i * rtp_ports_per_worker.
    first_sip_port: int = Field(5080, ge=1, le=65535)
    first_rtp_port: int = Field(20000, ge=1, le=65535)
    rtp_ports_per_worker: int = Field(40, ge=8, le=1000)
    # A call leg from which no RTP has arrived for this long (a phone that lost power, a
    # provider that dropped the call without a BYE) is hung up; on hold does not count. 0: never.
    media_timeout: int = Field(60, ge=0, le=3600)
    # While nobody hears a leg (greeting, menu, queue: no agent, no recording), the kernel
    # drops its speech packets before they wake the worker; digits still pass
    # (pbx.unheard_speech). Off: every packet is read, as before.
    drop_unheard_speech: bool = True


class CallSettings(_Section):
    # Greeting digits: wait this long after a digit for the next one.
    inter_digit_timeout: float = Field(3.0, gt=0, le=30)
    # After the greeting ends with nothing dialled, wait this long before the default route.
    wait_after_greeting: float = Field(4.0, ge=0, le=60)
    # Unknown extension: the caller may try again this many times before the default route.
    unknown_extension_retries: int = Field(2, ge=0, le=10)
    # A ringing phone that does not answer within this goes to the no-answer route.
    ring_timeout: float = Field(30.0, gt=0, le=MAX_RING_TIMEOUT_S)


class VoicemailSettings(_Section):
    # A message ends after this many seconds of silence from the caller (0: only '#', the
    # box's maximum length or hanging up end it).
    silence_seconds: float = Field(5.0, ge=0, le=60)
    # Shorter recordings (a caller hanging up at the beep) are not kept.
    min_seconds: float = Field(1.0, ge=0, le=60)


class TrunkSettings(_Section):
    # Unauthenticated INVITEs are accepted only from these addresses (the SIP provider).
    sources: list[str] = ["127.0.0.1"]
    # Flood guard for the sources: new requests (INVITE, OPTIONS; not ACK, BYE or other
    # in-dialog requests, not retransmissions) per second from each, beyond which the edge
    # answers 503. Not sip.max_requests_per_2s: a provider carries a whole node's calls, and
    # at 50 calls/s the phones' limit dropped its INVITEs, ACKs and BYEs. 400 passes the
    # stretch target of 100 calls/s even counted as INVITE + ACK + BYE with a third more
    # for retransmissions; only the 100 INVITEs/s are counted.
    max_requests_per_s: int = Field(400, ge=1)
    # Where outbound calls go, e.g. "sip:provider.example.com:5060"; empty: no outbound calls.
    uri: str = ""
    username: str = ""
    password: str = ""
    # Register the edge at `uri` with username/password and keep renewing it (key `register`:
    # that name would shadow pydantic's own `register`).
    registration: bool = Field(False, alias="register")
    # Seconds each registration asks to last; the provider may grant less.
    register_expires: int = Field(600, ge=60, le=86400)

    @field_validator("uri")
    @classmethod
    def _uri_is_a_sip_uri(cls, value: str) -> str:
        if value and not _TRUNK_URI.match(value):
            raise ValueError(f"expected sip:host[:port], not {value!r}")
        return value

    @model_validator(mode="after")
    def _registration_has_an_account(self) -> TrunkSettings:
        if self.registration and not (self.uri and self.username and self.password):
            raise ValueError("register = true needs uri, username and password")
        return self

    @property
    def provider_host(self) -> str:
        """The host of `uri` (the domain a registration is for); empty without a uri."""
        found = _TRUNK_URI.match(self.uri)
        return found["host"] if found else ""

    @property
    def provider_port(self) -> int:
        """The port of `uri` (DEFAULT_SIP_PORT if it names none); 0 without a uri."""
        found = _TRUNK_URI.match(self.uri)
        if not found:
            return 0
        return int(found["port"]) if found["port"] else DEFAULT_SIP_PORT


class AcdSettings(_Section):
    # Reasons an agent may give for not_ready ("missed calls" is set by the system).
    not_ready_reasons: list[str] = Field(
        ["break", "lunch", "meeting", "training", "other"], min_length=1
    )
    # Wrap-up an agent enters by hand (a queue's own wrap_up_time applies after its calls).
    wrap_up_time: int = Field(30, ge=0, le=3600)
    # Offers an agent lets ring out in a row before the system sets not_ready "missed calls".
    max_missed_offers: int = Field(3, ge=1, le=100)
    # Answered within this many seconds of entering the queue counts for the service level.
    service_level_seconds: int = Field(20, ge=1, le=3600)


class FeatureCodeSettings(_Section):
    # Dialled on a desk phone; the service answers with a short confirmation and hangs up.
    ready: str = Field("*50", pattern=r"^\*[0-9]{1,4}$")
    not_ready: str = Field("*51", pattern=r"^\*[0-9]{1,4}$")  # with the first reason listed
    end_wrap_up: str = Field("*52", pattern=r"^\*[0-9]{1,4}$")
    logged_out: str = Field("*53", pattern=r"^\*[0-9]{1,4}$")

    # Pressed by the phone's user during a call (Asterisk's blindxfer and atxfer): then the
    # target's number and '#'. Attended: the caller waits on hold while the user talks to the
    # target; hanging up hands the caller over.
    blind_transfer: str = Field("#1", pattern=r"^[*#][0-9*#]{1,3}$")
    attended_transfer: str = Field("*2", pattern=r"^[*#][0-9*#]{1,3}$")
    # Dialled with an agent's extension after it (*331001) by a supervisor or admin: their
    # phone hears the agent's live call (keys 5 whisper, 6 barge, 4 listen again).
    supervise: str = Field("*33", pattern=r"^\*[0-9]{1,4}$")

    @model_validator(mode="after")
    def _in_call_codes_distinct(self) -> FeatureCodeSettings:
        blind, attended = self.blind_transfer, self.attended_transfer
        if blind.startswith(attended) or attended.startswith(blind):
            raise ValueError("blind_transfer and attended_transfer must not begin alike")
        if any(code.startswith(self.supervise) for code in self.by_code()):
            raise ValueError("no presence code may begin with the supervise code")
        return self

    def by_code(self) -> dict[str, str]:
        return {
            self.ready: "ready",
            self.not_ready: "not_ready",
            self.end_wrap_up: "end_wrap_up",
            self.logged_out: "logged_out",
        }


class PromptSettings(_Section):
    # The espeak-ng voice every spoken prompt uses (`espeak-ng --voices` lists them), e.g.
    # "en", "de", "en-us". Changing it speaks every text anew (the cache is per voice).
    voice: str = Field("en", pattern=r"^[A-Za-z0-9_+-]{1,40}$")


class ChatSettings(_Section):
    # An agent on a call (ACD or direct) keeps receiving chat dialogs.
    chats_while_on_call: bool = True
    # An agent holding this many counted open dialogs gets no call offers (0: chats never block).
    block_calls_at: int = Field(0, ge=0, le=1000)
    # A reply the channel's URL refused is retried after this many seconds, doubling each
    # time up to delivery_retry_max_seconds, until it is delivered.
    delivery_retry_seconds: float = Field(5.0, gt=0, le=3600)
    delivery_retry_max_seconds: float = Field(600.0, gt=0, le=86400)
    # Seconds one delivery attempt may take.
    delivery_timeout_seconds: float = Field(10.0, gt=0, le=300)


class RetentionSettings(_Section):
    # Days each kind of history is kept; 0 keeps it for ever. Applied once a day (and a
    # minute after start) by the controller, in small batches.
    events_days: int = Field(90, ge=0, le=36500)
    queue_log_days: int = Field(400, ge=0, le=36500)
    presence_history_days: int = Field(90, ge=0, le=36500)
    # Call records (ended calls only).
    calls_days: int = Field(400, ge=0, le=36500)
    # Voicemail messages, the recordings with their rows: the callers' words are the box
    # owner's to delete, so kept until then by default.
    voicemail_days: int = Field(0, ge=0, le=36500)
    # Call recordings (the files; the call record keeps that there was one until calls_days).
    # A call record deleted earlier takes its recording with it.
    recordings_days: int = Field(90, ge=0, le=36500)


class RecordingSettings(_Section):
    # Spoken to the external party before a recorded call is connected (espeak-ng, in
    # prompts.voice); empty: no announcement.
    announcement: str = Field("", max_length=500)

    @field_validator("announcement")
    @classmethod
    def _stripped(cls, value: str) -> str:
        return value.strip()


class SignInSettings(_Section):
    """People signing in to the web console with email and password (extensions.sign_in)."""

    # Shorter passwords are refused (422 weak_password); longer than 1,024 characters too.
    min_password_length: int = Field(12, ge=8, le=1024)
    # A session not used for this long has ended (12 h: a working day and a bit).
    session_idle_seconds: int = Field(43_200, ge=60, le=30 * 86_400)
    # The cookie's Secure flag: set it when the console is served over HTTPS (`make run`
    # serves plain HTTP on loopback, where a Secure cookie would never be sent back).
    secure_cookie: bool = False
    # Failed sign-ins with one email within lock_seconds of the first: at this many the email
    # is locked for lock_seconds (429 locked). From one client address in all: at
    # max_failures_per_address the address is locked (it must exceed max_failures, or one
    # person's typos behind a shared address would lock everyone there).
    max_failures: int = Field(5, ge=1, le=1000)
    max_failures_per_address: int = Field(50, ge=2, le=100_000)
    lock_seconds: int = Field(900, ge=1, le=86_400)
    # Each failed answer waits failure_delay_seconds times the email's failures so far, at
    # most max_failure_delay_seconds: slows a guesser, hardly a person.
    failure_delay_seconds: float = Field(0.5, ge=0, le=10)
    max_failure_delay_seconds: float = Field(3.0, ge=0, le=60)

    @model_validator(mode="after")
    def _one_email_cannot_lock_its_address(self) -> SignInSettings:
        if self.max_failures_per_address <= self.max_failures:
            raise ValueError("max_failures_per_address must exceed max_failures")
        return self


class ClusterSettings(_Section):
    """Controllers sharing one PostgreSQL and one Redis (controller.seat): one is active at a
    time, the others stand by and take over when its lease runs out."""

    # This node's name; empty: a single node, always active, as `make run` runs it.
    node: str = Field("", max_length=64, pattern=r"^[A-Za-z0-9._-]*$")
    # Distinct per node: the ids a node hands out for rows written behind the call are those
    # of its residue modulo MAX_NODES, so nodes never hand out the same id.
    node_index: int = Field(0, ge=0, lt=MAX_NODES)
    # How long the active controller's lease lasts unless renewed (it renews every third of
    # it): a standby takes over within about this long once the active is gone.
    lease_seconds: float = Field(3.0, ge=1.0, le=30.0)
    # Where the other nodes reach this node's API (a standby passes requests on to the
    # active node); empty: http://<api.host>:<api.port>.
    api_url: str = Field("", pattern=r"^(https?://[^\s/]+)?$")
    # Shared by the nodes: a request another node passed on carries it, and only then is the
    # client address it names trusted (the sign-in guard counts per client address).
    secret: str = Field("", max_length=200)

    # Media hosts (`pbx media`), as ADDRESS:PORT of their link: the node's workers run there,
    # none on the node itself. Their workers listen on ADDRESS with this node's [workers]
    # ports, which the edge takes calls from.
    media_hosts: list[str] = Field([], max_length=64)
    # Every node's edge (its [sip] host and port), this one's included: with media hosts,
    # each edge takes calls for the active node's workers (controller.shared_edge), and the
    # workers take calls from each of them.
    edges: list[str] = Field([], max_length=MAX_NODES)

    @field_validator("media_hosts", "edges")
    @classmethod
    def _are_addresses(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            address, _, port = host.rpartition(":")
            try:
                ipaddress.IPv4Address(address)
                if not 0 < int(port) < 65536:
                    raise ValueError(port)
            except ValueError:
                raise ValueError(f"{host!r} is not IPV4-ADDRESS:PORT") from None
        return hosts

    @field_validator("media_hosts")
    @classmethod
    def _media_hosts_apart(cls, hosts: list[str]) -> list[str]:
        if len({host.rpartition(":")[0] for host in hosts}) != len(hosts):
            raise ValueError("two media hosts share an address")
        return hosts

    @model_validator(mode="after")
    def _a_node_has_the_secret(self) -> ClusterSettings:
        if (self.node or self.media_hosts) and len(self.secret) < MIN_CLUSTER_SECRET:
            raise ValueError(f"a cluster node needs secret (at least {MIN_CLUSTER_SECRET} "
                             "characters, the same on every node)")  # fmt: skip
        return self

    @property
    def media_host_addresses(self) -> list[str]:
        return [host.rpartition(":")[0] for host in self.media_hosts]


class MediaSettings(_Section):
    """`pbx media`: this machine as a media host. Its workers listen on [workers] host, with
    [workers] ports (the same as the nodes'); the controller's link reaches it there too."""

    # How the cluster names this host; empty: its address.
    name: str = Field("", max_length=64, pattern=r"^[A-Za-z0-9._-]*$")
    port: int = Field(7070, ge=1, le=65535)
    # Its Prometheus /metrics (pbx.media_metrics), unauthenticated: loopback unless the
    # network is private; port 0: none.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(7071, ge=0, le=65535)


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["console", "json"] = "console"


class Settings(_Section):
    data: DataSettings = DataSettings()
    database: DatabaseSettings = DatabaseSettings()
    redis: RedisSettings = RedisSettings()
    sip: SipSettings = SipSettings()
    api: ApiSettings = ApiSettings()
    log: LogSettings = LogSettings()
    workers: WorkerSettings = WorkerSettings()
    calls: CallSettings = CallSettings()
    voicemail: VoicemailSettings = VoicemailSettings()
    recording: RecordingSettings = RecordingSettings()
    trunk: TrunkSettings = TrunkSettings()
    acd: AcdSettings = AcdSettings()
    prompts: PromptSettings = PromptSettings()
    feature_codes: FeatureCodeSettings = FeatureCodeSettings()
    chat: ChatSettings = ChatSettings()
    retention: RetentionSettings = RetentionSettings()
    sign_in: SignInSettings = SignInSettings()
    cluster: ClusterSettings = ClusterSettings()
    media: MediaSettings = MediaSettings()
    # Not a config key: taken from PBX_ADMIN_TOKEN only, so it never sits in a file.
    admin_token: str | None = None

    @model_validator(mode="after")
    def _a_clusters_nodes_share_their_stores(self) -> Settings:
        """Each node starting its own Redis, or keeping its own SQLite file, would be a
        cluster of one, active beside the others."""
        if self.cluster.node and (self.redis.managed or not self.database.url):
            raise ValueError("cluster.node needs a Redis and a database the nodes share: "
                             "redis.managed = false and database.url set")  # fmt: skip
        if self.cluster.edges and self.own_edge not in self.cluster.edges:
            raise ValueError(f"cluster.edges must list this node's edge ({self.own_edge}, "
                             "sip.host:sip.port)")  # fmt: skip
        return self

    @field_validator("admin_token")
    @classmethod
    def _admin_token_long_enough(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 16:
            raise ValueError("PBX_ADMIN_TOKEN must be at least 16 characters")
        return value

    @property
    def data_dir(self) -> Path:
        return self.data.dir

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite+aiosqlite:///{self.data.dir / 'pbx.sqlite3'}"

    @property
    def redis_url(self) -> str:
        return self.redis.url or f"redis://{self.redis.host}:{self.redis.port}/0"

    @property
    def own_edge(self) -> str:
        return f"{self.sip.host}:{self.sip.port}"

    @property
    def edges(self) -> list[str]:
        """The edges media workers take calls from: this node's first, then the cluster's."""
        return list(dict.fromkeys([self.own_edge, *self.cluster.edges]))


def _json_list(name: str, value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{name}: not a JSON list: {exc}") from exc


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read config.toml (or PBX_CONFIG, or `path`), apply PBX_SECTION__KEY overrides, validate."""
    env = os.environ if environ is None else environ
    config_path = path or Path(env.get("PBX_CONFIG", "config.toml"))
    raw: dict[str, Any] = {}
    if config_path.exists():
        try:
            raw = tomllib.loads(config_path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{config_path}: {exc}") from exc
    elif path is not None or "PBX_CONFIG" in env:
        raise SettingsError(f"{config_path}: no such file")
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name in ENV_NOT_KEYS:
            continue
        section, sep, key = name[len(ENV_PREFIX) :].lower().partition(ENV_SECTION_SEPARATOR)
        if not sep or not key:
            raise SettingsError(f"{name}: expected PBX_<SECTION>__<KEY>, e.g. PBX_API__PORT")
        if not isinstance(raw.setdefault(section, {}), dict):
            raise SettingsError(f"{name}: [{section}] is not a section")
        # Lists are given as JSON: PBX_TRUNK__SOURCES='["192.0.2.10", "192.0.2.11"]'.
        raw[section][key] = _json_list(name, value) if value.startswith("[") else value
    if "PBX_ADMIN_TOKEN" in env:
        raw["admin_token"] = env["PBX_ADMIN_TOKEN"]
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise SettingsError(f"{config_path}: {problems}") from exc
    if settings.redis.url and settings.redis.managed:
        raise SettingsError(f"{config_path}: redis.url is set, so redis.managed must be false")
    base = config_path.resolve().parent
    if not settings.data.dir.is_absolute():
        settings = settings.model_copy(
            update={"data": DataSettings(dir=(base / settings.data.dir).resolve())}
        )
    return settings
