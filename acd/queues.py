"""Queues: configuration in SQL (with their extension in the shared namespace and ordered
members), validated as a whole before anything is written."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any

import structlog
from pydantic import TypeAdapter
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from acd.callback_rules import OPEN_STATES
from acd.models import CallbackRow, QueueMemberRow, QueueRow
from acd.strategies import Strategy
from core.context import ServiceContext
from core.db import utcnow
from core.errors import Conflict, InvalidInput, NotFound
from core.events import Event, EventBus
from destinations.checks import check_destination
from destinations.destination import Destination, HangupDestination
from destinations.references import References, references_to
from extensions.models import Extension
from extensions.namespace import take_extension
from extensions.numbering import OwnerType
from extensions.users import check_members
from ivr.prompt_library import PromptRow

log = structlog.get_logger(__name__)
_destination: TypeAdapter[Destination] = TypeAdapter(Destination)

WHEN_NO_AGENTS = ("wait", "overflow")


class QueueNameTaken(Conflict):
    code = "queue_name_taken"


class QueueInUse(Conflict):
    code = "queue_in_use"


class InvalidOverflow(InvalidInput):
    code = "invalid_overflow"


class UnknownPrompt(InvalidInput):
    code = "unknown_prompt"


class KeyTaken(InvalidInput):
    code = "key_taken"


class NoOutboundRoute(InvalidInput):
    code = "no_outbound_route"


@dataclass(frozen=True)
class QueueSpec:
    name: str
    extension: str | None = None
    members: tuple[int, ...] = ()
    strategy: Strategy = Strategy.EVENLY
    ring_timeout: int = 20
    wrap_up_time: int = 10
    max_wait: int = 300
    max_length: int = 0
    when_no_agents: str = "overflow"
    overflow: Destination = field(default_factory=HangupDestination)
    hold_music_prompt_id: int | None = None
    announce_interval: int = 60
    exit_key: str | None = None
    record_calls: bool = False
    # flows.callback: the key a waiting caller presses to be called back (None: not offered),
    # how many calls to them may fail, and the seconds between those calls.
    callback_key: str | None = None
    callback_attempts: int = 3
    callback_retry_interval: int = 300


@dataclass(frozen=True)
class Queue:
    id: int
    spec: QueueSpec
    created_at: datetime
    updated_at: datetime


async def create_queue(ctx: ServiceContext, spec: QueueSpec) -> Queue:
    try:
        async with ctx.sessions.begin() as session:
            await _validate(
                session, spec, queue_id=None, outbound_route=bool(ctx.settings.trunk.uri)
            )
            row = QueueRow(**_columns(spec), created_at=utcnow(), updated_at=utcnow())
            session.add(row)
            await session.flush()
            await _write_members(session, row.id, spec.members)
            if spec.extension is not None:
                await take_extension(session, spec.extension, OwnerType.QUEUE, row.id)
            queue = Queue(row.id, spec, row.created_at, row.updated_at)
            event = await ctx.events.stage(session, "queue_created", queue_data(queue))
    except IntegrityError:
        raise QueueNameTaken(f"a queue named {spec.name!r} exists", field="name") from None
    await ctx.events.publish(event)
    log.info("queue_created", queue_id=queue.id, name=spec.name)
    return queue


async def update_queue(ctx: ServiceContext, queue_id: int, changes: dict[str, Any]) -> Queue:
    """`changes` holds only the fields sent; the merged queue is validated as a whole."""
    try:
        async with ctx.sessions.begin() as session:
            row = await _load(session, queue_id)
            current = await _spec(session, row)
            merged = replace(current, **changes)
            await _validate(session, merged, queue_id=queue_id, only=set(changes),
                            outbound_route=bool(ctx.settings.trunk.uri))  # fmt: skip
            for column, value in _columns(merged).items():
                setattr(row, column, value)
            row.updated_at = utcnow()
            if "members" in changes:
                await session.execute(
                    delete(QueueMemberRow).where(QueueMemberRow.queue_id == queue_id)
                )
                await _write_members(session, queue_id, merged.members)
            if merged.extension != current.extension:
                await _release_extension(session, queue_id)
                if merged.extension is not None:
                    await take_extension(session, merged.extension, OwnerType.QUEUE, queue_id)
            await session.flush()
            queue = Queue(queue_id, merged, row.created_at, row.updated_at)
            event = await ctx.events.stage(session, "queue_updated", queue_data(queue))
    except IntegrityError:
        raise QueueNameTaken("another queue has this name", field="name") from None
    await ctx.events.publish(event)
    return queue


async def delete_queue(ctx: ServiceContext, queue_id: int) -> None:
    async with ctx.sessions.begin() as session:
        row = await _load(session, queue_id)
        references = await queue_references(session, queue_id)
        if references:
            raise QueueInUse(
                f"queue {queue_id} is the destination of {references.describe()}",
                details=references.details(),
            )
        waiting = await session.scalar(select(func.count()).where(
            CallbackRow.queue_id == queue_id,
            CallbackRow.state.in_([state.value for state in OPEN_STATES]),
        ))  # fmt: skip
        if waiting:
            raise QueueInUse(f"queue {queue_id} has {waiting} open callback request(s): "
                             "cancel them first (DELETE /callbacks/{id})",
                             details={"callbacks": waiting})  # fmt: skip
        queue = Queue(queue_id, await _spec(session, row), row.created_at, row.updated_at)
        await _release_extension(session, queue_id)
        await session.delete(row)
        event = await ctx.events.stage(session, "queue_deleted", queue_data(queue))
    await ctx.events.publish(event)


async def get_queue(ctx: ServiceContext, queue_id: int) -> Queue:
    async with ctx.sessions() as session:
        row = await _load(session, queue_id)
        return Queue(queue_id, await _spec(session, row), row.created_at, row.updated_at)


async def find_queue(ctx: ServiceContext, queue_id: int) -> Queue | None:
    try:
        return await get_queue(ctx, queue_id)
    except NotFound:
        return None


async def list_queues(ctx: ServiceContext) -> list[Queue]:
    async with ctx.sessions() as session:
        rows = list(await session.scalars(select(QueueRow).order_by(QueueRow.id)))
        return [Queue(r.id, await _spec(session, r), r.created_at, r.updated_at) for r in rows]


async def queue_of_extension(ctx: ServiceContext, extension: str) -> int | None:
    async with ctx.sessions() as session:
        holder = await session.get(Extension, extension)
    if holder is None or holder.owner_type != OwnerType.QUEUE.value:
        return None
    return holder.owner_id


async def leave_every_queue(session: AsyncSession, bus: EventBus, user_id: int) -> list[Event]:
    """A dismissed user leaves every queue, inside the caller's transaction (dismissal is
    one); returns the staged events to publish after its commit."""
    queue_ids = list(await session.scalars(
        select(QueueMemberRow.queue_id).where(QueueMemberRow.user_id == user_id)
    ))  # fmt: skip
    await session.execute(delete(QueueMemberRow).where(QueueMemberRow.user_id == user_id))
    events = []
    for queue_id in queue_ids:
        row = await _load(session, queue_id)
        queue = Queue(queue_id, await _spec(session, row), row.created_at, row.updated_at)
        events.append(await bus.stage(session, "queue_updated", queue_data(queue)))
    return events


async def queue_references(session: AsyncSession, queue_id: int) -> References:
    """What routes callers to this queue: numbers, menus, other queues' overflow."""
    # Whatever priority the destination gives its callers.
    return await references_to(
        session, lambda d: d.get("type") == "queue" and d.get("id") == queue_id,
        except_queue=queue_id,
    )  # fmt: skip


