"""Typed application state keys of the API service."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.bus import Bus, OutboxRelay
from shared.config import Settings
from shared.group_commit import GroupCommit
from shared.metrics import ApiMetrics

if TYPE_CHECKING:
    from services.api.live import LiveFeed

SETTINGS = web.AppKey("settings", Settings)
SESSIONS = web.AppKey("sessions", async_sessionmaker[AsyncSession])
BUS = web.AppKey("bus", Bus)
RELAY = web.AppKey("relay", OutboxRelay)
CREATES = web.AppKey("creates", GroupCommit)
LIVE: web.AppKey[LiveFeed] = web.AppKey("live")
METRICS = web.AppKey("metrics", ApiMetrics)
