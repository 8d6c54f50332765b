"""A throwaway PostgreSQL server for the suite: `PBX_TEST_DATABASE=postgresql` runs every
service a test starts on a database of its own in one server that the tests start (initdb into
a temporary folder, a free loopback port, fast and unsafe settings) and stop at the end."""

from __future__ import annotations

import ctypes
import itertools
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.ports import free_port

DATABASE_ENV = "PBX_TEST_DATABASE"
BACKENDS = ("sqlite", "postgresql")
# Debian 12's PostgreSQL (package `postgresql`); PBX_TEST_PG_BIN names another bin folder.
PG_BIN = Path(os.environ.get("PBX_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
# PostgreSQL refuses to run as root; as root we run it as this user, who owns its folder.
PG_OS_USER = "postgres"
SUPERUSER = "postgres"
SERVICE_USER = "pbx"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
# Durability is worth nothing in a folder deleted at the end; these make commits and
# CREATE DATABASE cheap (a benchmark asks for a durable server instead).
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
SERVER_SETTINGS = {"max_connections": "300", "shared_buffers": "64MB"}

_PR_SET_PDEATHSIG = 1
# Looked up here, not between fork and exec (see core/child_process.py).
_prctl = ctypes.CDLL(None, use_errno=True).prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int


def selected_backend() -> str:
    """The database the suite runs on: PBX_TEST_DATABASE, `sqlite` when unset."""
    backend = os.environ.get(DATABASE_ENV, "sqlite") or "sqlite"
    if backend not in BACKENDS:
        raise ValueError(f"{DATABASE_ENV}={backend!r}: expected one of {', '.join(BACKENDS)}")
    return backend


def _stop_with_parent() -> None:
    # In the child after the switch to the postgres user (a change of user clears the
    # setting, so it is made afterwards): a killed test run takes its server with it. SIGTERM
    # is a smart shutdown, which ends once the dead run's connections are gone.
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class PostgresServer:
    """initdb into a temporary folder, `postgres` on a free 127.0.0.1 port with its unix
    socket in that folder; `new_database()` gives each service its own database."""

    def __init__(self, *, durable: bool = False) -> None:
        self.port = free_port()
        self._durable = durable
        self.password = secrets.token_hex(16)
        self._folder = Path(tempfile.mkdtemp(prefix="pbx-postgres-"))
        self._data = self._folder / "data"
        self._process: subprocess.Popen[bytes] | None = None
        self._numbers = itertools.count(1)
        self._as_root = os.geteuid() == 0

    @property
    def socket_dir(self) -> Path:
        return self._folder

    def start(self) -> None:
        if not (PG_BIN / "postgres").exists():
            raise RuntimeError(
                f"{PG_BIN}/postgres not found: install Debian's `postgresql` (scripts/setup.sh)"
            )
        if self._as_root:
            shutil.chown(self._folder, PG_OS_USER, PG_OS_USER)
        password_file = self._folder / "password"
        password_file.write_text(self.password + "\n")
        if self._as_root:
            shutil.chown(password_file, PG_OS_USER, PG_OS_USER)
        self._run(
            PG_BIN / "initdb", "--pgdata", str(self._data), "--username", SUPERUSER,
            "--pwfile", str(password_file), "--encoding", "UTF8", "--locale", "C",
            # The socket (in our folder) is trusted; TCP, which the service and Kamailio use,
            # asks for the password.
            "--auth-local", "trust", "--auth-host", "scram-sha-256", "--no-sync",
        )  # fmt: skip
        password_file.unlink()
        settings = SERVER_SETTINGS if self._durable else {**SERVER_SETTINGS, **FAST_SETTINGS}
        options = [f"--{key}={value}" for key, value in settings.items()]
        log = (self._folder / "postgres.log").open("wb")
        self._process = subprocess.Popen(
            [
                str(PG_BIN / "postgres"), "-D", str(self._data), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self._folder}",
                *options,
            ],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=self._folder, start_new_session=True, preexec_fn=_stop_with_parent,
            **self._user(),
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._ready():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"PostgreSQL did not start:\n{self._log_tail()}")
            time.sleep(0.05)
        self._psql(f"CREATE ROLE {SERVICE_USER} LOGIN PASSWORD '{self.password}'")

    def new_database(self) -> str:
        """A new empty database owned by the service's user: its SQLAlchemy URL."""
        name = f"pbx_{next(self._numbers)}"
        self._psql(f"CREATE DATABASE {name} OWNER {SERVICE_USER}")
        return f"postgresql+asyncpg://{SERVICE_USER}:{self.password}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        """Stops the server (fast shutdown: open sessions are ended) and deletes its folder."""
        try:
            if self._process is not None and self._process.poll() is None:
                self._process.send_signal(signal.SIGINT)
                try:
                    self._process.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    os.killpg(self._process.pid, signal.SIGKILL)
                    self._process.wait()
        finally:
            shutil.rmtree(self._folder, ignore_errors=True)

    def _user(self) -> dict[str, Any]:
        if not self._as_root:
            return {}
        return {"user": PG_OS_USER, "group": PG_OS_USER, "extra_groups": []}

    def _run(self, *command: str | Path) -> None:
        done = subprocess.run(
            [str(part) for part in command], cwd=self._folder, capture_output=True,
            check=False, **self._user(),
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(
                f"{Path(command[0]).name} failed ({done.returncode}):\n"
                f"{(done.stdout + done.stderr).decode(errors='replace')}"
            )

    def _ready(self) -> bool:
        check = subprocess.run(
            [str(PG_BIN / "pg_isready"), "-q", "-h", str(self._folder), "-p", str(self.port)],
            check=False,
        )
        return check.returncode == 0

    def _psql(self, statement: str) -> None:
        self._run(
            PG_BIN / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self._folder),
            "-p", str(self.port), "-U", SUPERUSER, "-d", "postgres", "-c", statement,
        )  # fmt: skip

    def _log_tail(self) -> str:
        path = self._folder / "postgres.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-20:])


_server: PostgresServer | None = None


def new_test_database_url() -> str | None:
    """A fresh database for one service when the suite runs on PostgreSQL (the server starts
    on first use); None on SQLite, where each service has its file in its data folder."""
    global _server
    if selected_backend() != "postgresql":
        return None
    if _server is None:
        server = PostgresServer()
        server.start()
        _server = server
    return _server.new_database()


def stop_test_server() -> None:
    global _server
    if _server is not None:
        server, _server = _server, None
        server.stop()
