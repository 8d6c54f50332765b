"""Call statistics: /stats/calls/agents and /stats/calls/queues over a period."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from acd import call_stats
from api.routing import STAFF, ApiRequest, RouteTable
from chat.stats import user_names
from core.errors import InvalidInput
from core.sql_bounds import UtcInstant

routes = RouteTable()


class InvalidPeriod(InvalidInput):
    code = "invalid_period"


class CallStatsQuery(BaseModel):
    """Calls started in [since, until); both optional (ISO 8601 with a zone)."""

    model_config = ConfigDict(extra="forbid")
    since: UtcInstant | None = None
    until: UtcInstant | None = None

    def check_period(self) -> None:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise InvalidPeriod("until must be later than since", field="until")


class HandlingOut(BaseModel):
    talked: int
    talk_seconds: float
    mean_talk_seconds: float | None
    wrap_ups: int
    wrap_up_seconds: float
    mean_wrap_up_seconds: float | None
    handling_seconds: float | None


class AgentCallFigures(HandlingOut):
    user_id: int
    name: str
    offered: int
    missed: int
    answered: int
    queue_answered: int
    direct_answered: int


class QueueCallFigures(HandlingOut):
    queue_id: int
    # None for a queue deleted since.
    name: str | None
    offered: int
    entered: int
    answered: int
    abandoned: int
    timed_out: int
    left_by_key: int
    refused: int
    failed: int
    mean_wait_seconds: float | None
    longest_wait_seconds: float | None
    answered_in_service_level: int
    service_level: float | None
    service_level_seconds: int


class AgentCallStats(BaseModel):
    since: datetime | None
    until: datetime | None
    items: list[AgentCallFigures]


class QueueCallStats(BaseModel):
    since: datetime | None
    until: datetime | None
    items: list[QueueCallFigures]


@routes.add(
    "GET", "/stats/calls/agents", summary="Call figures per agent", tag="calls", roles=STAFF,
    query=CallStatsQuery, response=AgentCallStats, errors=(401, 403, 422),
)  # fmt: skip
async def agent_call_stats(req: ApiRequest) -> AgentCallStats:
    query: CallStatsQuery = req.query
    query.check_period()
    facts = await call_stats.period_facts(req.ctx, query.since, query.until)
    by_agent = call_stats.agent_figures(facts.calls, facts.log, facts.wrap_ups)
    names = await user_names(req.ctx, by_agent)
    items = [
        AgentCallFigures(
            user_id=user_id, name=names.get(user_id, ""), offered=f.offered, missed=f.missed,
            answered=f.answered, queue_answered=f.queue_answered,
            direct_answered=f.direct_answered, **vars(f.handling),
        )
        for user_id, f in by_agent.items()
    ]  # fmt: skip
    return AgentCallStats(since=query.since, until=query.until, items=items)


@routes.add(
    "GET", "/stats/calls/queues", summary="Call figures per queue", tag="calls", roles=STAFF,
    query=CallStatsQuery, response=QueueCallStats, errors=(401, 403, 422),
)  # fmt: skip
async def queue_call_stats(req: ApiRequest) -> QueueCallStats:
    query: CallStatsQuery = req.query
    query.check_period()
    facts = await call_stats.period_facts(req.ctx, query.since, query.until)
    threshold = req.ctx.settings.acd.service_level_seconds
    by_queue = call_stats.queue_figures(facts.calls, facts.log, facts.wrap_ups, threshold)
    names = await call_stats.queue_names(req.ctx)
    items = []
    # Every queue, with zeros when nobody called it, and deleted queues still in the log.
    for queue_id in sorted(names.keys() | by_queue.keys()):
        f = by_queue.get(queue_id) or call_stats.figures_of_queue([], {}, {}, threshold)
        fields = {k: v for k, v in vars(f).items() if k != "handling"}
        items.append(QueueCallFigures(
            queue_id=queue_id, name=names.get(queue_id), service_level_seconds=threshold,
            **fields, **vars(f.handling),
        ))  # fmt: skip
    return QueueCallStats(since=query.since, until=query.until, items=items)
