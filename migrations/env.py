"""Alembic environment: async engine, batch mode so SQLite can alter tables."""

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

import acd.models  # noqa: F401  (registers queues, queue log, presence history, forwarding)
import chat.models  # noqa: F401  (registers channels, dialogs, outbox, blocklist)
import core.events  # noqa: F401  (registers the events table)
import extensions.models  # noqa: F401  (registers users, extensions, tokens, subscriber)
import ivr.cdr
import ivr.menus
import ivr.number_hours
import ivr.numbers
import ivr.prompt_library
import ivr.voicemail  # noqa: F401  (registers menus, business hours, voicemail)
import pbx.provider_registration  # noqa: F401  (registers Kamailio's uacreg)
from core.db import Base, create_engine

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = create_engine(context.config.get_main_option("sqlalchemy.url") or "")
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
