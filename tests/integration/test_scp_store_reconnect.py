"""The SCP reads the store without a ping before each C-FIND (a round trip each): a pooled connection that
PostgreSQL closed meanwhile (restart, failover, an idle timeout) still costs no failed query, because the
read is retried once on a fresh connection."""

from __future__ import annotations

import psycopg
from pydicom import Dataset
from sqlalchemy.engine import make_url

from services.scp.lookup import ItemStore
from services.scp.server import create_engine
from shared.matching import MatchOptions, compile_query
from shared.migrate import upgrade
from tests.support.dicom_clients import add_items, worklist
from tests.support.servers import Postgres


def cut_connections(postgres: Postgres, database_url: str) -> int:
    """Close every session on the database from the server side, as a restart does; how many there were."""
    name = make_url(database_url).database
    with psycopg.connect(postgres.admin_uri, autocommit=True) as admin:
        row = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchone()
    return int(row[0]) if row else 0


def test_reads_survive_connections_the_database_closed(postgres: Postgres) -> None:
    database_url = postgres.new_database()
    upgrade(database_url)
    ids = add_items(database_url, [worklist(patient_id="RECONNECT1")])
    query = Dataset()
    query.PatientID = "RECONNECT1"
    compiled = compile_query(query, MatchOptions())
    engine = create_engine(database_url)
    store = ItemStore(engine)
    try:
        assert [c.item_id for c in store.candidates(compiled)] == ids  # leaves a connection in the pool
        assert cut_connections(postgres, database_url) >= 1
        assert [c.item_id for c in store.candidates(compiled)] == ids
        assert cut_connections(postgres, database_url) >= 1
        assert [item.item_id for item in store.load(ids)] == ids
        assert cut_connections(postgres, database_url) >= 1
        assert list(store.versions()) == ids
    finally:
        engine.dispose()
