"""SQL tables of users, extensions, API tokens and Kamailio's own subscriber/version tables."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UtcDateTime, utcnow


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320), default=None)
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(default=True)
    # Seconds of wrap-up after this agent's ACD calls; None: the queue's (acd.wrap_up_time by hand).
    wrap_up_time: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
    dismissed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)


class Extension(Base):
    """One row per taken number: the primary key makes the namespace shared and race-free."""

    __tablename__ = "extensions"
    __table_args__ = (UniqueConstraint("owner_type", "owner_id"),)

    number: Mapped[str] = mapped_column(String(4), primary_key=True)
    owner_type: Mapped[str] = mapped_column(String(16))  # user | queue | menu
    owner_id: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    # SHA-256 of the token: tokens are 256 random bits, so a slow hash adds nothing.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)


class Subscriber(Base):
    """Kamailio's auth_db table (schema version 7), written only by extensions.phones.

    Only ha1 digests are stored; `password` stays empty so no clear secret is at rest.
    """

    __tablename__ = "subscriber"
    __table_args__ = (
        UniqueConstraint("username", "domain", name="subscriber_account_idx"),
        Index("subscriber_username_idx", "username"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), default="")
    domain: Mapped[str] = mapped_column(String(64), default="")
    password: Mapped[str] = mapped_column(String(64), default="")
    ha1: Mapped[str] = mapped_column(String(128), default="")
    ha1b: Mapped[str] = mapped_column(String(128), default="")


class KamailioTableVersion(Base):
    """Kamailio's `version` table: modules refuse to start unless their table versions match."""

    __tablename__ = "version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    table_name: Mapped[str] = mapped_column(String(32), unique=True)
    table_version: Mapped[int] = mapped_column(Integer, default=0)


KAMAILIO_TABLE_VERSIONS = {"version": 1, "subscriber": 7}
