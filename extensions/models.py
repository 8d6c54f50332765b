"""SQL tables of users, extensions, API tokens, people's sessions, and Kamailio's own
subscriber, location and version tables."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import REAL, DateTime, ForeignKey, Index, Integer, String, UniqueConstraint, text
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
    # External calls this user talks on are recorded (flows.recording).
    record_calls: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
    dismissed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    # Argon2id (extensions.passwords), salt and parameters included; None: cannot sign in.
    password_hash: Mapped[str | None] = mapped_column(String(255), default=None)


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


class PersonSession(Base):
    """A person signed in to the web console (extensions.sessions): the cookie's token, hashed."""

    __tablename__ = "person_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    # SHA-256 of the cookie's token, as for API tokens: 256 random bits need no slow hash.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # Refreshed as the session is used (at most once a minute); idle past the setting: ended.
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
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


class Location(Base):
    """Kamailio's usrloc table (schema version 9): the phones' registrations, written through by
    Kamailio on every REGISTER so that a restart keeps them. The service only deletes rows, in
    the transaction that retires the credentials they were made with.

    `expires` and `last_modified` are Kamailio's to write and read: db_sqlite stores them as
    Julian day numbers, db_postgres as local time.
    """

    __tablename__ = "location"
    __table_args__ = (
        UniqueConstraint("ruid", name="location_ruid_idx"),
        Index("location_account_contact_idx", "username", "domain", "contact"),
        Index("location_expires_idx", "expires"),
        Index("location_tcpcon_idx", "connection_id"),
        Index("location_connection_idx", "server_id", "connection_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ruid: Mapped[str] = mapped_column(String(64), server_default="")
    username: Mapped[str] = mapped_column(String(64), server_default="")
    domain: Mapped[str | None] = mapped_column(String(64))
    contact: Mapped[str] = mapped_column(String(512), server_default="")
    received: Mapped[str | None] = mapped_column(String(128))
    path: Mapped[str | None] = mapped_column(String(512))
    expires: Mapped[datetime] = mapped_column(
        DateTime(), server_default=text("'2030-05-28 21:32:15'")
    )
    q: Mapped[float] = mapped_column(REAL(), server_default=text("1.0"))
    callid: Mapped[str] = mapped_column(String(255), server_default="Default-Call-ID")
    cseq: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    last_modified: Mapped[datetime] = mapped_column(
        DateTime(), server_default=text("'2000-01-01 00:00:01'")
    )
    flags: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    cflags: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    user_agent: Mapped[str] = mapped_column(String(255), server_default="")
    socket: Mapped[str | None] = mapped_column(String(64))
    methods: Mapped[int | None] = mapped_column(Integer)
    instance: Mapped[str | None] = mapped_column(String(255))
    reg_id: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    server_id: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    connection_id: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    keepalive: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    partition: Mapped[int] = mapped_column(Integer, server_default=text("0"))


class KamailioTableVersion(Base):
    """Kamailio's `version` table: modules refuse to start unless their table versions match."""

    __tablename__ = "version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    table_name: Mapped[str] = mapped_column(String(32), unique=True)
    table_version: Mapped[int] = mapped_column(Integer, default=0)


KAMAILIO_TABLE_VERSIONS = {"version": 1, "subscriber": 7, "location": 9}
