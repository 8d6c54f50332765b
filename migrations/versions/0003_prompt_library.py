"""The prompt library (text and uploaded audio); a number's greeting may be one of them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 08:12:47.916581
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "prompts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("text", sa.String(length=2000), nullable=True),
        sa.Column("file", sa.String(length=100), nullable=False),
        sa.Column("seconds", sa.Double(), nullable=False),
        sa.Column("created_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompts")),
    )
    with op.batch_alter_table("numbers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("greeting_prompt_id", sa.Integer(), nullable=True))
        batch_op.alter_column("greeting_text", existing_type=sa.VARCHAR(length=2000), nullable=True)
        batch_op.create_index(
            batch_op.f("ix_numbers_greeting_prompt_id"), ["greeting_prompt_id"], unique=False
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_numbers_greeting_prompt_id_prompts"),
            "prompts",
            ["greeting_prompt_id"],
            ["id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("numbers", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_numbers_greeting_prompt_id_prompts"), type_="foreignkey"
        )
        batch_op.drop_index(batch_op.f("ix_numbers_greeting_prompt_id"))
        batch_op.alter_column(
            "greeting_text", existing_type=sa.VARCHAR(length=2000), nullable=False
        )
        batch_op.drop_column("greeting_prompt_id")

    op.drop_table("prompts")
