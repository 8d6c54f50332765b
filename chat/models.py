"""Chat tables: channels and their members, dialogs with their messages and offers, the reply
outbox, canned responses and the blocklist."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UtcDateTime, utcnow


class ChannelRow(Base):
    __tablename__ = "channels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # webhook now; messenger and email connectors later.
    type: Mapped[str] = mapped_column(String(16))
    distribution: Mapped[str] = mapped_column(String(16))
    check_availability: Mapped[bool] = mapped_column(Boolean)
    # Per agent in this channel; null: only the hard cap.
    max_open_dialogs: Mapped[int | None] = mapped_column(Integer, default=None)
    # Dialog states the limit does not count (closed never counts).
    exclude_answered: Mapped[bool] = mapped_column(Boolean, default=False)
    exclude_waiting: Mapped[bool] = mapped_column(Boolean, default=False)
    # Seconds an assigned dialog may stay unanswered before it moves on; 0: never.
    idle_seconds: Mapped[int] = mapped_column(Integer)
    reply_url: Mapped[str | None] = mapped_column(String(2000), default=None)
    # Checks X-Channel-Secret on inbound messages and signs outgoing replies (HMAC-SHA256).
    secret: Mapped[str] = mapped_column(String(64))
    working_hours: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    off_hours_reply: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ChannelMemberRow(Base):
    __tablename__ = "channel_members"

    channel_id: Mapped[int] = mapped_column(
        ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    position: Mapped[int] = mapped_column(Integer)


class DialogRow(Base):
    __tablename__ = "dialogs"
    __table_args__ = (
        # One open dialog per customer per channel, race-free.
        Index(
            "uq_dialogs_open_customer", "channel_id", "customer_id", unique=True,
            sqlite_where=text("state != 'closed'"), postgresql_where=text("state != 'closed'"),
        ),
        Index("ix_dialogs_assignee_state", "assignee_id", "state"),
        Index("ix_dialogs_state_queued", "state", "queued_at"),
        # A customer's timeline: their dialogs, newest first.
        Index("ix_dialogs_customer_created", "customer_id", "created_at"),
    )  # fmt: skip

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(String(200))
    customer_name: Mapped[str | None] = mapped_column(String(200), default=None)
    # new | assigned | answered | waiting | closed
    state: Mapped[str] = mapped_column(String(16))
    spam: Mapped[bool] = mapped_column(Boolean, default=False)
    assignee_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # When it (re-)entered its channel's queue: the queue's order.
    queued_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    assigned_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    first_assigned_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    # Unanswered past this, the dialog moves to the next agent (null: never).
    idle_deadline: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None, index=True)
    # Agents it already sat idle with, skipped when it moves on.
    tried: Mapped[list[int]] = mapped_column(JSON, default=list)
    first_response_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    first_response_by: Mapped[int | None] = mapped_column(Integer, default=None)
    last_message_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    # "user:<id>", "admin", "spam", "channel_deleted"...
    closed_by: Mapped[str | None] = mapped_column(String(32), default=None)
    rating: Mapped[int | None] = mapped_column(Integer, default=None)


class DialogOfferRow(Base):
    """to_all: the agents a waiting dialog is shown to; the first to claim it takes it."""

    __tablename__ = "dialog_offers"

    dialog_id: Mapped[int] = mapped_column(
        ForeignKey("dialogs.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class ChatMessageRow(Base):
    __tablename__ = "chat_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dialog_id: Mapped[int] = mapped_column(ForeignKey("dialogs.id", ondelete="CASCADE"), index=True)
    # in: from the customer; out: to the customer.
    direction: Mapped[str] = mapped_column(String(3))
    # The agent who wrote an outgoing message; null for the customer and auto-replies.
    author_id: Mapped[int | None] = mapped_column(Integer, default=None)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class OutboxRow(Base):
    """An outgoing message until its channel's URL took it; kept afterwards as its receipt."""

    __tablename__ = "chat_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(
        ForeignKey("chat_messages.id", ondelete="CASCADE"), unique=True
    )
    dialog_id: Mapped[int] = mapped_column(ForeignKey("dialogs.id", ondelete="CASCADE"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None, index=True)


class CannedResponseRow(Base):
    __tablename__ = "canned_responses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    category: Mapped[str] = mapped_column(String(100), index=True)
    title: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class BlocklistRow(Base):
    __tablename__ = "blocklist"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # A number (digits, optional +), an address (a@b.c) or a whole domain (@b.c), normalised.
    entry: Mapped[str] = mapped_column(String(320), unique=True)
    # refuse | spam
    action: Mapped[str] = mapped_column(String(8))
    note: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