def queue_data(queue: Queue) -> dict[str, Any]:
    spec = queue.spec
    return {
        "id": queue.id,
        **{f.name: getattr(spec, f.name) for f in fields(spec) if f.name != "overflow"},
        "members": list(spec.members),
        "strategy": spec.strategy.value,
        "overflow": spec.overflow.model_dump(),
    }


async def _validate(
    session: AsyncSession, spec: QueueSpec, *, queue_id: int | None, outbound_route: bool,
    only: set[str] | None = None,
) -> None:  # fmt: skip
    def changed(name: str) -> bool:
        return only is None or name in only

    if spec.callback_key is not None and (changed("callback_key") or changed("exit_key")):
        if spec.callback_key == spec.exit_key:
            raise KeyTaken("the callback key is the exit key", field="callback_key")
        if changed("callback_key") and not outbound_route:
            raise NoOutboundRoute("callbacks need the trunk (trunk.uri) to call customers",
                                  field="callback_key")  # fmt: skip

    if changed("name"):
        taken = await session.scalar(
            select(QueueRow.id).where(QueueRow.name == spec.name, QueueRow.id != (queue_id or 0))
        )
        if taken:
            raise QueueNameTaken(f"a queue named {spec.name!r} exists", field="name")
    if changed("members"):
        await check_members(session, spec.members)
    if changed("overflow"):
        if spec.overflow.type == "queue" and spec.overflow.id == queue_id:
            raise InvalidOverflow("a queue cannot overflow into itself", field="overflow.id")
        await check_destination(session, spec.overflow, "overflow")
    prompt_id = spec.hold_music_prompt_id
    if (
        changed("hold_music_prompt_id")
        and prompt_id is not None
        and await session.get(PromptRow, prompt_id) is None
    ):
        raise UnknownPrompt(f"prompt {spec.hold_music_prompt_id} does not exist",
                                field="hold_music.prompt_id")  # fmt: skip


