"""A PostgreSQL server the service starts itself (Debian's `postgresql` binaries): its cluster
in a folder of ours (initdb on first use, kept after), listening on 127.0.0.1 and on a unix
socket in that folder. `pbx cluster` runs its database on one; the test suite runs one
throwaway server (tests.support.postgres). Blocking calls: run them in a thread."""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

# Debian 12's PostgreSQL; PBX_PG_BIN names another bin folder.
PG_BIN = Path(os.environ.get("PBX_PG_BIN", "/usr/lib/postgresql/15/bin"))
# PostgreSQL refuses to run as root; as root we run it as this user, who owns its folder.
PG_OS_USER = "postgres"
SUPERUSER = "postgres"
SERVICE_USER = "pbx"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
# Durability is worth nothing in a folder deleted at the end; these make commits and
# CREATE DATABASE cheap (`durable=False`).
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
SERVER_SETTINGS = {"max_connections": "300", "shared_buffers": "64MB"}
# The service user's password, made at initdb and kept (0600) for later starts.
PASSWORD_FILE = "service-password"

_PR_SET_PDEATHSIG = 1
# Looked up here, not between fork and exec (see core/child_process.py).
_prctl = ctypes.CDLL(None, use_errno=True).prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int


def _stop_with_parent() -> None:
    # In the child after the switch to the postgres user (a change of user clears the
    # setting, so it is made afterwards): a killed parent takes its server with it. SIGTERM is
    # a smart shutdown, which ends once the dead parent's connections are gone.
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class PostgresServer:
    """`postgres` for the cluster in `folder` (created with initdb unless it exists) on
    127.0.0.1:`port`; `database()` gives a database owned by the service's user."""

    def __init__(self, folder: Path, port: int, *, durable: bool = True) -> None:
        self.port = port
        self._durable = durable
        self._folder = folder
        self._data = folder / "data"
        self._process: subprocess.Popen[bytes] | None = None
        self._as_root = os.geteuid() == 0
        self.password = ""

    @property
    def socket_dir(self) -> Path:
        return self._folder

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        if not (PG_BIN / "postgres").exists():
            raise RuntimeError(
                f"{PG_BIN}/postgres not found: install Debian's `postgresql` (scripts/setup.sh)"
            )
        self._folder.mkdir(parents=True, exist_ok=True)
        if self._as_root:
            shutil.chown(self._folder, PG_OS_USER, PG_OS_USER)
        fresh = not self._data.exists()
        if fresh:
            self._initdb()
        self.password = (self._folder / PASSWORD_FILE).read_text().strip()
        settings = SERVER_SETTINGS if self._durable else {**SERVER_SETTINGS, **FAST_SETTINGS}
        options = [f"--{key}={value}" for key, value in settings.items()]
        log = (self._folder / "postgres.log").open("ab")
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
        if fresh:
            self._psql(f"CREATE ROLE {SERVICE_USER} LOGIN PASSWORD '{self.password}'")

    def database(self, name: str) -> str:
        """The database `name` owned by the service's user, created if it is not there yet:
        its SQLAlchemy URL."""
        if not self._psql_value(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"):
            self._psql(f"CREATE DATABASE {name} OWNER {SERVICE_USER}")
        return f"postgresql+asyncpg://{SERVICE_USER}:{self.password}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        """Stops the server (fast shutdown: open sessions are ended)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()

    def _initdb(self) -> None:
        password_file = self._folder / PASSWORD_FILE
        password_file.touch(mode=0o600)
        password_file.write_text(secrets.token_hex(16) + "\n")
        superuser_password = self._folder / "superuser-password"
        superuser_password.write_text(secrets.token_hex(16) + "\n")
        if self._as_root:
            for path in (password_file, superuser_password):
                shutil.chown(path, PG_OS_USER, PG_OS_USER)
        self._run(
            PG_BIN / "initdb", "--pgdata", str(self._data), "--username", SUPERUSER,
            "--pwfile", str(superuser_password), "--encoding", "UTF8", "--locale", "C",
            # The socket (in our folder) is trusted; TCP, which the service and Kamailio use,
            # asks for the password.
            "--auth-local", "trust", "--auth-host", "scram-sha-256", "--no-sync",
        )  # fmt: skip
        superuser_password.unlink()

    def _user(self) -> dict[str, Any]:
        if not self._as_root:
            return {}
        return {"user": PG_OS_USER, "group": PG_OS_USER, "extra_groups": []}

    def _run(self, *command: str | Path) -> str:
        done: subprocess.CompletedProcess[bytes] = subprocess.run(
            [str(part) for part in command], cwd=self._folder, capture_output=True,
            check=False, **self._user(),
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(
                f"{Path(command[0]).name} failed ({done.returncode}):\n"
                f"{(done.stdout + done.stderr).decode(errors='replace')}"
            )
        return done.stdout.decode(errors="replace")

    def _ready(self) -> bool:
        check = subprocess.run(
            [str(PG_BIN / "pg_isready"), "-q", "-h", str(self._folder), "-p", str(self.port)],
            check=False,
        )
        return check.returncode == 0

    def _psql(self, statement: str) -> None:
        self._psql_value(statement)

    def _psql_value(self, query: str) -> str:
        return self._run(
            PG_BIN / "psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
            "-h", str(self._folder), "-p", str(self.port), "-U", SUPERUSER, "-d", "postgres",
            "-c", query,
        ).strip()  # fmt: skip

    def _log_tail(self) -> str:
        path = self._folder / "postgres.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-20:])
