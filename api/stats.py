"""Chat statistics: /stats/channels and /stats/agents over a period."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from api.routing import STAFF, ApiRequest, RouteTable
from chat import stats as chat_stats
from core.sql_bounds import UtcInstant

routes = RouteTable()


class StatsQuery(BaseModel):
    """Dialogs created in [since, until); both optional (ISO 8601 with a zone)."""

    model_config = ConfigDict(extra="forbid")
    since: UtcInstant | None = None
    until: UtcInstant | None = None


class FiguresOut(BaseModel):
    received: int
    unanswered: int
    first_response_seconds: float | None
    handling_seconds: float | None
    average_rating: float | None
    rated: int


class ChannelFigures(FiguresOut):
    channel_id: int
    name: str


class AgentFigures(FiguresOut):
    user_id: int
    name: str


class ChannelStats(BaseModel):
    since: datetime | None
    until: datetime | None
    items: list[ChannelFigures]


class AgentStats(BaseModel):
    since: datetime | None
    until: datetime | None
    # Each dialog counts for the agent holding it now (or who held it when it closed).
    items: list[AgentFigures]


@routes.add(
    "GET", "/stats/channels", summary="Chat figures per channel", tag="chat", roles=STAFF,
    query=StatsQuery, response=ChannelStats, errors=(401, 403, 422),
)  # fmt: skip
async def channel_stats(req: ApiRequest) -> ChannelStats:
    query: StatsQuery = req.query
    rows = await chat_stats.dialog_rows(req.ctx, query.since, query.until)
    by_channel = chat_stats.figures_by(rows, lambda d: d.channel_id)
    names = await chat_stats.channel_names(req.ctx)
    items = [
        ChannelFigures(channel_id=channel_id, name=name,
                       **vars(by_channel.get(channel_id, chat_stats.figures([]))))
        for channel_id, name in sorted(names.items())
    ]  # fmt: skip
    return ChannelStats(since=query.since, until=query.until, items=items)


@routes.add(
    "GET", "/stats/agents", summary="Chat figures per agent", tag="chat", roles=STAFF,
    query=StatsQuery, response=AgentStats, errors=(401, 403, 422),
)  # fmt: skip
async def agent_stats(req: ApiRequest) -> AgentStats:
    query: StatsQuery = req.query
    rows = await chat_stats.dialog_rows(req.ctx, query.since, query.until)
    by_agent = chat_stats.figures_by(rows, lambda d: d.assignee_id)
    names = await chat_stats.user_names(req.ctx, by_agent)
    items = [
        AgentFigures(user_id=user_id, name=names.get(user_id, ""), **vars(by_agent[user_id]))
        for user_id in sorted(names)
    ]
    return AgentStats(since=query.since, until=query.until, items=items)
