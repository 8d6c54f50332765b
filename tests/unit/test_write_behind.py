"""The write-behind writer: when a batch is due, the journal's lines and segments, and the
writer's batches, retries and flushes against an in-memory stand-in for SQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from acd.models import QueueLogRow
from acd.queue_log import QueueEvent, UnfinishedStay, unfinished_stays
from core.events import Event
from core.metrics import Metrics
from core.write_behind import (
    FLUSH_DELAY_S,
    MAX_BATCH_ROWS,
    RETRY_MAX_S,
    Change,
    Journal,
    WriteBehind,
    decode,
    encode,
    first_id_after,
    flush_delay,
    retry_delay,
)

T0 = 1000.0


@pytest.mark.parametrize(
    ("pending", "first_at", "now", "expected"),
    [
        (0, None, T0, None),  # nothing to write
        (1, T0, T0, FLUSH_DELAY_S),  # the first change starts the clock
        (5, T0, T0 + FLUSH_DELAY_S / 2, FLUSH_DELAY_S / 2),
        (5, T0, T0 + FLUSH_DELAY_S, 0.0),  # its delay is over
        (5, T0, T0 + 1.0, 0.0),  # late (a commit took long): at once, never negative
        (MAX_BATCH_ROWS, T0, T0, 0.0),  # a full batch does not wait
        (MAX_BATCH_ROWS + 7, T0, T0, 0.0),
    ],
)
def test_a_batch_is_due_when_full_or_its_delay_is_over(
    pending: int, first_at: float | None, now: float, expected: float | None
) -> None:
    delay = flush_delay(pending, first_at, now)
    assert delay == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(1, 0.1), (2, 0.2), (3, 0.4), (6, 3.2), (7, RETRY_MAX_S), (50, RETRY_MAX_S)],
)
def test_retries_back_off_up_to_a_ceiling(failures: int, expected: float) -> None:
    assert retry_delay(failures) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "kinds", "unreadable"),
    [
        ("", [], 0),
        (encode(Change("a", {"id": 1})), ["a"], 0),
        (encode(Change("a", {})) + encode(Change("b", {"x": [1, None]})), ["a", "b"], 0),
        # The process died in the middle of a line: the whole lines before it count.
        (encode(Change("a", {})) + '{"kind":"b","da', ["a"], 1),
        ('{"data":{}}\n' + encode(Change("c", {})), ["c"], 1),  # no kind
        ("\n\n" + encode(Change("a", {})) + "\n", ["a"], 0),
    ],
)
def test_journal_lines_decode_up_to_a_torn_one(
    text: str, kinds: list[str], unreadable: int
) -> None:
    changes, bad = decode(text)
    assert [c.kind for c in changes] == kinds
    assert bad == unreadable


def test_a_change_survives_the_journal_as_given() -> None:
    change = Change("call_open", {"id": 7, "at": "2024-05-01T10:00:00.123456+00:00", "u": None})
    assert decode(encode(change)) == ([change], 0)


def test_journal_segments_left_behind_are_found_in_order(tmp_path: Path) -> None:
    first = Journal(tmp_path)
    first.append(Change("a", {"n": 1}))
    sealed = first.seal()
    first.append(Change("a", {"n": 2}))
    first.drop(sealed)  # the first batch committed
    first.append(Change("a", {"n": 3}))
    # The process dies here: segment 2 was never committed.
    again = Journal(tmp_path)
    changes, bad = again.leftover()
    assert [c.data["n"] for c in changes] == [2, 3] and bad == 0
    again.append(Change("a", {"n": 4}))  # a new segment, after the old ones
    again.drop(again.seal())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([], []),
        (["enter", "offer", "no_answer"], [QueueEvent.FAILED]),  # still waiting
        (["enter"], [QueueEvent.FAILED]),
        (["enter", "offer", "connect"], [QueueEvent.COMPLETE]),  # talking
        (["enter", "connect", "complete"], []),
        (["enter", "abandon"], []),
        (["enter", "timeout"], []),
        (["enter", "exit_key"], []),
        (["full"], []),
        (["no_agents"], []),
        (["enter", "failed"], []),  # closed by an earlier start
    ],
)
def test_queue_stays_the_log_never_closed(events: list[str], expected: list[QueueEvent]) -> None:
    start = datetime(2024, 5, 1, 10, tzinfo=UTC)
    rows = [
        QueueLogRow(id=i, at=start + timedelta(seconds=i), queue_id=3, call_id=9, event=event)
        for i, event in enumerate(events)
    ]
    stays = unfinished_stays(rows)
    assert [s.closing for s in stays] == expected
    for stay in stays:
        assert stay == UnfinishedStay(3, 9, stay.closing, start)


def test_stays_are_told_apart_by_queue_and_call() -> None:
    at = datetime(2024, 5, 1, 10, tzinfo=UTC)
    rows = [
        QueueLogRow(id=1, at=at, queue_id=1, call_id=5, event="enter"),
        QueueLogRow(id=2, at=at, queue_id=1, call_id=6, event="enter"),
        QueueLogRow(id=3, at=at, queue_id=1, call_id=5, event="timeout"),
        QueueLogRow(id=4, at=at, queue_id=2, call_id=5, event="enter"),  # its overflow queue
    ]
    assert {(s.queue_id, s.call_id) for s in unfinished_stays(rows)} == {(1, 6), (2, 5)}


# -- the writer, against an in-memory stand-in for SQL ----------------------------------------


class FakeTransaction(list[dict[str, Any]]):
    """The changes applied in one transaction; `info` as a SQLAlchemy session has it."""

    def __init__(self) -> None:
        super().__init__()
        self.info: dict[str, Any] = {}


class FakeSql:
    """Transactions as lists of applied changes; the first `failures` commits fail."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.committed: list[list[dict[str, Any]]] = []
        self.begun = 0
        self.gate: asyncio.Event | None = None  # when set up, commits wait for it

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[list[dict[str, Any]]]:
        transaction = FakeTransaction()
        self.begun += 1
        yield transaction
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise OperationalError("COMMIT", {}, Exception("database is locked"))
        self.committed.append(transaction)

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[Any]:
        yield FakeReads()


