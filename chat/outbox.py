"""Reply delivery: every outgoing message sits in the outbox until its channel's reply_url
answers 2xx. POSTs are signed with HMAC-SHA256 over the body, retried with doubling backoff
for as long as it takes, and delivered in order within a dialog (a later reply waits for an
earlier one), so nothing is lost or reordered by a receiver that is down for a while."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from chat.models import ChannelRow, ChatMessageRow, DialogRow, OutboxRow
from core.background import PassLoop
from core.context import ServiceContext

log = structlog.get_logger(__name__)

SIGNATURE_HEADER = "X-Channel-Signature"
MESSAGE_ID_HEADER = "X-Channel-Message-Id"
# Even with no event, look for retries that fell due this often.
TICK_S = 1.0
# Nothing waits for a retry: only a new reply (its message_sent event wakes the loop) can
# give it work; this is a safety net.
IDLE_S = 60.0
BATCH = 200
PARALLEL_POSTS = 16


@dataclass(frozen=True)
class Delivery:
    outbox_id: int
    message_id: int
    attempts: int
    url: str | None
    secret: str
    body: bytes


def backoff_seconds(attempts: int, *, first: float, cap: float) -> float:
    """Wait after the `attempts`-th failure: first, 2*first, 4*first, ... at most cap."""
    return float(min(cap, first * 2 ** max(0, attempts - 1)))


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def queue_delivery(session: AsyncSession | Session, message: ChatMessageRow, now: datetime) -> None:
    session.add(OutboxRow(message_id=message.id, dialog_id=message.dialog_id, attempts=0,
                          next_attempt_at=now))  # fmt: skip


class OutboxDelivery:
    """The one task that posts replies; `deliver_due(now)` is one pass, for tests too."""

    def __init__(self, ctx: ServiceContext, clock: Callable[[], float] = time.time) -> None:
        self._ctx = ctx
        self._clock = clock
        self._loop = PassLoop(
            "chat-outbox", self._pass, wakes_on=lambda kind: kind == "message_sent", retry_s=TICK_S
        )
        self._http: aiohttp.ClientSession | None = None
        # The earliest retry the last pass saw ahead of it (a dialog's head reply), if any.
        self._upcoming: datetime | None = None

    def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self._ctx.settings.chat.delivery_timeout_seconds)
        self._http = aiohttp.ClientSession(timeout=timeout)
        self._loop.start(self._ctx.wakeups)

    async def stop(self) -> None:
        await self._loop.stop()
        if self._http is not None:
            await self._http.close()

    def wake(self) -> None:
        self._loop.wake()

    async def deliver_due(self, now: float) -> int:
        """Post every due head-of-dialog message once; returns how many were delivered."""
        self._upcoming = None
        due = await self._due(now)
        if not due:
            return 0
        gate = asyncio.Semaphore(PARALLEL_POSTS)

        async def post(delivery: Delivery) -> tuple[Delivery, str | None]:
            async with gate:
                return delivery, await self._post(delivery)

        results = await asyncio.gather(*(post(d) for d in due))
        await self._record(results, now)
        return sum(1 for _, error in results if error is None)

    async def _due(self, now: float) -> list[Delivery]:
        async with self._ctx.sessions() as session:
            rows = await session.execute(
                select(OutboxRow, ChatMessageRow, DialogRow.customer_id, ChannelRow.reply_url,
                       ChannelRow.secret, DialogRow.channel_id)
                .join(ChatMessageRow, ChatMessageRow.id == OutboxRow.message_id)
                .join(DialogRow, DialogRow.id == OutboxRow.dialog_id)
                .join(ChannelRow, ChannelRow.id == DialogRow.channel_id)
                .where(OutboxRow.delivered_at.is_(None))
                .order_by(OutboxRow.id)
                .limit(BATCH)
            )  # fmt: skip
        heads: set[int] = set()
        due = []
        moment = datetime.fromtimestamp(now, UTC)
        for outbox, message, customer_id, url, secret, channel_id in rows:
            if outbox.dialog_id in heads:
                continue  # an earlier reply of this dialog is still on its way
            heads.add(outbox.dialog_id)
            if outbox.next_attempt_at > moment:
                self._note_upcoming(outbox.next_attempt_at)
                continue
            body = json.dumps({
                "channel_id": channel_id, "dialog_id": outbox.dialog_id,
                "message_id": message.id, "customer": {"id": customer_id},
                "text": message.text, "author_id": message.author_id,
                "sent_at": message.created_at.isoformat(),
            }).encode()  # fmt: skip
            due.append(Delivery(outbox.id, message.id, outbox.attempts, url, secret, body))
        return due

    async def _post(self, delivery: Delivery) -> str | None:
        """None when the receiver took it, else why not."""
        if delivery.url is None:
            return "the channel has no reply_url"
        assert self._http is not None
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(delivery.secret, delivery.body),
            MESSAGE_ID_HEADER: str(delivery.outbox_id),
        }
        try:
            async with self._http.post(delivery.url, data=delivery.body, headers=headers) as r:
                if 200 <= r.status < 300:
                    return None
                return f"HTTP {r.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}"[:500]

    async def _record(self, results: list[tuple[Delivery, str | None]], now: float) -> None:
        chat = self._ctx.settings.chat
        moment = datetime.fromtimestamp(now, UTC)
        events = []
        async with self._ctx.sessions.begin() as session:
            for delivery, error in results:
                attempts = delivery.attempts + 1
                if error is None:
                    values = {"attempts": attempts, "delivered_at": moment, "last_error": None}
                else:
                    wait = backoff_seconds(attempts, first=chat.delivery_retry_seconds,
                                           cap=chat.delivery_retry_max_seconds)  # fmt: skip
                    retry_at = moment + timedelta(seconds=wait)
                    values = {"attempts": attempts, "last_error": error,
                              "next_attempt_at": retry_at}  # fmt: skip
                    self._note_upcoming(retry_at)
                await session.execute(
                    update(OutboxRow).where(OutboxRow.id == delivery.outbox_id).values(**values)
                )
                if error is None:
                    events.append(await self._ctx.events.stage(session, "message_delivered", {
                        "message_id": delivery.message_id, "attempts": attempts,
                    }))  # fmt: skip
                else:
                    log.warning("reply_delivery_failed", outbox_id=delivery.outbox_id,
                                attempts=attempts, error=error)  # fmt: skip
        await self._ctx.events.publish(*events)
        for _, error in results:
            self._ctx.metrics.chat_deliveries.labels(
                result="delivered" if error is None else "failed"
            ).inc()

    def _note_upcoming(self, at: datetime) -> None:
        if self._upcoming is None or at < self._upcoming:
            self._upcoming = at

    async def _pass(self) -> float:
        if await self.deliver_due(self._clock()):
            return 0  # the next reply of those dialogs may be waiting
        if self._upcoming is None:
            return IDLE_S
        # A timer for the next retry instead of a look every second.
        return min(IDLE_S, max(TICK_S / 20, self._upcoming.timestamp() - self._clock()))
