"""A customer's dialogs, newest first, for the customer timeline (api/customers.py)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from chat.models import DialogRow
from core.context import ServiceContext


async def dialogs_of_customer(
    ctx: ServiceContext,
    customer_ids: list[str],
    channel_id: int | None,
    older_than: tuple[datetime, int] | None,
    limit: int,
) -> list[DialogRow]:
    """Dialogs of any of `customer_ids` (in `channel_id`, or any channel), newest first (by
    creation, then id), older than `older_than` (created, id) when given."""
    query = select(DialogRow).where(DialogRow.customer_id.in_(customer_ids))
    if channel_id is not None:
        query = query.where(DialogRow.channel_id == channel_id)
    if older_than is not None:
        at, below = older_than
        query = query.where(
            (DialogRow.created_at < at) | ((DialogRow.created_at == at) & (DialogRow.id < below))
        )
    query = query.order_by(DialogRow.created_at.desc(), DialogRow.id.desc()).limit(limit)
    async with ctx.sessions() as session:
        return list(await session.scalars(query))
