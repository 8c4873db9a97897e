"""Worklist items, one indexed row per Scheduled Procedure Step, and the event outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "worklist_items",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("dataset", sa.Text(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("source_path", sa.String(1024), nullable=True),
        sa.Column("source_digest", sa.String(64), nullable=True),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("patient_name", sa.String(324), nullable=False),
        sa.Column("accession_number", sa.String(64), nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_worklist_items")),
        sa.UniqueConstraint("source_path", name=op.f("uq_worklist_items_source_path")),
    )
    for column in ("source", "patient_id", "accession_number", "study_instance_uid", "created_at"):
        op.create_index(op.f(f"ix_worklist_items_{column}"), "worklist_items", [column])

    op.create_table(
        "scheduled_steps",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("item_id", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("station_aet", sa.String(256), nullable=False),
        sa.Column("station_name", sa.String(64), nullable=False),
        sa.Column("modality", sa.String(16), nullable=False),
        sa.Column("start_date", sa.String(8), nullable=False),
        sa.Column("start_time", sa.String(16), nullable=False),
        sa.Column("start_datetime", sa.String(14), nullable=False),
        sa.Column("sps_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("performing_physician", sa.String(324), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("patient_name", sa.String(324), nullable=False),
        sa.Column("patient_name_key", sa.String(324), nullable=False),
        sa.Column("accession_number", sa.String(64), nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("requested_procedure_id", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["item_id"],
            ["worklist_items.id"],
            name=op.f("fk_scheduled_steps_item_id_worklist_items"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scheduled_steps")),
    )
    for column in (
        "item_id",
        "start_datetime",
        "sps_id",
        "status",
        "patient_id",
        "patient_name_key",
        "accession_number",
        "study_instance_uid",
        "requested_procedure_id",
    ):
        op.create_index(op.f(f"ix_scheduled_steps_{column}"), "scheduled_steps", [column])
    op.create_index("ix_scheduled_steps_station_start", "scheduled_steps", ["station_aet", "start_datetime"])
    op.create_index("ix_scheduled_steps_modality_start", "scheduled_steps", ["modality", "start_datetime"])

    op.create_table(
        "outbox",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_outbox_event_id")),
    )


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("scheduled_steps")
    op.drop_table("worklist_items")
