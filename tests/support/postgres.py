"""A throwaway PostgreSQL server for the suite: `PBX_TEST_DATABASE=postgresql` runs every
service a test starts on a database of its own in one server that the tests start (initdb into
a temporary folder, a free loopback port, fast and unsafe settings) and stop at the end."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path

from core.postgres_server import PostgresServer
from tests.support.ports import free_port

DATABASE_ENV = "PBX_TEST_DATABASE"
BACKENDS = ("sqlite", "postgresql")


def selected_backend() -> str:
    """The database the suite runs on: PBX_TEST_DATABASE, `sqlite` when unset."""
    backend = os.environ.get(DATABASE_ENV, "sqlite") or "sqlite"
    if backend not in BACKENDS:
        raise ValueError(f"{DATABASE_ENV}={backend!r}: expected one of {', '.join(BACKENDS)}")
    return backend


class ThrowawayServer(PostgresServer):
    """A server in a temporary folder, fast and unsafe, deleted when it stops;
    `new_database()` gives each service its own database."""

    def __init__(self) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix="pbx-postgres-")), free_port(), durable=False)
        self._numbers = itertools.count(1)

    def new_database(self) -> str:
        return self.database(f"pbx_{next(self._numbers)}")

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            shutil.rmtree(self.socket_dir, ignore_errors=True)


_server: ThrowawayServer | None = None


def new_test_database_url() -> str | None:
    """A fresh database for one service when the suite runs on PostgreSQL (the server starts
    on first use); None on SQLite, where each service has its file in its data folder."""
    global _server
    if selected_backend() != "postgresql":
        return None
    if _server is None:
        server = ThrowawayServer()
        server.start()
        _server = server
    return _server.new_database()


def stop_test_server() -> None:
    global _server
    if _server is not None:
        server, _server = _server, None
        server.stop()
