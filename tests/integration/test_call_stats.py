"""Call statistics and the customer timeline through the HTTP app: call records, queue log
and presence history written through the service's own write-behind appliers at fixed
instants (a quiet hour in 2031, so other tests' calls do not count), chat dialogs through the
connector."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from acd.agents import presence_data
from acd.presence import Presence, Status
from acd.queue_log import QueueEvent, record
from api.routing import CONTEXT_KEY
from core.context import ServiceContext
from ivr.cdr import CALLS_SEQUENCE, Disposition, submit_end
from tests.support.api_client import ApiClient
from tests.support.chat import customer_says, new_channel

T = datetime(2031, 5, 5, 10, 0, tzinfo=UTC)
HOUR = {"since": T.isoformat(), "until": (T + timedelta(hours=1)).isoformat()}
COMPANY = "+49309990000"


def at(seconds: float) -> datetime:
    return T + timedelta(seconds=seconds)


class Writes:
    """Rows as the call path hands them to the write-behind writer (ivr.cdr, acd.queue_log,
    acd.agents), with the instants a test chooses."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def call(
        self, start: float, *, caller: str, called: str = COMPANY,
        direction: str = "inbound", answered: tuple[float, str, int] | None = None,
        ended: float, disposition: Disposition = Disposition.ANSWERED,
    ) -> int:  # fmt: skip
        writes = self.ctx.writes
        call_id = writes.next_id(CALLS_SEQUENCE)
        writes.submit("call_open", {
            "id": call_id, "at": at(start).isoformat(), "direction": direction,
            "caller": caller, "called": called, "worker_id": 1, "user_id": None,
        })  # fmt: skip
        if answered is not None:
            when, extension, user_id = answered
            writes.submit("call_answered", {
                "id": call_id, "at": at(when).isoformat(), "connected_to": extension,
                "user_id": user_id,
            })  # fmt: skip
        submit_end(self.ctx, call_id, at(ended), disposition, "caller")
        return call_id

    def queue(self, queue_id: int, call_id: int, when: float, event: QueueEvent,
              **fields: Any) -> None:  # fmt: skip
        record(self.ctx, queue_id, call_id, event, at=at(when), **fields)

    def presence(self, user_id: int, when: float, status: Status, cause: str) -> None:
        data = presence_data(user_id, Presence(status=status))
        data["cause"] = cause
        data["previous"] = {"status": "ready", "activity": "in_call"}
        self.ctx.writes.submit("presence_history", {
            "id": self.ctx.writes.next_id("presence_history"), "at": at(when).isoformat(),
            "user_id": user_id, "event": data,
        })  # fmt: skip


