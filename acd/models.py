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
