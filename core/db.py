"""SQL engine and sessions (SQLAlchemy 2 async); SQLite in WAL mode: Kamailio reads as we write."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, MetaData, event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

# Stable constraint names, so Alembic migrations name the same thing on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


def create_engine(url: str, *, for_writes: bool = True) -> AsyncEngine:
    """With SQLite, `for_writes` engines start every transaction with BEGIN IMMEDIATE."""
    # A ping before each checkout finds connections a server dropped; a SQLite file has no
    # server, and the ping was one more round trip to its thread per transaction.
    engine = create_async_engine(url, pool_pre_ping=not url.startswith("sqlite"))
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _configure_sqlite_connection)
        if for_writes:
            event.listen(engine.sync_engine, "begin", _begin_immediate)
    return engine


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets Kamailio's auth reads proceed while the API writes; busy_timeout waits out locks
    # instead of failing a request; foreign keys are off by default in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    # We issue BEGIN ourselves (below): pysqlite's implicit deferred BEGIN lets two writers
    # both read, then one fails with "database is locked" on upgrade instead of waiting.
    # On a reading engine nothing begins: each SELECT reads the latest committed snapshot.
    dbapi_connection.isolation_level = None


def _begin_immediate(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


class SessionFactory:
    """`sessions()` for reading, `sessions.begin()` for a write transaction.

    SQLite has one write lock. Writes take it at once (BEGIN IMMEDIATE); reads go through a
    second engine that never takes it, so a burst of writes does not stall every read (and no
    read blocks a write). With PostgreSQL both are the same engine.

    Writers of this process queue for SQLite's lock in turn, on an asyncio.Lock (first come,
    first served), before they ask SQLite for it. Left to SQLite's busy handler, up to 15
    pooled connections polled for the lock with growing sleeps (1, 2, 5 ... 100 ms): a writer
    that had waited long looked only every 100 ms and lost to each newcomer, so under a steady
    stream of posts some waited past the 5 s busy timeout and were answered 503 (bench.chat at
    200 messages/s: 4 of 2,000, the service using 73 % of one of two cores). The busy timeout
    is now only about other processes (Kamailio, a migration).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._reader = (
            create_engine(str(engine.url), for_writes=False)
            if engine.dialect.name == "sqlite"
            else None
        )
        self._writes = async_sessionmaker(engine, expire_on_commit=False)
        self._reads = async_sessionmaker(self._reader or engine, expire_on_commit=False)
        self._write_turn = asyncio.Lock() if engine.dialect.name == "sqlite" else None
        # The task whose write transaction is open (SQLite), to refuse one nested in it.
        self._writer: asyncio.Task[object] | None = None

    def __call__(self) -> AsyncSession:
        return self._reads()

    def begin(self) -> AbstractAsyncContextManager[AsyncSession]:
        if self._write_turn is None:
            return self._writes.begin()
        return self._begin_in_turn(self._write_turn)

    @asynccontextmanager
    async def _begin_in_turn(self, turn: asyncio.Lock) -> AsyncIterator[AsyncSession]:
        async with self._in_turn(turn), self._writes.begin() as session:
            yield session

    @asynccontextmanager
    async def _in_turn(self, turn: asyncio.Lock) -> AsyncIterator[None]:
        task = asyncio.current_task()
        if task is not None and task is self._writer:
            # It would wait for itself for ever (before: 5 s, then "database is locked").
            raise RuntimeError("a write transaction opened inside another one")
        async with turn:
            self._writer = task
            try:
                yield
            finally:
                self._writer = None

    async def dispose(self) -> None:
        if self._reader is not None:
            await self._reader.dispose()


def create_session_factory(engine: AsyncEngine) -> SessionFactory:
    return SessionFactory(engine)
