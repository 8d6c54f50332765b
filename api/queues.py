"""Queues resource: /queues and /queues/{queue_id}, plus who waits in a queue right now."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from acd import queue_log, queues
from acd.strategies import Strategy
from api.routing import ADMIN, STAFF, ApiRequest, RouteTable, running_controller
from core.errors import InvalidInput
from core.settings import MAX_RING_TIMEOUT_S
from core.sql_bounds import Count, Id, SqlInt, UtcInstant
from destinations.destination import Destination, HangupDestination
from extensions.numbering import EXTENSION_PATTERN

routes = RouteTable()

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ExitKey = Annotated[str, Field(pattern=r"^[0-9*#]$")]
# Fields that may be cleared with null in a PATCH.
NULLABLE = frozenset({"extension", "hold_music_prompt_id", "exit_key", "callback_key"})


class QueueFields(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Dialled during a greeting (or from a desk phone), it puts the caller in this queue.
    extension: Annotated[str, Field(pattern=EXTENSION_PATTERN)] | None = None
    # User ids in order (in_order and round_robin follow it).
    members: list[SqlInt] = Field(default_factory=list, max_length=500)
    strategy: Strategy = Strategy.EVENLY
    # Seconds an offered agent's phone rings before the next agent is tried.
    ring_timeout: int = Field(20, ge=5, le=MAX_RING_TIMEOUT_S)
    # Seconds of wrap-up after each call of this queue (0: none).
    wrap_up_time: int = Field(10, ge=0, le=3600)
    # Seconds a caller waits at most before the overflow destination (0: no limit).
    max_wait: int = Field(300, ge=0, le=86400)
    # Callers waiting at most; the next one goes to overflow at once (0: no limit).
    max_length: int = Field(0, ge=0, le=10000)
    # While no member is logged in: wait anyway, or go to overflow at once.
    when_no_agents: Literal["wait", "overflow"] = "overflow"
    overflow: Destination = Field(default_factory=HangupDestination)
    # A prompt of the library played in a loop while waiting (null: the built-in hold tone).
    hold_music_prompt_id: Id | None = None
    # Seconds between announcements of the caller's position and expected wait (0: never).
    announce_interval: int = Field(60, ge=0, le=3600)
    # A key that takes the caller out of the queue to the overflow destination.
    exit_key: ExitKey | None = None
    # Record external calls connected through this queue (both voices).
    record_calls: bool = False
    # A key with which a waiting caller asks to be called back, keeping their place (needs
    # the trunk); null: not offered. Not the exit key.
    callback_key: ExitKey | None = None
    # Calls to the customer that may fail before the callback is given up.
    callback_attempts: int = Field(3, ge=1, le=10)
    # Seconds between two calls to a customer who did not answer.
    callback_retry_interval: int = Field(300, ge=1, le=86400)


class QueueCreate(QueueFields):
    name: Name


class QueuePatch(BaseModel):
    """Only the fields sent change; extension, hold_music_prompt_id, exit_key and callback_key
    accept null."""

    model_config = ConfigDict(extra="forbid")
    name: Name | None = None
    extension: Annotated[str, Field(pattern=EXTENSION_PATTERN)] | None = None
    members: list[SqlInt] | None = Field(None, max_length=500)
    strategy: Strategy | None = None
    ring_timeout: int | None = Field(None, ge=5, le=MAX_RING_TIMEOUT_S)
    wrap_up_time: int | None = Field(None, ge=0, le=3600)
    max_wait: int | None = Field(None, ge=0, le=86400)
    max_length: int | None = Field(None, ge=0, le=10000)
    when_no_agents: Literal["wait", "overflow"] | None = None
    overflow: Destination | None = None
    hold_music_prompt_id: Id | None = None
    announce_interval: int | None = Field(None, ge=0, le=3600)
    exit_key: ExitKey | None = None
    record_calls: bool | None = None
    callback_key: ExitKey | None = None
    callback_attempts: int | None = Field(None, ge=1, le=10)
    callback_retry_interval: int | None = Field(None, ge=1, le=86400)


class QueueOut(QueueFields):
    id: int
    name: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, queue: queues.Queue) -> QueueOut:
        data = queues.queue_data(queue)
        return cls.model_validate(
            {**data, "created_at": queue.created_at, "updated_at": queue.updated_at}
        )


class QueueList(BaseModel):
    items: list[QueueOut]


ERRORS = (401, 403, 404, 409, 422)


@routes.add(
    "POST", "/queues", summary="Create a queue", tag="queues", roles=ADMIN, body=QueueCreate,
    response=QueueOut, status=201, errors=(401, 403, 409, 422),
)  # fmt: skip
async def create_queue(req: ApiRequest) -> QueueOut:
    body: QueueCreate = req.body
    fields = body.model_dump(exclude={"members", "overflow"})
    spec = queues.QueueSpec(**fields, members=tuple(body.members), overflow=body.overflow)
    return QueueOut.of(await queues.create_queue(req.ctx, spec))


@routes.add(
    "GET", "/queues", summary="List queues", tag="queues", roles=STAFF, response=QueueList,
    errors=(401, 403),
)  # fmt: skip
async def list_queues(req: ApiRequest) -> QueueList:
    return QueueList(items=[QueueOut.of(q) for q in await queues.list_queues(req.ctx)])


@routes.add(
    "GET", "/queues/{queue_id}", summary="Read a queue", tag="queues", roles=STAFF,
    response=QueueOut, errors=(401, 403, 404),
)  # fmt: skip
async def get_queue(req: ApiRequest) -> QueueOut:
    return QueueOut.of(await queues.get_queue(req.ctx, req.path["queue_id"]))


@routes.add(
    "PATCH", "/queues/{queue_id}", summary="Change a queue", tag="queues", roles=ADMIN,
    body=QueuePatch, response=QueueOut, errors=ERRORS,
)  # fmt: skip
async def patch_queue(req: ApiRequest) -> QueueOut:
    body: QueuePatch = req.body
    changes: dict[str, Any] = {}
    for field in body.model_fields_set:
        value = getattr(body, field)
        if value is None and field not in NULLABLE:
            raise InvalidInput(f"{field} cannot be null", field=field)
        changes[field] = tuple(value) if field == "members" else value
    return QueueOut.of(await queues.update_queue(req.ctx, req.path["queue_id"], changes))


@routes.add(
    "DELETE", "/queues/{queue_id}", summary="Delete a queue", tag="queues", roles=ADMIN,
    status=204, errors=(401, 403, 404, 409),
)  # fmt: skip
async def delete_queue(req: ApiRequest) -> None:
    await queues.delete_queue(req.ctx, req.path["queue_id"])


class WaitingCallerOut(BaseModel):
    call_id: int
    position: int
    wait_seconds: float
    ringing: bool
    # A callback waiting in the place of the caller who asked for it (nobody on the line).
    callback_id: int | None = None


class WaitingList(BaseModel):
    items: list[WaitingCallerOut]


@routes.add(
    "GET", "/queues/{queue_id}/waiting", summary="Callers waiting in a queue now",
    tag="queues", roles=STAFF, response=WaitingList, errors=(401, 403, 404),
)  # fmt: skip
async def waiting_callers(req: ApiRequest) -> WaitingList:
    queue = await queues.get_queue(req.ctx, req.path["queue_id"])
    # Without a controller (the API served alone) no call is in any queue.
    running = running_controller(req.raw.app)
    waiting = running.waiting_callers(queue.id) if running is not None else []
    return WaitingList(items=[
        WaitingCallerOut(call_id=w.call_id, position=w.position, wait_seconds=w.wait_seconds,
                         ringing=w.ringing, callback_id=w.callback_id)
        for w in waiting
    ])  # fmt: skip


class QueueLogQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queue_id: SqlInt | None = None
    call_id: SqlInt | None = None
    since: UtcInstant | None = None
    limit: int = Field(100, ge=1, le=1000)
    offset: Count = 0


class QueueLogEntry(BaseModel):
    id: int
    at: datetime
    queue_id: int
    call_id: int
    event: str
    user_id: int | None
    wait_seconds: float | None
    detail: dict[str, Any]


class QueueLog(BaseModel):
    items: list[QueueLogEntry]


@routes.add(
    "GET", "/queue-log", summary="The queue log (enter, offer, connect, abandon, ...)",
    tag="queues", roles=STAFF, query=QueueLogQuery, response=QueueLog, errors=(401, 403, 422),
)  # fmt: skip
async def read_queue_log(req: ApiRequest) -> QueueLog:
    query: QueueLogQuery = req.query
    rows = await queue_log.entries(
        req.ctx, queue_id=query.queue_id, call_id=query.call_id, since=query.since,
        limit=query.limit, offset=query.offset,
    )  # fmt: skip
    return QueueLog(items=[QueueLogEntry.model_validate(r, from_attributes=True) for r in rows])
