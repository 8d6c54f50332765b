"""Write transactions against a real SQLite file: this process's writers take SQLite's one
write lock in turn, first come first served (left to SQLite's busy handler, a long queue
starved some past the busy timeout: 503 busy), and a write opened inside another fails at
once instead of waiting for itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

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

    writers = [asyncio.create_task(writer(n)) for n in range(40)]
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