async def _write_members(session: AsyncSession, queue_id: int, members: tuple[int, ...]) -> None:
    session.add_all(
        QueueMemberRow(queue_id=queue_id, user_id=user_id, position=position)
        for position, user_id in enumerate(members)
    )


async def _release_extension(session: AsyncSession, queue_id: int) -> None:
    await session.execute(delete(Extension).where(
        Extension.owner_type == OwnerType.QUEUE.value, Extension.owner_id == queue_id
    ))  # fmt: skip


async def _load(session: AsyncSession, queue_id: int) -> QueueRow:
    row = await session.get(QueueRow, queue_id)
    if row is None:
        raise NotFound(f"queue {queue_id} does not exist")
    return row


async def _spec(session: AsyncSession, row: QueueRow) -> QueueSpec:
    members = await session.scalars(
        select(QueueMemberRow.user_id)
        .where(QueueMemberRow.queue_id == row.id)
        .order_by(QueueMemberRow.position)
    )
    extension = await session.scalar(select(Extension.number).where(
        Extension.owner_type == OwnerType.QUEUE.value, Extension.owner_id == row.id
    ))  # fmt: skip
    return QueueSpec(
        name=row.name,
        extension=extension,
        members=tuple(members),
        strategy=Strategy(row.strategy),
        ring_timeout=row.ring_timeout,
        wrap_up_time=row.wrap_up_time,
        max_wait=row.max_wait,
        max_length=row.max_length,
        when_no_agents=row.when_no_agents,
        overflow=_destination.validate_python(row.overflow),
        hold_music_prompt_id=row.hold_music_prompt_id,
        announce_interval=row.announce_interval,
        exit_key=row.exit_key,
        record_calls=row.record_calls,
        callback_key=row.callback_key,
        callback_attempts=row.callback_attempts,
        callback_retry_interval=row.callback_retry_interval,
    )


def _columns(spec: QueueSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "strategy": spec.strategy.value,
        "ring_timeout": spec.ring_timeout,
        "wrap_up_time": spec.wrap_up_time,
        "max_wait": spec.max_wait,
        "max_length": spec.max_length,
        "when_no_agents": spec.when_no_agents,
        "overflow": spec.overflow.model_dump(),
        "hold_music_prompt_id": spec.hold_music_prompt_id,
        "announce_interval": spec.announce_interval,
        "exit_key": spec.exit_key,
        "record_calls": spec.record_calls,
        "callback_key": spec.callback_key,
        "callback_attempts": spec.callback_attempts,
        "callback_retry_interval": spec.callback_retry_interval,
    }
