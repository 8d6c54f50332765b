"""The wallboard: queues, agents and chat channels now and since midnight, in one read.

"Now" comes from the controller's memory (callers waiting, the longest wait) and the presence
store; "today" from the same call and chat figures as /stats, from midnight in the viewer's
time zone; the hours of the day from the queue log."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select

from acd import call_stats
from acd.agents import presence_data
from acd.agents import wallboard as agents_now
from acd.day_figures import day_start, hourly, queue_log_since
from api.routing import STAFF, ApiRequest, RouteTable, running_controller
from chat import stats as chat_stats
from chat.models import ChannelRow, DialogRow
from core.context import ServiceContext
from core.db import utcnow
from ivr.business_hours import zone

routes = RouteTable()


class WallboardQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Where "today" begins: midnight in this IANA zone.
    time_zone: str = "UTC"


class QueueNow(BaseModel):
    id: int
    name: str
    waiting: int
    longest_wait_seconds: float | None
    answered_today: int
    abandoned_today: int
    service_level_today: float | None


class AgentNow(BaseModel):
    user_id: int
    name: str
    status: str
    reason: str | None
    activity: str
    since: datetime | None
    calls_today: int
    chats_today: int


class ChannelNow(BaseModel):
    id: int
    name: str
    waiting: int


class HourOut(BaseModel):
    hour: datetime
    answered: int
    abandoned: int
    service_level: float | None


class DayBoard(BaseModel):
    day_started_at: datetime
    service_level_seconds: int
    queues: list[QueueNow]
    agents: list[AgentNow]
    channels: list[ChannelNow]
    calls_per_hour: list[HourOut]


@routes.add(
    "GET", "/wallboard", summary="Queues, agents and chats now and today", tag="presence",
    roles=STAFF, query=WallboardQuery, response=DayBoard, errors=(401, 403, 422),
)  # fmt: skip
async def wallboard(req: ApiRequest) -> DayBoard:
    query: WallboardQuery = req.query
    now = utcnow()
    start = day_start(zone(query.time_zone), now)
    ctx = req.ctx
    threshold = ctx.settings.acd.service_level_seconds
    facts = await call_stats.period_facts(ctx, start, None)
    queues_today = call_stats.queue_figures(facts.calls, facts.log, facts.wrap_ups, threshold)
    agents_today = call_stats.agent_figures(facts.calls, facts.log, facts.wrap_ups)
    chats_today = chat_stats.figures_by(
        await chat_stats.dialog_rows(ctx, start, None), lambda d: d.assignee_id
    )
    running = running_controller(req.raw.app)
    live = running.queue_figures() if running is not None else {}
    queues = []
    for queue_id, name in sorted((await call_stats.queue_names(ctx)).items()):
        waiting, longest = live.get(queue_id, (0, 0.0))
        today = queues_today.get(queue_id)
        queues.append(QueueNow(
            id=queue_id, name=name, waiting=waiting,
            longest_wait_seconds=round(longest, 1) if waiting else None,
            answered_today=today.answered if today else 0,
            abandoned_today=today.abandoned if today else 0,
            service_level_today=today.service_level if today else None,
        ))  # fmt: skip
    agents = []
    for entry in await agents_now(ctx):
        shown = presence_data(entry.user_id, entry.presence)
        calls = agents_today.get(entry.user_id)
        chats = chats_today.get(entry.user_id)
        agents.append(AgentNow(
            user_id=entry.user_id, name=entry.name, status=shown["status"],
            reason=shown["reason"], activity=shown["activity"], since=shown["since"],
            calls_today=calls.answered if calls else 0,
            chats_today=chats.received if chats else 0,
        ))  # fmt: skip
    hours = hourly(await queue_log_since(ctx, start), start, now, threshold)
    return DayBoard(
        day_started_at=start,
        service_level_seconds=threshold,
        queues=queues,
        agents=agents,
        channels=await _channels_waiting(ctx),
        calls_per_hour=[HourOut.model_validate(vars(h)) for h in hours],
    )


async def _channels_waiting(ctx: ServiceContext) -> list[ChannelNow]:
    """Every channel with its dialogs waiting in its queue (new, spam left out)."""
    waiting = (
        select(DialogRow.channel_id, func.count().label("waiting"))
        .where(DialogRow.state == "new", DialogRow.spam.is_(False))
        .group_by(DialogRow.channel_id)
        .subquery()
    )
    query = (
        select(ChannelRow.id, ChannelRow.name, func.coalesce(waiting.c.waiting, 0))
        .outerjoin(waiting, waiting.c.channel_id == ChannelRow.id)
        .order_by(ChannelRow.id)
    )
    async with ctx.sessions() as session:
        return [ChannelNow(id=i, name=n, waiting=w) for i, n, w in await session.execute(query)]
