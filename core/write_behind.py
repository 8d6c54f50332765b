"""Write-behind: row changes the call path hands over without waiting for SQL, journaled to a
local file at once and committed in batches, one transaction each, with their events.

Why: at 100 callers, one write transaction per call step (open, leg, answer, end, every
queue-log row) queued on SQLite's single write lock and emptied the connection pool, and
callers heard "500 Call flow failed". A change is now a journal line (a plain append, no
fsync: surviving a crash of the process is the goal, not a power cut) plus an entry in memory;
one task commits the entries in batches and then deletes the journal segments they came from.
At the next start the journal left behind is replayed first, so appliers must be idempotent
(a crash between a commit and the deletion replays committed changes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import structlog
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from core.db import SessionFactory
from core.events import Event, EventBus
from core.metrics import Metrics

log = structlog.get_logger(__name__)

# A batch is committed when this many changes wait, or FLUSH_DELAY_S after the first one.
# 200 rows commit in a few milliseconds on SQLite (one WAL append), so the write lock is never
# held long enough to make an API write wait; a call makes about 5 to 10 changes, so 100
# callers starting together fill one or two batches instead of 1,000 transactions.
MAX_BATCH_ROWS = 200
# 20 ms: at most 50 write transactions a second from the call path whatever the load, while
# a record still shows in the API (and its event on the stream) well under a second after
# the step, which is what a wallboard or a test waiting for `call_ended` notices.
FLUSH_DELAY_S = 0.020
# A failed commit (SQLite busy past its 5 s timeout, PostgreSQL restarting) is retried after
# 0.1, 0.2, 0.4 ... s, at most 5 s apart: the rows stay journaled and queued meanwhile.
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0
# How long stop() keeps trying to commit before leaving the rest to the journal.
STOP_TIMEOUT_S = 10.0
# One summary line at most this often (and at stop), never a line per row.
SUMMARY_INTERVAL_S = 60.0
SEGMENT_SUFFIX = ".jsonl"

# Turns one change into SQL inside the batch's transaction; returns the events it causes,
# as (type, data), in order. Called again for changes already committed when the journal is
# replayed after a crash, so it must then change nothing and return no event.
Staged = list[tuple[str, dict[str, Any]]]
Applier = Callable[[AsyncSession, dict[str, Any]], Awaitable[Staged]]


@dataclass(frozen=True)
class Change:
    kind: str  # which applier
    data: dict[str, Any]  # JSON values only: it is journaled as given


_REPLAYING = "write_behind_replaying"


async def already_written(session: AsyncSession, model: type[Any], row_id: int) -> bool:
    """Whether a row an applier inserts is in SQL already: only possible when the journal of
    a crashed run is replayed (ids come from memory, so the id tells), so only asked then;
    in normal running it would cost a SELECT per row for nothing."""
    if not session.info.get(_REPLAYING):
        return False
    return await session.get(model, row_id) is not None


# -- pure parts -------------------------------------------------------------------------------


def encode(change: Change) -> str:
    return json.dumps({"kind": change.kind, "data": change.data}, separators=(",", ":")) + "\n"


def decode(text: str) -> tuple[list[Change], int]:
    """The changes in a journal segment, and how many lines could not be read (a line cut
    short by the crash: only its process died, so at most the last one)."""
    changes: list[Change] = []
    unreadable = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            changes.append(Change(str(entry["kind"]), dict(entry["data"])))
        except (ValueError, KeyError, TypeError):
            unreadable += 1
    return changes, unreadable


def flush_delay(pending: int, first_queued_at: float | None, now: float) -> float | None:
    """Seconds until the pending changes should be committed: None with nothing pending,
    0 for at once."""
    if pending == 0 or first_queued_at is None:
        return None
    if pending >= MAX_BATCH_ROWS:
        return 0.0
    return max(0.0, first_queued_at + FLUSH_DELAY_S - now)


def retry_delay(failures: int, first_s: float = RETRY_FIRST_S) -> float:
    """The wait after the `failures`-th failed commit in a row (1, 2, ...)."""
    return min(RETRY_MAX_S, first_s * 2.0 ** max(0, failures - 1))


def first_id_after(highest: int, stride: int, residue: int) -> int:
    """The smallest id above `highest` that is `residue` modulo `stride`."""
    candidate = highest + 1
    return candidate + (residue - candidate) % stride


# -- the journal ------------------------------------------------------------------------------


class Journal:
    """Numbered segment files in one folder. Changes are appended to the open segment; a
    batch seals it (later changes start the next one) and deletes the sealed segments once
    their changes are committed. What is left at start is what was never known committed."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._sealed: list[Path] = sorted(folder.glob("*" + SEGMENT_SUFFIX))
        numbers = [int(p.stem) for p in self._sealed if p.stem.isdigit()]
        self._next_number = max(numbers, default=0) + 1
        self._current: IO[str] | None = None
        self._current_path: Path | None = None

    def leftover(self) -> tuple[list[Change], int]:
        """Changes in the segments found at start, oldest first, and unreadable lines."""
        changes: list[Change] = []
        unreadable = 0
        for path in self._sealed:
            found, bad = decode(path.read_text(encoding="utf-8", errors="replace"))
            changes.extend(found)
            unreadable += bad
        return changes, unreadable

    def append(self, change: Change) -> None:
        if self._current is None:
            self._current_path = self._folder / f"{self._next_number:010d}{SEGMENT_SUFFIX}"
            self._next_number += 1
            self._current = self._current_path.open("a", encoding="utf-8")
        self._current.write(encode(change))
        # To the kernel now: a process crash loses nothing the OS has (no fsync on purpose).
        self._current.flush()

    def seal(self) -> list[Path]:
        """Closes the open segment; every segment holding changes not yet committed."""
        if self._current is not None and self._current_path is not None:
            self._current.close()
            self._sealed.append(self._current_path)
            self._current = None
            self._current_path = None
        return list(self._sealed)

    def drop(self, committed: Iterable[Path]) -> None:
        for path in committed:
            path.unlink(missing_ok=True)
            with contextlib.suppress(ValueError):
                self._sealed.remove(path)

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None


