"""Orthanc connector: follows Orthanc's /changes feed and publishes study.stable for each StableStudy change.

Its position in the feed is kept in `connector_positions` and advanced in the same transaction that writes
the study.stable events to the outbox, so a restart neither skips nor repeats a change. Replicas take turns:
the position row is locked with FOR UPDATE SKIP LOCKED for the length of one poll, and a replica that finds
it locked skips that poll. A new connector starts at the end of the feed: studies that became stable before
it was configured are not replayed.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import aiohttp
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.housekeeper.timing import sleep_or_stop
from shared import retention, store
from shared.config import OrthancConnectorSettings
from shared.events import Event, study_stable_event
from shared.models import ConnectorPosition

logger = logging.getLogger(__name__)

SOURCE = "orthanc"


class OrthancConnector:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        options: OrthancConnectorSettings,
        *,
        clock: Callable[[], datetime],
        on_events: Callable[[], None],
        name: str = SOURCE,
        batch_size: int = 100,
        timeout: float = 10.0,
    ) -> None:
        if not options.url:
            raise ValueError("the Orthanc connector needs OrthancConnector.Url")
        self.sessions = sessions
        self.options = options
        self.base_url = options.url.rstrip("/")
        self.batch_size = batch_size
        self.timeout = timeout
        self.clock = clock
        self.on_events = on_events
        self.name = name
        self._unreachable = False

    async def run(self, stop: asyncio.Event) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(
            headers=self._headers(), timeout=timeout, raise_for_status=True
        ) as http:
            while not stop.is_set():
                more = False
                try:
                    more = await self.poll(http)
                    if self._unreachable:
                        logger.info("Orthanc at %s reachable again", self.base_url)
                        self._unreachable = False
                except (aiohttp.ClientError, TimeoutError) as exc:
                    if not self._unreachable:
                        logger.warning(
                            "Orthanc at %s not reachable (%s); retrying", self.base_url, type(exc).__name__
                        )
                    self._unreachable = True
                except Exception:
                    logger.exception("following Orthanc's changes failed; retrying")
                if not more:
                    await sleep_or_stop(stop, self.options.poll_interval)

    def _headers(self) -> dict[str, str]:
        """HTTP basic authentication for Orthanc's RegisteredUsers (aiohttp's BasicAuth is deprecated)."""
        if not self.options.username:
            return {}
        credentials = f"{self.options.username}:{self.options.password or ''}".encode()
        return {"Authorization": "Basic " + base64.b64encode(credentials).decode("ascii")}

    async def poll(self, http: aiohttp.ClientSession) -> bool:
        """Read one page of changes; True when more are waiting."""
        await self._ensure_position(http)
        published = 0
        async with self.sessions() as session, session.begin():
            row = await session.scalar(
                select(ConnectorPosition)
                .where(ConnectorPosition.name == self.name)
                .with_for_update(skip_locked=True)
            )
            if row is None:
                return False  # another replica is polling
            feed = await self._get(http, "/changes", since=row.position, limit=self.batch_size)
            last = int(feed.get("Last", row.position))
            if last < row.position:
                # Orthanc's change log was reset (new database): its changes are all new to us.
                logger.warning(
                    "Orthanc's change log restarted at %d (we were at %d); following it anew",
                    last,
                    row.position,
                )
                row.position = 0
                return True
            for change in feed.get("Changes") or []:
                if change.get("ChangeType") == "StableStudy":
                    event = await self._study_stable(http, str(change.get("ID", "")))
                    if event is not None:
                        store.enqueue(session, event)
                        published += 1
            row.position = last
            row.updated_at = self.clock()
        if published:
            self.on_events()
        return not feed.get("Done", True)

    async def _ensure_position(self, http: aiohttp.ClientSession) -> None:
        async with self.sessions() as session:
            if await session.get(ConnectorPosition, self.name) is not None:
                return
        end = int((await self._get(http, "/changes", last="")).get("Last", 0))
        async with self.sessions() as session, session.begin():
            dialect = session.get_bind().dialect.name
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            await session.execute(
                insert(ConnectorPosition)
                .values(name=self.name, position=end, updated_at=self.clock())
                .on_conflict_do_nothing(index_elements=[ConnectorPosition.name])
            )
        logger.info("following Orthanc's changes at %s from change %d", self.base_url, end)

    async def _study_stable(self, http: aiohttp.ClientSession, study_id: str) -> Event | None:
        try:
            study = await self._get(http, f"/studies/{study_id}")
        except aiohttp.ClientResponseError as exc:
            if exc.status == 404:
                return None  # deleted from Orthanc since it became stable
            raise
        tags = study.get("MainDicomTags") or {}
        uid = retention.normalize_uid(tags.get("StudyInstanceUID"))
        if not uid:
            logger.warning("Orthanc study %s has no StudyInstanceUID; skipped", study_id)
            return None
        patient = study.get("PatientMainDicomTags") or {}
        return study_stable_event(
            uid,
            source=SOURCE,
            patient_id=patient.get("PatientID") or None,
            accession_number=tags.get("AccessionNumber") or None,
            now=self.clock(),
        )

    async def _get(self, http: aiohttp.ClientSession, path: str, **params: Any) -> dict[str, Any]:
        async with http.get(self.base_url + path, params={k: str(v) for k, v in params.items()}) as response:
            body = await response.json(content_type=None)
        if not isinstance(body, dict):
            raise ValueError(f"Orthanc answered {path} with something other than a JSON object")
        return body
