"""At start-up, the calls the last run left open (it stopped or crashed under them) are
closed, hung up by the system: their record as answered if a person had answered (the talk
happened; on a media host it may even go on, pbx.media_host), else as failed; and their
unfinished queue stays. With media hosts, the calls of callers waiting on there stay open for
the controller that takes them over (acd.queue_places)."""

from __future__ import annotations

import structlog

from acd.queue_log import QueueEvent, record, rows_of_calls, unfinished_stays
from acd.queue_places import kept_calls
from core.context import ServiceContext
from ivr.cdr import Disposition, open_calls, submit_end

log = structlog.get_logger(__name__)


async def close_interrupted_calls(ctx: ServiceContext, *, only: set[int] | None = None) -> int:
    """Run after the write-behind journal was replayed and before any call is taken. Each
    call ends at the last time anything known happened to it (its record or queue log), with
    its `call_ended` event; returns how many were closed. `only`: just these calls (kept
    ones that nobody took over)."""
    found = await open_calls(ctx)
    if only is not None:
        found = {call_id: known for call_id, known in found.items() if call_id in only}
    elif ctx.settings.cluster.media_hosts:
        kept = await kept_calls(ctx.redis)
        found = {call_id: known for call_id, known in found.items() if call_id not in kept}
    if not found:
        return 0
    last_known = {call_id: at for call_id, (at, _) in found.items()}
    queue_rows = await rows_of_calls(ctx, last_known)
    for row in queue_rows:
        last_known[row.call_id] = max(last_known[row.call_id], row.at)
    for stay in unfinished_stays(queue_rows):
        at = last_known[stay.call_id]
        wait = (at - stay.entered_at).total_seconds() if stay.entered_at is not None else None
        if stay.closing is QueueEvent.COMPLETE:
            record(ctx, stay.queue_id, stay.call_id, stay.closing, at=at, hangup_by="system")
        else:
            record(ctx, stay.queue_id, stay.call_id, stay.closing, at=at, wait_seconds=wait)
    for call_id, at in last_known.items():
        answered = found[call_id][1]
        disposition = Disposition.ANSWERED if answered else Disposition.FAILED
        submit_end(ctx, call_id, at, disposition, "system")
    await ctx.writes.flush()
    log.warning("interrupted_calls_closed", calls=len(last_known))
    return len(last_known)
