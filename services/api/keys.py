"""Typed application state keys of the API service."""

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.bus import Bus, OutboxRelay
from shared.config import Settings

SETTINGS = web.AppKey("settings", Settings)
SESSIONS = web.AppKey("sessions", async_sessionmaker[AsyncSession])
BUS = web.AppKey("bus", Bus)
RELAY = web.AppKey("relay", OutboxRelay)