@pytest.fixture
async def hour(admin: ApiClient, api_server: TestServer) -> dict[str, Any]:
    """Two agents and a queue, and an hour of calls:
    1. queue: offered to Anna (rings out), then Ben, who answers after 9 s, talks 60 s and
       wraps up 15 s;
    2. queue: Anna answers after 25 s (beyond the 20 s service level), talks 20 s, wraps up 4 s;
    3. queue, another caller: abandons after 30 s;
    4. direct call to Anna: 30 s;
    and a queue call Anna took the day before (outside the hour)."""
    anna = await admin.new_user("Anna Stats")
    ben = await admin.new_user("Ben Stats")
    made = await admin.post("/queues", {"name": f"Stats queue {anna['id']}",
                                        "members": [anna["id"], ben["id"]]})  # fmt: skip
    assert made.status == 201, made
    queue_id = made.body["id"]
    a, b = anna["id"], ben["id"]
    # Numbers of this fixture's own (it runs once per test, at the same instants).
    customer, other = f"+4930555{a:05d}", f"+4930777{a:05d}"
    w = Writes(api_server.app[CONTEXT_KEY])
    c1 = w.call(0, caller=customer, answered=(10, "2901", b), ended=70)
    w.queue(queue_id, c1, 1, QueueEvent.ENTER, position=1)
    w.queue(queue_id, c1, 2, QueueEvent.OFFER, user_id=a, wait_seconds=1)
    w.queue(queue_id, c1, 7, QueueEvent.NO_ANSWER, user_id=a, wait_seconds=6)
    w.queue(queue_id, c1, 7, QueueEvent.OFFER, user_id=b, wait_seconds=6)
    w.queue(queue_id, c1, 10, QueueEvent.CONNECT, user_id=b, wait_seconds=9)
    w.presence(b, 10, Status.READY, f"call:{c1}")
    w.queue(queue_id, c1, 70, QueueEvent.COMPLETE, user_id=b, talk_seconds=60.0)
    w.presence(b, 70, Status.WRAP_UP, f"call:{c1}")
    w.presence(b, 85, Status.READY, "wrap_up_over")
    c2 = w.call(100, caller=customer, answered=(126, "2900", a), ended=146)
    w.queue(queue_id, c2, 101, QueueEvent.ENTER, position=1)
    w.queue(queue_id, c2, 101, QueueEvent.OFFER, user_id=a, wait_seconds=0)
    w.queue(queue_id, c2, 126, QueueEvent.CONNECT, user_id=a, wait_seconds=25)
    w.queue(queue_id, c2, 146, QueueEvent.COMPLETE, user_id=a, talk_seconds=20.0)
    w.presence(a, 146, Status.WRAP_UP, f"call:{c2}")
    w.presence(a, 150, Status.READY, f"user:{a}")
    c3 = w.call(200, caller=other, ended=231, disposition=Disposition.ABANDONED)
    w.queue(queue_id, c3, 201, QueueEvent.ENTER, position=1)
    w.queue(queue_id, c3, 231, QueueEvent.ABANDON, wait_seconds=30)
    c4 = w.call(300, caller=customer, called="2900", answered=(305, "2900", a), ended=335)
    day_before = w.call(-86400, caller=customer, answered=(-86390, "2900", a), ended=-86300)
    w.queue(queue_id, day_before, -86399, QueueEvent.ENTER, position=1)
    w.queue(queue_id, day_before, -86390, QueueEvent.CONNECT, user_id=a, wait_seconds=9)
    await w.ctx.writes.flush()
    return {"anna": a, "ben": b, "queue_id": queue_id, "calls": [c1, c2, c3, c4, day_before],
            "customer": customer, "other": other}  # fmt: skip


async def test_figures_per_agent(admin: ApiClient, hour: dict[str, Any]) -> None:
    reply = await admin.get("/stats/calls/agents", params=HOUR)
    assert reply.status == 200, reply
    assert reply.body["since"] == HOUR["since"].replace("+00:00", "Z")
    figures = {f["user_id"]: f for f in reply.body["items"]}
    assert set(figures) == {hour["anna"], hour["ben"]}
    anna = figures[hour["anna"]]
    assert anna["name"] == "Anna Stats"
    assert (anna["offered"], anna["missed"], anna["answered"]) == (2, 1, 2)
    assert (anna["queue_answered"], anna["direct_answered"]) == (1, 1)
    assert (anna["talk_seconds"], anna["mean_talk_seconds"]) == (50.0, 25.0)
    assert (anna["wrap_ups"], anna["wrap_up_seconds"], anna["mean_wrap_up_seconds"]) == (
        1, 4.0, 4.0)  # fmt: skip
    assert anna["handling_seconds"] == 27.0  # (50 + 4) / 2
    # Without a period: every call, the day before's too.
    everything = (await admin.get("/stats/calls/agents")).body["items"]
    assert next(f for f in everything if f["user_id"] == hour["anna"])["queue_answered"] == 2
    ben = figures[hour["ben"]]
    assert (ben["offered"], ben["missed"], ben["answered"], ben["queue_answered"]) == (1, 0, 1, 1)
    assert (ben["talk_seconds"], ben["wrap_up_seconds"], ben["handling_seconds"]) == (
        60.0, 15.0, 75.0)  # fmt: skip