class FakeReads:
    async def scalar(self, _query: Any) -> int:
        return 41


class FakeEvents:
    def __init__(self) -> None:
        self.staged = 0
        self.published: list[Event] = []

    async def stage(self, _session: Any, type_: str, data: dict[str, Any]) -> Event:
        self.staged += 1
        return Event(self.staged, type_, datetime.now(UTC), data)

    async def stage_many(self, session: Any, staged: list[tuple[str, dict[str, Any]]]
                         ) -> list[Event]:  # fmt: skip
        return [await self.stage(session, type_, data) for type_, data in staged]

    async def publish(self, *events: Event) -> None:
        self.published.extend(events)


async def _apply(transaction: list[dict[str, Any]], data: dict[str, Any]) -> Any:
    transaction.append(data)
    return [("thing_written", data)]


def make_writer(folder: Path, sql: FakeSql, events: FakeEvents) -> WriteBehind:
    writer = WriteBehind(folder, sql, events, Metrics(), retry_first_s=0.001)  # type: ignore[arg-type]
    writer.register("thing", _apply)
    writer.sequence("things", QueueLogRow.id)  # type: ignore[arg-type]
    return writer


async def test_changes_submitted_together_commit_in_one_transaction_then_publish_in_order(
    tmp_path: Path,
) -> None:
    sql, events = FakeSql(), FakeEvents()
    writer = make_writer(tmp_path, sql, events)
    await writer.start()
    assert writer.next_id("things") == 42  # after the largest id in SQL
    for n in range(5):
        writer.submit("thing", {"n": n})
    assert sql.committed == []  # nothing awaited, nothing written yet
    await writer.flush()
    assert sql.committed == [[{"n": n} for n in range(5)]]
    assert [e.data["n"] for e in events.published] == list(range(5))
    assert list(tmp_path.iterdir()) == []  # the committed segment is gone
    await writer.stop()


