"""Indexes for a customer's timeline: calls by number, dialogs by customer.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 05:10:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CALL_COLUMNS = ("caller", "called", "connected_to")


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        for column in _CALL_COLUMNS:
            batch.create_index(batch.f(f"ix_calls_{column}"), [column], unique=False)
    with op.batch_alter_table("dialogs") as batch:
        batch.create_index("ix_dialogs_customer_created", ["customer_id", "created_at"])


def downgrade() -> None:
    with op.batch_alter_table("dialogs") as batch:
        batch.drop_index("ix_dialogs_customer_created")
    with op.batch_alter_table("calls") as batch:
        for column in _CALL_COLUMNS:
            batch.drop_index(batch.f(f"ix_calls_{column}"))
