"""PostgreSQL indexes for two C-FIND narrowings: PatientName prefixes and multi-valued stations.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

- `patient_name_key LIKE 'doe%'`: a plain B-tree serves LIKE prefixes only under the C collation; with any
  other (such as en_US.UTF-8) PostgreSQL needs the pattern operator class.
- `station_aet LIKE '%\\%'`: a step scheduled on several stations (ScheduledStationAETitle is 1-n, stored
  joined with a backslash) is a candidate for every station query, the second branch of an OR. No B-tree
  serves a "contains" test, so without this partial index that branch reads the whole table. Keyed on
  start_datetime, not station_aet: a modality asks for its station and a day, and the date range then
  narrows this branch too (BitmapOr of this index and ix_scheduled_steps_station_start). The predicate is
  written exactly as services/scp/lookup.py renders it on PostgreSQL, so the planner can prove it.

Both are PostgreSQL-only: on SQLite, the embedded single-machine store, the name prefix already goes
through GLOB on the plain index. shared/models.py declares them with `on_postgresql_only`, and
shared/migrations/env.py leaves them out of the comparison on other databases.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# In SQL (standard_conforming_strings on, the default since PostgreSQL 9.1): '%\\%', i.e. "contains a
# backslash", the backslash being LIKE's default escape character.
MULTI_STATION = r"station_aet LIKE '%\\%'"


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if not _postgresql():
        return
    op.create_index(
        "ix_scheduled_steps_patient_name_key_pattern",
        "scheduled_steps",
        ["patient_name_key"],
        postgresql_ops={"patient_name_key": "text_pattern_ops"},
    )
    op.create_index(
        "ix_scheduled_steps_multi_station_start",
        "scheduled_steps",
        ["start_datetime"],
        postgresql_where=sa.text(MULTI_STATION),
    )


def downgrade() -> None:
    if not _postgresql():
        return
    op.drop_index("ix_scheduled_steps_multi_station_start", table_name="scheduled_steps")
    op.drop_index("ix_scheduled_steps_patient_name_key_pattern", table_name="scheduled_steps")
