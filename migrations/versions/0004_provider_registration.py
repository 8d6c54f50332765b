"""Kamailio's uacreg table (uac module, schema version 5): registration at the provider.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 10:05:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _text(name: str, length: int) -> sa.Column[str]:
    return sa.Column(name, sa.String(length=length), server_default="", nullable=False)


def _number(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.Integer(), server_default=sa.text("0"), nullable=False)


def upgrade() -> None:
    # As /usr/share/kamailio/*/uac-create.sql has it, so Kamailio's tools work on it too.
    op.create_table(
        "uacreg",
        sa.Column("id", sa.Integer(), nullable=False),
        _text("l_uuid", 64),
        _text("l_username", 64),
        _text("l_domain", 64),
        _text("r_username", 64),
        _text("r_domain", 64),
        _text("realm", 64),
        _text("auth_username", 64),
        _text("auth_password", 64),
        _text("auth_ha1", 128),
        _text("auth_proxy", 255),
        _number("expires"),
        _number("flags"),
        _number("reg_delay"),
        _text("contact_addr", 255),
        _text("socket", 128),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_uacreg")),
        sa.UniqueConstraint("l_uuid", name="uacreg_l_uuid_idx"),
    )
    # The uac module refuses to start unless the table's version matches its own.
    version = sa.table(
        "version", sa.column("table_name", sa.String), sa.column("table_version", sa.Integer)
    )
    op.bulk_insert(version, [{"table_name": "uacreg", "table_version": 5}])


def downgrade() -> None:
    op.execute("DELETE FROM version WHERE table_name = 'uacreg'")
    op.drop_table("uacreg")
