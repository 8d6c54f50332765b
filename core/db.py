"""SQL engine and sessions (SQLAlchemy 2 async); SQLite in WAL mode: Kamailio reads as we write."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, MetaData, event, text
from sqlalchemy.engine import make_url
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
    engine = create_async_engine(url, pool_pre_ping=True, connect_args=connect_args)
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


class SessionFactory:
    """`sessions()` for reading, `sessions.begin()` for a write transaction.

    SQLite has one write lock. Writes take it at once (BEGIN IMMEDIATE), so concurrent writers
    queue on the busy timeout instead of failing; reads go through a second engine that never
    takes it, so a burst of writes does not stall every read (and no read blocks a write).

    With PostgreSQL both are the same engine, and a write transaction first takes one advisory
    lock, so writes run one at a time there too: the service's transactions read, check and
    then write (claim a dialog while it is new, place the queued dialogs, dismiss a user), as
    written for SQLite, where no other writer acts in between. Under PostgreSQL's READ
    COMMITTED each statement sees the latest commit instead: a claim that lost the race read
    the winner's changes half way and answered 403 `dialog_not_yours` instead of 409. Reads
    take no lock.
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

    def __call__(self) -> AsyncSession:
        return self._reads()

    def begin(self) -> AbstractAsyncContextManager[AsyncSession]:
        return self._begin_serialized() if self._serialize else self._writes.begin()

    @asynccontextmanager
    async def _begin_serialized(self) -> AsyncIterator[AsyncSession]:
        async with self._writes.begin() as session:
            await session.execute(_TAKE_WRITER_LOCK)
            yield session

    async def dispose(self) -> None:
        if self._reader is not None:
            await self._reader.dispose()


def create_session_factory(engine: AsyncEngine) -> SessionFactory:
    return SessionFactory(engine)
