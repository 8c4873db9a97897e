"""PostgreSQL can use migration 0003's indexes for the SCP's own narrowing queries (alembic's comparison
sees neither an operator class nor a partial index predicate, so this is what keeps them right).

The database uses a collation other than C, as most installations do: there, only the text_pattern_ops
index can serve a PatientName prefix. Sequential scans are disabled so that each test asks "can the
planner use the index at all?", not "is it cheaper on this small table?".
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from pydicom import Dataset
from sqlalchemy import Engine
from sqlalchemy.dialects import postgresql

from services.scp.lookup import candidates_statement
from services.scp.server import create_engine
from shared.matching import MatchOptions, compile_query
from shared.migrate import upgrade
from tests.support.servers import Postgres

ROWS = 3000
COLLATION = "en_US.utf8"


@pytest.fixture(scope="module")
def engine(postgres: Postgres) -> Iterator[Engine]:
    name = "plans_" + uuid.uuid4().hex[:8]
    with psycopg.connect(postgres.admin_uri, autocommit=True) as admin:
        known = admin.execute("SELECT 1 FROM pg_collation WHERE collname = %s", [COLLATION]).fetchone()
        if known is None:
            pytest.skip(f"the operating system has no {COLLATION} locale")
        admin.execute(
            f"CREATE DATABASE {name} TEMPLATE template0 LC_COLLATE '{COLLATION}' LC_CTYPE '{COLLATION}'"
        )
    url = f"postgresql://postgres@/{name}?host={postgres.socket_dir}"
    upgrade(url)
    engine = create_engine(url)
    with engine.begin() as connection:
        # Rows straight in SQL (the planner needs statistics, not valid items); every 30th step is on two
        # stations, joined with a backslash as the store writes them.
        connection.exec_driver_sql(
            "INSERT INTO worklist_items (id, dataset, source, patient_id, patient_name, accession_number,"
            " study_instance_uid, created_at, updated_at)"
            " SELECT 'i' || g, '{}', 'rest', 'P' || g, 'Name' || g, 'A' || g, '1.2.' || g, now(), now()"
            f" FROM generate_series(1, {ROWS}) g"
        )
        connection.exec_driver_sql(
            "INSERT INTO scheduled_steps (item_id, position, station_aet, station_name, modality, start_date,"
            " start_time, start_datetime, sps_id, status, performing_physician, patient_id, patient_name,"
            " patient_name_key, accession_number, study_instance_uid, requested_procedure_id)"
            " SELECT 'i' || g, 0,"
            "  CASE WHEN mod(g, 30) = 0 THEN 'CT01\\MR01' ELSE 'CT' || lpad(mod(g, 40)::text, 2, '0') END,"
            "  '', 'CT', d, '090000', d || '090000', 'S1', '', '', 'P' || g, 'Name' || g, 'name' || g,"
            "  'A' || g, '1.2.' || g, 'R1'"
            f" FROM generate_series(1, {ROWS}) g,"
            " LATERAL (SELECT to_char(date '2025-10-01' + mod(g, 30), 'YYYYMMDD') AS d) day"
        )
        connection.exec_driver_sql("ANALYZE")
    yield engine
    engine.dispose()


def statement(engine: Engine, **keys: str) -> tuple[str, dict[str, object], str]:
    """The SCP's narrowing query for these keys: as psycopg sends it with its parameters, and with $n."""
    query = Dataset()
    step = Dataset()
    for keyword, value in keys.items():
        setattr(step if keyword.startswith(("Scheduled", "Modality")) else query, keyword, value)
    if len(step):
        query.ScheduledProcedureStepSequence = [step]
    select = candidates_statement(compile_query(query, MatchOptions()), "postgresql")
    bound = select.compile(dialect=engine.dialect)
    # $1, $2…: what a prepared statement's generic plan sees.
    numbered = select.compile(dialect=postgresql.asyncpg.dialect())  # type: ignore[no-untyped-call]
    return str(bound), dict(bound.params), str(numbered)


def plan(engine: Engine, sql: str, params: dict[str, object] | None = None, *, generic: bool = False) -> str:
    """EXPLAIN through the driver itself: with no parameters psycopg leaves `%` and `$n` alone."""
    options = "COSTS OFF, GENERIC_PLAN" if generic else "COSTS OFF"
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("SET enable_seqscan = off")
        cursor.execute(f"EXPLAIN ({options}) {sql}", params)
        rows = cursor.fetchall()
        raw.rollback()
    finally:
        raw.close()
    return "\n".join(str(row[0]) for row in rows)


def test_patient_name_prefix_uses_the_pattern_index(engine: Engine) -> None:
    sql, params, _ = statement(engine, PatientName="Name12*")
    text = plan(engine, sql, params)
    assert "ix_scheduled_steps_patient_name_key_pattern" in text, text
    assert "~>=~ 'name12'" in text and "~<~ 'name13'" in text, text  # a range scan, not a full index read


def test_station_and_day_use_both_station_indexes_even_in_a_generic_plan(engine: Engine) -> None:
    _, _, numbered = statement(
        engine, ScheduledStationAETitle="CT03", ScheduledProcedureStepStartDate="20251014"
    )
    text = plan(engine, numbered, generic=True)
    assert "BitmapOr" in text, text
    assert "ix_scheduled_steps_station_start" in text, text
    # The partial index's predicate is proven from the query's literal pattern, whatever $n hold.
    assert "ix_scheduled_steps_multi_station_start" in text, text


def test_station_alone_reads_the_multi_station_steps_from_their_index(engine: Engine) -> None:
    sql, params, _ = statement(engine, ScheduledStationAETitle="CT03")
    text = plan(engine, sql, params)
    assert "ix_scheduled_steps_multi_station_start" in text, text