async def test_figures_per_queue(admin: ApiClient, hour: dict[str, Any]) -> None:
    reply = await admin.get("/stats/calls/queues", params=HOUR)
    assert reply.status == 200, reply
    figures = {f["queue_id"]: f for f in reply.body["items"]}
    mine = figures[hour["queue_id"]]
    assert mine["name"] == f"Stats queue {hour['anna']}"
    assert (mine["offered"], mine["entered"], mine["answered"], mine["abandoned"]) == (3, 3, 2, 1)
    assert (mine["timed_out"], mine["left_by_key"], mine["refused"], mine["failed"]) == (0, 0, 0, 0)
    assert (mine["mean_wait_seconds"], mine["longest_wait_seconds"]) == (21.333, 30.0)
    assert (mine["answered_in_service_level"], mine["service_level"]) == (1, 0.3333)
    assert mine["service_level_seconds"] == 20
    assert (mine["talk_seconds"], mine["wrap_up_seconds"], mine["handling_seconds"]) == (
        80.0, 19.0, 49.5)  # fmt: skip
    # The day before: only that call; an empty period lists the queue with zeros.
    before = {"since": (T - timedelta(days=1, hours=1)).isoformat(), "until": T.isoformat()}
    earlier = await admin.get("/stats/calls/queues", params=before)
    day = {f["queue_id"]: f for f in earlier.body["items"]}[hour["queue_id"]]
    assert (day["answered"], day["talk_seconds"]) == (1, 90.0)
    later = {"since": (T + timedelta(days=1)).isoformat()}
    nothing = await admin.get("/stats/calls/queues", params=later)
    zero = {f["queue_id"]: f for f in nothing.body["items"]}[hour["queue_id"]]
    assert (zero["offered"], zero["service_level"], zero["handling_seconds"]) == (0, None, None)


async def test_stats_roles_and_bad_periods(admin: ApiClient, anonymous: ApiClient) -> None:
    operator = await admin.new_user("Stats operator")
    boss = await admin.new_user("Stats boss", role="supervisor")
    mine = admin.as_token(await admin.token_for(operator["id"]))
    supervisor = admin.as_token(await admin.token_for(boss["id"]))
    for path in ("/stats/calls/agents", "/stats/calls/queues"):
        assert (await anonymous.get(path)).status == 401
        refused = await mine.get(path, params=HOUR)
        assert (refused.status, refused.error_code) == (403, "forbidden")
        assert (await supervisor.get(path, params=HOUR)).status == 200
        cases = [
            ({"since": HOUR["until"], "until": HOUR["since"]}, "invalid_period", "until", None),
            ({"since": HOUR["since"], "until": HOUR["since"]}, "invalid_period", "until", None),
            ({"since": "yesterday"}, "validation_error", "since", "datetime_from_date_parsing"),
            ({"until": "2031-05-05T10:00:00"}, "validation_error", "until", "timezone_aware"),
            ({"since": "9999-12-31T23:59:59-14:00"}, "validation_error", "since",
             "datetime_out_of_range"),
            ({"period": "day"}, "validation_error", "period", "extra_forbidden"),
        ]  # fmt: skip
        for params, code, field, detail in cases:
            reply = await admin.get(path, params=params)
            error = reply.body["error"]
            assert (reply.status, error["code"], error["field"]) == (422, code, field), params
            if detail is not None:
                assert error["errors"][0]["code"] == detail


