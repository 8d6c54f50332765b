"""Plain SQL against a service's database, whichever the suite runs on (SQLite or PostgreSQL):
for tests that read or write tables the way Kamailio does, behind the service's back."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from core.db import create_engine


async def execute(database_url: str, statement: str, **params: Any) -> list[tuple[Any, ...]]:
    """Runs one statement in its own transaction (committed); the rows it returned."""
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            result = await connection.execute(text(statement), params)
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        await engine.dispose()
