"""File-system notifications for the worklist folder: wake the folder sync at once, not at the next pass."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from services.housekeeper.timing import sleep_or_stop

logger = logging.getLogger(__name__)

RETRY_SECONDS = 5.0


async def watch_folder(directory: Path, wake: asyncio.Event, stop: asyncio.Event) -> None:
    """Set `wake` whenever something changes in `directory`. The periodic pass stays the source of truth:
    notifications are an accelerator, missing where the file system has none (NFS, SMB shares)."""
    try:
        from watchfiles import awatch
    except ImportError:
        logger.info("watchfiles is not installed: the worklist folder is polled every HousekeepingInterval")
        return
    while not stop.is_set():
        try:
            # step: changes are yielded once the folder has been quiet that long, so a file being written
            # is read when complete rather than half-way.
            async for _changes in awatch(
                directory, stop_event=stop, recursive=False, step=100, debounce=1000
            ):
                wake.set()
        except Exception as exc:  # the folder vanished, or inotify ran out of watches: polling still works
            logger.warning(
                "watching %s stopped (%s); retrying in %.0fs", directory, type(exc).__name__, RETRY_SECONDS
            )
            await sleep_or_stop(stop, RETRY_SECONDS)