async def test_timeline_lists_calls_and_dialogs_newest_first(
    admin: ApiClient, anonymous: ApiClient, hour: dict[str, Any]
) -> None:
    channel = await new_channel(admin, members=[hour["anna"]], check_availability=False)
    said = await customer_says(anonymous, channel, hour["customer"], name="Carla")
    dialog_id = said.body["dialog_id"]
    anna = admin.as_token(await admin.token_for(hour["anna"]))
    assert (await anna.post(f"/dialogs/{dialog_id}/messages", {"text": "hello"})).status == 201
    assert (await anna.post(f"/dialogs/{dialog_id}/close")).status == 200
    c1, c2, _, c4, day_before = hour["calls"]
    # Written as the blocklist matches numbers: punctuation and the + do not matter.
    digits = hour["customer"].removeprefix("+")
    phone = {"phone": f"{digits[:2]} ({digits[2:4]}) {digits[4:7]}-{digits[7:]}", "limit": "2"}
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        reply = await admin.get("/customers/timeline",
                                params=phone | ({"cursor": cursor} if cursor else {}))  # fmt: skip
        assert reply.status == 200, reply
        pages.append(reply.body["items"])
        cursor = reply.body["next_cursor"]
        if cursor is None:
            break
    # The dialog was opened today, before 2031's calls.
    assert [[(i["kind"], i["id"]) for i in page] for page in pages] == [
        [("call", c4), ("call", c2)], [("call", c1), ("call", day_before)],
        [("chat", dialog_id)],
    ]  # fmt: skip
    direct = pages[0][0]
    assert (direct["direction"], direct["outcome"], direct["duration_seconds"]) == (
        "inbound", "answered", 30.0)  # fmt: skip
    assert direct["handled_by"] == {"user_id": hour["anna"], "name": "Anna Stats"}
    assert direct["call"]["called"] == "2900" and direct["chat"] is None
    chat = pages[2][0]
    assert (chat["direction"], chat["outcome"]) == ("inbound", "closed")
    assert chat["handled_by"]["user_id"] == hour["anna"] and chat["duration_seconds"] >= 0
    assert chat["chat"]["customer_name"] == "Carla" and chat["call"] is None
    chat_customer = f"{channel['id']}:{hour['customer']}"
    by_chat = await admin.get("/customers/timeline", params={"chat_customer": chat_customer})
    assert [(i["kind"], i["id"]) for i in by_chat.body["items"]] == [("chat", dialog_id)]
    other = await admin.get("/customers/timeline", params={"phone": hour["other"]})
    assert [i["outcome"] for i in other.body["items"]] == ["abandoned"]
    assert other.body["items"][0]["handled_by"] is None


async def test_timeline_refuses_bad_input_precisely(admin: ApiClient, anonymous: ApiClient) -> None:
    cases: list[tuple[dict[str, str], str, str]] = [
        ({}, "customer_key_missing", "phone"),
        ({"phone": "+4930", "chat_customer": "1:x"}, "customer_key_conflict", "chat_customer"),
        ({"phone": "ann@example.com"}, "invalid_phone", "phone"),
        ({"phone": "12"}, "invalid_phone", "phone"),
        ({"chat_customer": "ann"}, "invalid_chat_customer", "chat_customer"),
        ({"chat_customer": "99999999999:ann"}, "invalid_chat_customer", "chat_customer"),
        ({"phone": "+4930123", "limit": "0"}, "validation_error", "limit"),
        ({"phone": "+4930123", "limit": "201"}, "validation_error", "limit"),
        ({"phone": "+4930123", "limit": "ten"}, "validation_error", "limit"),
        ({"phone": "+4930123", "cursor": "call.1"}, "invalid_cursor", "cursor"),
        ({"phone": "+4930123", "cursor": "call.1.999999999999999999"}, "invalid_cursor", "cursor"),
        ({"phone": "+4930123", "before": "x"}, "validation_error", "before"),
    ]
    for params, code, field in cases:
        reply = await admin.get("/customers/timeline", params=params)
        error = reply.body["error"]
        assert (reply.status, error["code"], error["field"]) == (422, code, field), params
    assert (await anonymous.get("/customers/timeline", params={"phone": "+4930123"})).status == 401
    operator = await admin.new_user("Timeline operator")
    mine = admin.as_token(await admin.token_for(operator["id"]))
    assert (await mine.get("/customers/timeline", params={"phone": "+4930123"})).status == 403
    empty = await admin.get("/customers/timeline", params={"phone": "+4930123"})
    assert empty.body == {"items": [], "limit": 50, "next_cursor": None}
