"""SQL engine and sessions (SQLAlchemy 2 async); SQLite in WAL mode: Kamailio reads as we write."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import DateTime, Engine, MetaData, event, text
from sqlalchemy import create_engine as create_blocking_engine
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

T = TypeVar("T")

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


# How long a write waits for the writer lock (or a row lock) before it fails: SQLite's busy
# timeout, PostgreSQL's lock_timeout; the API answers either with 503 `busy`.
LOCK_TIMEOUT_MS = 5000
# PostgreSQL: the transaction-level advisory lock every write transaction takes first (per
# database), the counterpart of SQLite's BEGIN IMMEDIATE. Any constant; this one spells "pbx".
WRITER_LOCK_KEY = 0x706278
_TAKE_WRITER_LOCK = text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=WRITER_LOCK_KEY)


def create_engine(url: str, *, for_writes: bool = True) -> AsyncEngine:
    """With SQLite, `for_writes` engines start every transaction with BEGIN IMMEDIATE."""
    connect_args: dict[str, Any] = {}
    if make_url(url).get_backend_name() == "postgresql":
        # Without it a write would wait for the writer lock for ever behind a stuck one.
        connect_args["server_settings"] = {"lock_timeout": str(LOCK_TIMEOUT_MS)}
    # A ping before each checkout finds connections a server dropped; a SQLite file has no
    # server, and the ping was one more round trip to its thread per transaction.
    engine = create_async_engine(
        url, pool_pre_ping=not url.startswith("sqlite"), connect_args=connect_args
    )
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
    cursor.execute(f"PRAGMA busy_timeout={LOCK_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    # We issue BEGIN ourselves (below): pysqlite's implicit deferred BEGIN lets two writers
    # both read, then one fails with "database is locked" on upgrade instead of waiting.
    # On a reading engine nothing begins: each SELECT reads the latest committed snapshot.
    dbapi_connection.isolation_level = None


def _begin_immediate(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _blocking_sqlite_engine(engine: AsyncEngine) -> Engine:
    """The same SQLite file through the standard sqlite3 driver, configured as our writes are
    (WAL, busy timeout, foreign keys, BEGIN IMMEDIATE). Used from one worker thread only."""
    url = engine.url.set(drivername="sqlite+pysqlite")
    blocking = create_blocking_engine(url)
    event.listen(blocking, "connect", _configure_sqlite_connection)
    event.listen(blocking, "begin", _begin_immediate)
    return blocking


class SessionFactory:
    """`sessions()` for reading, `sessions.begin()` for a write transaction, `run_whole(work)`
    for a write transaction written as plain (blocking) SQLAlchemy and run in one piece.

    SQLite has one write lock. Writes take it at once (BEGIN IMMEDIATE); reads go through a
    second engine that never takes it, so a burst of writes does not stall every read (and no
    read blocks a write).

    With PostgreSQL both are the same engine, and a write transaction first takes one advisory
    lock, so writes run one at a time there too: the service's transactions read, check and
    then write (claim a dialog while it is new, place the queued dialogs, dismiss a user), as
    written for SQLite, where no other writer acts in between. Under PostgreSQL's READ
    COMMITTED each statement sees the latest commit instead: a claim that lost the race read
    the winner's changes half way and answered 403 `dialog_not_yours` instead of 409. Reads
    take no lock.


    Writers of this process queue for SQLite's lock in turn, on an asyncio.Lock (first come,
    first served), before they ask SQLite for it. Left to SQLite's busy handler, up to 15
    pooled connections polled for the lock with growing sleeps (1, 2, 5 ... 100 ms): a writer
    that had waited long looked only every 100 ms and lost to each newcomer, so under a steady
    stream of posts some waited past the 5 s busy timeout and were answered 503 (bench.chat at
    200 messages/s: 4 of 2,000, the service using 73 % of one of two cores). The busy timeout
    is now only about other processes (Kamailio, a migration).

    aiosqlite runs each statement in its own thread and hands every one over and back (a
    queue, a self-pipe, the GIL): measured here, a transaction of six statements took 2.7 ms
    and 2 ms of CPU that way, 0.7 ms and 0.5 ms run whole in one worker thread through the
    standard sqlite3 driver. `run_whole` does the latter, for the hot path (a customer's
    message and its assignment); with PostgreSQL it runs the same function through the
    async session (`run_sync`).
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
        self._serialize = engine.dialect.name == "postgresql"
        self._write_turn = asyncio.Lock() if engine.dialect.name == "sqlite" else None
        # The task whose write transaction is open (SQLite), to refuse one nested in it.
        self._writer: asyncio.Task[object] | None = None
        self._blocking: Engine | None = None
        self._blocking_writes: sessionmaker[Session] | None = None
        self._blocking_thread: ThreadPoolExecutor | None = None
        if engine.dialect.name == "sqlite":
            self._blocking = _blocking_sqlite_engine(engine)
            self._blocking_writes = sessionmaker(self._blocking, expire_on_commit=False)
            self._blocking_thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writes")

    def __call__(self) -> AsyncSession:
        return self._reads()

    def begin(self) -> AbstractAsyncContextManager[AsyncSession]:
        if self._serialize:
            return self._begin_serialized()
        if self._write_turn is None:
            return self._writes.begin()
        return self._begin_in_turn(self._write_turn)

    @asynccontextmanager
    async def _begin_serialized(self) -> AsyncIterator[AsyncSession]:
        async with self._writes.begin() as session:
            await session.execute(_TAKE_WRITER_LOCK)
            yield session

    async def run_whole(self, work: Callable[[Session], T]) -> T:
        """One write transaction: `work` with a plain Session, committed when it returns
        (rolled back if it raises). Its result should be plain data, not rows to load later."""
        if self._blocking_writes is None or self._write_turn is None:
            async with self.begin() as session:
                return await session.run_sync(work)
        writes = self._blocking_writes

        def transaction() -> T:
            with writes.begin() as session:
                return work(session)

        async with self._in_turn(self._write_turn):
            return await asyncio.get_running_loop().run_in_executor(
                self._blocking_thread, transaction
            )

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
        if self._blocking is not None:
            self._blocking.dispose()
        if self._blocking_thread is not None:
            self._blocking_thread.shutdown(wait=True)


def create_session_factory(engine: AsyncEngine) -> SessionFactory:
    return SessionFactory(engine)
