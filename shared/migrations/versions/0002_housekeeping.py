"""Housekeeping state: remembered stable studies, change-feed positions, rejected `.wl` files.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stable_studies",
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("stable_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("study_instance_uid", name=op.f("pk_stable_studies")),
    )
    op.create_index(op.f("ix_stable_studies_expires_at"), "stable_studies", ["expires_at"])

    op.create_table(
        "connector_positions",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_connector_positions")),
    )

    op.create_table(
        "folder_rejections",
        sa.Column("source_path", sa.String(1024), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(256), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source_path", name=op.f("pk_folder_rejections")),
    )


def downgrade() -> None:
    op.drop_table("folder_rejections")
    op.drop_table("connector_positions")
    op.drop_index(op.f("ix_stable_studies_expires_at"), table_name="stable_studies")
    op.drop_table("stable_studies")
