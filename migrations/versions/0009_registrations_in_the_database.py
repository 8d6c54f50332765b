"""Kamailio's location table (usrloc, schema version 9): registrations survive a restart.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 19:40:00.000000
"""

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Kamailio's own index names (/usr/share/kamailio/*/usrloc-create.sql), so its tools know them.
_INDEXES = {
    "location_account_contact_idx": ["username", "domain", "contact"],
    "location_expires_idx": ["expires"],
    "location_tcpcon_idx": ["connection_id"],
    "location_connection_idx": ["server_id", "connection_id"],
}


def _text(name: str, length: int, default: str | None = "") -> sa.Column[str]:
    if default is None:
        return sa.Column(name, sa.String(length=length), nullable=True)
    return sa.Column(name, sa.String(length=length), server_default=default, nullable=False)


def _number(name: str, default: int | None = 0) -> sa.Column[int]:
    if default is None:
        return sa.Column(name, sa.Integer(), nullable=True)
    return sa.Column(name, sa.Integer(), server_default=sa.text(str(default)), nullable=False)


def _time(name: str, default: str) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(), server_default=sa.text(f"'{default}'"), nullable=False)


def upgrade() -> None:
    # As usrloc-create.sql of Kamailio 5.6 has it (version 9).
    op.create_table(
        "location",
        sa.Column("id", sa.Integer(), nullable=False),
        _text("ruid", 64),
        _text("username", 64),
        _text("domain", 64, default=None),
        _text("contact", 512),
        _text("received", 128, default=None),
        _text("path", 512, default=None),
        _time("expires", "2030-05-28 21:32:15"),
        sa.Column("q", sa.REAL(), server_default=sa.text("1.0"), nullable=False),
        _text("callid", 255, default="Default-Call-ID"),
        _number("cseq", default=1),
        _time("last_modified", "2000-01-01 00:00:01"),
        _number("flags"),
        _number("cflags"),
        _text("user_agent", 255),
        _text("socket", 64, default=None),
        _number("methods", default=None),
        _text("instance", 255, default=None),
        _number("reg_id"),
        _number("server_id"),
        _number("connection_id"),
        _number("keepalive"),
        _number("partition"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_location")),
        sa.UniqueConstraint("ruid", name="location_ruid_idx"),
    )
    with op.batch_alter_table("location") as batch:
        for name, columns in _INDEXES.items():
            batch.create_index(name, columns, unique=False)
    # usrloc refuses to start unless the table's version matches its own.
    version = sa.table(
        "version", sa.column("table_name", sa.String), sa.column("table_version", sa.Integer)
    )
    op.bulk_insert(version, [{"table_name": "location", "table_version": 9}])


def downgrade() -> None:
    op.execute("DELETE FROM version WHERE table_name = 'location'")
    with op.batch_alter_table("location") as batch:
        for name in reversed(_INDEXES):
            batch.drop_index(name)
    op.drop_table("location")
