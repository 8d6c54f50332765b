"""ACD tables: queues and their members, the queue log, presence history, forwarding rules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UtcDateTime, utcnow


class QueueRow(Base):
    __tablename__ = "queues"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    strategy: Mapped[str] = mapped_column(String(16))
    ring_timeout: Mapped[int] = mapped_column(Integer)
    wrap_up_time: Mapped[int] = mapped_column(Integer)
    # Calls connected through this queue are recorded (flows.recording).
    record_calls: Mapped[bool] = mapped_column(default=False)
    # 0: no limit.
    max_wait: Mapped[int] = mapped_column(Integer)
    max_length: Mapped[int] = mapped_column(Integer)
    # wait | overflow: what a caller gets while no member is logged in.
    when_no_agents: Mapped[str] = mapped_column(String(16))
    overflow: Mapped[dict[str, Any]] = mapped_column(JSON)
    # A prompt of the library played in a loop; null: the built-in hold tone.
    hold_music_prompt_id: Mapped[int | None] = mapped_column(
        ForeignKey("prompts.id"), default=None, index=True
    )
    # Seconds between "you are caller 2, about 1 minute"; 0: never.
    announce_interval: Mapped[int] = mapped_column(Integer)
    # A DTMF key that leaves the queue for the overflow destination; null: none.
    exit_key: Mapped[str | None] = mapped_column(String(1), default=None)
    # A DTMF key with which a waiting caller asks to be called back (flows.callback).
    callback_key: Mapped[str | None] = mapped_column(String(1), default=None)
    # Calls to the customer before a callback is given up, and the seconds between them.
    callback_attempts: Mapped[int] = mapped_column(Integer, default=3)
    callback_retry_interval: Mapped[int] = mapped_column(Integer, default=300)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class QueueMemberRow(Base):
    __tablename__ = "queue_members"

    queue_id: Mapped[int] = mapped_column(
        ForeignKey("queues.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    position: Mapped[int] = mapped_column(Integer)


class QueueLogRow(Base):
    """What happened to each caller in a queue, for reports (Asterisk's queue_log, in SQL)."""

    __tablename__ = "queue_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    queue_id: Mapped[int] = mapped_column(Integer, index=True)
    call_id: Mapped[int] = mapped_column(Integer, index=True)
    # enter | offer | no_answer | connect | abandon | timeout | exit_key | overflow | complete
    event: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[int | None] = mapped_column(Integer, default=None)
    # Seconds the caller had waited when this happened.
    wait_seconds: Mapped[float | None] = mapped_column(Float, default=None)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class PresenceHistoryRow(Base):
    __tablename__ = "presence_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64), default=None)
    message: Mapped[str | None] = mapped_column(String(200), default=None)
    activity: Mapped[str] = mapped_column(String(16))
    # Who or what changed it: "user:<id>", "call", "offer", "wrap_up", "restart", ...
    cause: Mapped[str] = mapped_column(String(32))


class ForwardingRow(Base):
    """Where a user's direct calls go, per presence status (and busy / no answer)."""

    __tablename__ = "forwarding"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    rules: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class CallbackRow(Base):
    """A caller's request to be called back, kept from the key press until it is done."""

    __tablename__ = "callbacks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    queue_id: Mapped[int] = mapped_column(Integer, index=True)
    # The call in which the caller asked (its queue log goes on under this id).
    call_id: Mapped[int] = mapped_column(Integer, index=True)
    # Whom to call, and the company number they had called (shown to them as the caller).
    number: Mapped[str] = mapped_column(String(32))
    shown_number: Mapped[str] = mapped_column(String(128))
    # That company number records its calls (flows.recording): so does the callback.
    number_records: Mapped[bool] = mapped_column(default=False)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    # When the caller entered the queue: their place in it.
    entered_at: Mapped[datetime] = mapped_column(UtcDateTime)
    requested_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    # pending | calling | completed | failed | cancelled (acd.callback_rules.CallbackState)
    state: Mapped[str] = mapped_column(String(16), index=True)
    # Attempts that counted against the customer (agent_left does not).
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    # Each attempt: {"at", "user_id", "call_id", "result"}, oldest first.
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # The agent of the attempt under way or of the one that reached the customer.
    user_id: Mapped[int | None] = mapped_column(Integer, default=None)
    # The customer answered in the attempt under way (a restart then completes it).
    connected: Mapped[bool] = mapped_column(default=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
