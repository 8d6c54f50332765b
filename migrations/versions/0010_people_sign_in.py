"""People sign in to the web console: a password hash per user, and their sessions.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 05:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.db

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # batch: SQLite cannot alter a table in place.
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("password_hash", sa.String(length=255), nullable=True))
    op.create_table(
        "person_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", core.db.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_person_sessions_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_person_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_person_sessions_token_hash")),
    )
    with op.batch_alter_table("person_sessions") as batch:
        batch.create_index(batch.f("ix_person_sessions_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("person_sessions") as batch:
        batch.drop_index(batch.f("ix_person_sessions_user_id"))
    op.drop_table("person_sessions")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("password_hash")
