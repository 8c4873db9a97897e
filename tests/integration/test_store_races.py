"""Two deleters of one item (the API and the folder sync, two housekeeper replicas): one event, not two.

SQLite has no row locks, so the item read by `remove_item` may be deleted by another connection before
`remove_item` deletes it. The test commits that other deletion at exactly that moment.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

from shared import store
from shared.db import create_async_db_engine, session_factory
from shared.migrate import upgrade
from shared.models import OutboxEvent
from tests.support.dicom_clients import worklist


async def test_an_item_deleted_meanwhile_is_not_deleted_twice(tmp_path: Path) -> None:
    path = tmp_path / "worklists.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    engine = create_async_db_engine(url)
    try:
        async with session_factory(engine)() as session, session.begin():
            await store.add_item(session, "raced", worklist(patient_id="R1"), source="rest")
            await session.execute(OutboxEvent.__table__.delete())

        def delete_elsewhere(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if statement.startswith("DELETE FROM scheduled_steps"):
                other = sqlite3.connect(path)
                with other:
                    other.execute("DELETE FROM scheduled_steps WHERE item_id = 'raced'")
                    other.execute("DELETE FROM worklist_items WHERE id = 'raced'")
                other.close()

        event.listen(engine.sync_engine, "before_cursor_execute", delete_elsewhere)
        with pytest.raises(store.WorklistNotFound):
            async with session_factory(engine)() as session, session.begin():
                await store.remove_item(session, "raced", reason="file-removed")
        event.remove(engine.sync_engine, "before_cursor_execute", delete_elsewhere)

        async with session_factory(engine)() as session:
            assert await session.scalar(select(func.count()).select_from(OutboxEvent)) == 0
    finally:
        await engine.dispose()