async def test_a_full_batch_does_not_wait_for_its_delay(tmp_path: Path) -> None:
    sql, events = FakeSql(), FakeEvents()
    writer = make_writer(tmp_path, sql, events)
    await writer.start()
    for n in range(MAX_BATCH_ROWS):
        writer.submit("thing", {"n": n})
    for _ in range(10):  # a few turns of the loop, far less than FLUSH_DELAY_S
        await asyncio.sleep(0)
    assert [len(t) for t in sql.committed] == [MAX_BATCH_ROWS]
    await writer.stop()


async def test_batches_commit_and_publish_in_the_order_submitted(tmp_path: Path) -> None:
    sql, events = FakeSql(), FakeEvents()
    writer = make_writer(tmp_path, sql, events)
    await writer.start()
    sql.gate = asyncio.Event()
    writer.submit("thing", {"n": 1})
    first = asyncio.ensure_future(writer.flush())
    while not sql.begun:
        await asyncio.sleep(0)
    writer.submit("thing", {"n": 2})  # while the first batch is under way
    writer.submit("thing", {"n": 3})
    sql.gate.set()
    await writer.flush()
    assert first.done()
    assert sql.committed == [[{"n": 1}], [{"n": 2}, {"n": 3}]]
    assert [e.data["n"] for e in events.published] == [1, 2, 3]
    await writer.stop()


async def test_a_failing_commit_is_retried_and_loses_nothing(tmp_path: Path) -> None:
    sql, events = FakeSql(failures=3), FakeEvents()
    writer = make_writer(tmp_path, sql, events)
    await writer.start()
    writer.submit("thing", {"n": 1})
    writer.submit("thing", {"n": 2})
    await asyncio.wait_for(writer.flush(), 5)
    assert sql.committed == [[{"n": 1}, {"n": 2}]]
    assert [e.data["n"] for e in events.published] == [1, 2]  # only the committed try's
    await writer.stop()


async def test_stop_commits_what_is_queued(tmp_path: Path) -> None:
    sql, events = FakeSql(), FakeEvents()
    writer = make_writer(tmp_path, sql, events)
    await writer.start()
    writer.submit("thing", {"n": 1})
    await writer.stop()
    assert sql.committed == [[{"n": 1}]]
    assert list(tmp_path.iterdir()) == []


async def test_an_abandoned_writers_journal_is_replayed_by_the_next(tmp_path: Path) -> None:
    crashed_sql = FakeSql(failures=10**6)  # its commits never succeed: as if it died
    crashed = make_writer(tmp_path, crashed_sql, FakeEvents())
    await crashed.start()
    crashed.submit("thing", {"n": 1})
    crashed.submit("thing", {"n": 2})
    sql, events = FakeSql(), FakeEvents()
    replayed = await make_writer(tmp_path, sql, events).start()
    assert replayed == 2
    assert sql.committed == [[{"n": 1}, {"n": 2}]]
    assert [e.type for e in events.published] == ["thing_written"] * 2


def test_an_unknown_kind_is_refused_at_once(tmp_path: Path) -> None:
    writer = make_writer(tmp_path, FakeSql(), FakeEvents())
    with pytest.raises(KeyError):
        writer.submit("nothing", {})


@pytest.mark.parametrize(
    ("highest", "stride", "residue", "first"),
    [
        (0, 1, 0, 1),
        (41, 1, 0, 42),
        (0, 8, 0, 8),
        (0, 8, 3, 3),
        (40, 8, 0, 48),
        (40, 8, 1, 41),
        (47, 8, 7, 55),
    ],
)
def test_a_node_hands_out_ids_of_its_own_residue_above_the_highest(
    highest: int, stride: int, residue: int, first: int
) -> None:
    assert first_id_after(highest, stride, residue) == first