# -- the writer -------------------------------------------------------------------------------


class WriteBehind:
    """`submit` journals a change and queues it (no await, no SQL); one task commits the
    queue in batches and publishes the batch's events after the commit, in order."""

    def __init__(
        self,
        folder: Path,
        sessions: SessionFactory,
        events: EventBus,
        metrics: Metrics,
        *,
        retry_first_s: float = RETRY_FIRST_S,
        id_stride: int = 1,
        id_residue: int = 0,
    ) -> None:
        """`id_stride`, `id_residue`: this process hands out only ids of that residue modulo
        that stride, so that processes sharing the database (a cluster's nodes) never hand
        out the same id."""
        self._journal = Journal(folder)
        self._id_stride = id_stride
        self._id_residue = id_residue
        self._retry_first_s = retry_first_s
        self._sessions = sessions
        self._events = events
        self._metrics = metrics
        self._appliers: dict[str, Applier] = {}
        self._sequences: dict[str, InstrumentedAttribute[int]] = {}
        self._next_ids: dict[str, int] = {}
        self._pending: list[Change] = []
        self._first_queued_at: float | None = None
        self._submitted = 0  # changes submitted since start
        self._committed = 0  # of those, committed
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._arrived = asyncio.Event()
        self._urgent = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._summary = _Summary()

    # -- set-up -------------------------------------------------------------------------------

    def register(self, kind: str, apply: Applier) -> None:
        self._appliers[kind] = apply

    def sequence(self, name: str, column: InstrumentedAttribute[int]) -> None:
        """Ids of `column` are handed out by `next_id(name)`, from its max at start: the
        call path needs a call's id before its row exists. Processes sharing the database
        each need a residue of their own (see __init__); PostgreSQL's serial sequence is not
        advanced, so nothing else may insert there."""
        self._sequences[name] = column

    def next_id(self, name: str) -> int:
        value = self._next_ids[name]
        self._next_ids[name] = value + self._id_stride
        return value

    async def start(self) -> int:
        """Replays what the journal kept from the last run into SQL, reads the id sequences,
        starts the writing task; returns how many changes were replayed."""
        leftover, unreadable = self._journal.leftover()
        if unreadable:
            log.error("write_behind_journal_lines_unreadable", lines=unreadable)
        if leftover:
            segments = self._journal.seal()
            for start in range(0, len(leftover), MAX_BATCH_ROWS):
                await self._commit(leftover[start : start + MAX_BATCH_ROWS], replaying=True)
            self._journal.drop(segments)
            log.warning("write_behind_journal_replayed", changes=len(leftover))
        await self.read_sequences()
        self._task = asyncio.create_task(self._run(), name="write-behind")
        return len(leftover)

    async def read_sequences(self) -> None:
        """Hand out ids after the highest in SQL: at start, and when this node takes over
        from another (controller.seat), whose rows came after this node's start."""
        async with self._sessions() as session:
            for name, column in self._sequences.items():
                highest = await session.scalar(select(func.max(column))) or 0
                above = first_id_after(highest, self._id_stride, self._id_residue)
                # Never back: rows of ours may still wait to be written.
                self._next_ids[name] = max(above, self._next_ids.get(name, 0))

    # -- the call path ------------------------------------------------------------------------

    def submit(self, kind: str, data: dict[str, Any]) -> None:
        """Journals the change, then queues it. Raises OSError if the journal cannot be
        written: a change nobody could recover must not look accepted."""
        if kind not in self._appliers:
            raise KeyError(f"no applier for {kind!r}")
        change = Change(kind, data)
        self._journal.append(change)
        self._pending.append(change)
        self._submitted += 1
        if self._first_queued_at is None:
            self._first_queued_at = time.monotonic()
            self._arrived.set()
        if len(self._pending) >= MAX_BATCH_ROWS:
            self._urgent.set()
        self._metrics.write_behind_pending.set(self._submitted - self._committed)

    async def flush(self) -> None:
        """Returns once every change submitted so far is committed."""
        target = self._submitted
        if self._committed >= target:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((target, waiter))
        self._urgent.set()
        self._arrived.set()
        await waiter

    async def stop(self) -> None:
        """Commits everything queued (for up to STOP_TIMEOUT_S; what is left stays in the
        journal for the next start), then stops the task."""
        self._stopping = True
        self._urgent.set()
        self._arrived.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), STOP_TIMEOUT_S)
            except TimeoutError:
                log.error("write_behind_stop_timed_out", left_in_journal=len(self._pending))
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        self._journal.close()
        self._summary.log(force=True)
        for _target, waiter in self._waiters:
            if not waiter.done():
                waiter.cancel()

    # -- the writing task -----------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._stopping:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            delay = flush_delay(len(self._pending), self._first_queued_at, time.monotonic())
            if delay and not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), delay)
            self._urgent.clear()
            batch, self._pending, self._first_queued_at = self._pending, [], None
            segments = self._journal.seal()
            await self._commit(batch)
            self._journal.drop(segments)
            self._committed += len(batch)
            self._metrics.write_behind_pending.set(self._submitted - self._committed)
            self._wake_waiters()

    async def _commit(self, batch: list[Change], *, replaying: bool = False) -> None:
        """One transaction for the batch, retried until it commits; then its events."""
        failures = 0
        while True:
            started = time.perf_counter()
            try:
                events = await self._write(batch, replaying=replaying)
            except Exception as exc:
                # SQL errors (busy, connection lost) mostly; an applier's bug is retried the
                # same way rather than ending the task: rows stay journaled, the failure
                # counter and the log show it, and nothing after it is silently lost.
                failures += 1
                if failures == 1:  # once per burst; the recovery line says how long it took
                    log.error("write_behind_commit_failed", rows=len(batch), error=repr(exc))
                self._metrics.write_behind_failures.inc()
                await asyncio.sleep(retry_delay(failures, self._retry_first_s))
                continue
            elapsed = time.perf_counter() - started
            break
        if failures:
            log.warning("write_behind_commit_recovered", rows=len(batch), failures=failures)
        self._metrics.write_behind_flush.observe(elapsed)
        for change in batch:
            self._metrics.write_behind_rows.labels(kind=change.kind).inc()
        self._summary.add(len(batch), elapsed)
        await self._events.publish(*events)
        self._summary.log()

    async def _write(self, batch: list[Change], *, replaying: bool = False) -> list[Event]:
        staged: Staged = []
        async with self._sessions.begin() as session:
            session.info[_REPLAYING] = replaying
            for change in batch:
                apply = self._appliers.get(change.kind)
                if apply is None:  # a journal from another version of the code
                    log.error("write_behind_unknown_change", kind=change.kind)
                    continue
                staged += await apply(session, change.data)
            return await self._events.stage_many(session, staged) if staged else []

    def _wake_waiters(self) -> None:
        waiting = []
        for target, waiter in self._waiters:
            if target <= self._committed:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                waiting.append((target, waiter))
        self._waiters = waiting


class _Summary:
    """Rows and batches written since the last summary line."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._since = time.monotonic()
        self._rows = 0
        self._batches = 0
        self._slowest = 0.0

    def add(self, rows: int, seconds: float) -> None:
        self._rows += rows
        self._batches += 1
        self._slowest = max(self._slowest, seconds)

    def log(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self._batches or (not force and now - self._since < SUMMARY_INTERVAL_S):
            return
        log.info("write_behind_summary", rows=self._rows, batches=self._batches,
                 slowest_commit_s=round(self._slowest, 4),
                 interval_s=round(now - self._since, 1))  # fmt: skip
        self._reset()
