"""Write transactions against a real SQLite file: this process's writers take SQLite's one
write lock in turn, first come first served (left to SQLite's busy handler, a long queue
starved some past the busy timeout: 503 busy), whole-transaction writes run in the same
turn, and a write opened inside another fails at once instead of waiting for itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from core.db import SessionFactory, create_engine, create_session_factory


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[SessionFactory]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'writes.sqlite3'}")
    factory = create_session_factory(engine)
    async with factory.begin() as session:
        await session.execute(text("CREATE TABLE turns (n INTEGER)"))
    yield factory
    await factory.dispose()
    await engine.dispose()


async def test_writers_take_turns_in_the_order_they_came(sessions: SessionFactory) -> None:
    inside, most, order = 0, 0, []

    async def writer(n: int) -> None:
        nonlocal inside, most
        async with sessions.begin() as session:
            inside += 1
            most = max(most, inside)
            order.append(n)
            await session.execute(text("INSERT INTO turns VALUES (:n)"), {"n": n})
            await asyncio.sleep(0.005)  # holding SQLite's lock, as a slow request would
            inside -= 1

    def whole(n: int, session: Session) -> None:
        order.append(n)
        session.execute(text("INSERT INTO turns VALUES (:n)"), {"n": n})

    writers = [
        asyncio.create_task(sessions.run_whole(lambda s, n=n: whole(n, s)))
        if n % 10 == 5 else asyncio.create_task(writer(n))
        for n in range(40)
    ]  # fmt: skip
    await asyncio.gather(*writers)
    assert most == 1
    assert order == list(range(40))
    async with sessions() as session:
        assert await session.scalar(text("SELECT count(*) FROM turns")) == 40


async def test_a_write_inside_a_write_fails_at_once(sessions: SessionFactory) -> None:
    async with sessions.begin() as session:
        await session.execute(text("INSERT INTO turns VALUES (1)"))
        with pytest.raises(RuntimeError, match="inside another"):
            async with sessions.begin():
                pass
    async with sessions() as session:
        assert await session.scalar(text("SELECT count(*) FROM turns")) == 1


async def test_a_whole_transaction_that_raises_writes_nothing(sessions: SessionFactory) -> None:
    def failing(session: Session) -> None:
        session.execute(text("INSERT INTO turns VALUES (7)"))
        raise ValueError("changed its mind")

    with pytest.raises(ValueError, match="changed its mind"):
        await sessions.run_whole(failing)
    async with sessions() as session:
        assert await session.scalar(text("SELECT count(*) FROM turns WHERE n = 7")) == 0
