"""The REST side through the real API process: create throughput, and create-to-visible latency (REST create,
then C-FIND by accession number until the new item is answered)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import aiohttp

from bench import dimse
from bench.data import Tags
from bench.load import percentile
from bench.queries import encode, identifier


@dataclass
class CreateResult:
    store: str
    items: int
    errors: int
    elapsed_s: float
    items_per_s: float
    p50_ms: float
    p95_ms: float
    concurrency: int
    first_error: str = ""
    # CPU of the API process and its store server per created item: on a shared 2-core machine items/s
    # follows whatever else runs, this does not (NaN when the caller gave no CPU clock).
    server_cpu_ms_per_item: float = float("nan")

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class VisibleResult:
    samples: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    create_p50_ms: float
    failures: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def create_throughput(
    store: str,
    port: int,
    items: list[Tags],
    *,
    concurrency: int,
    duration: float,
    limit: int,
    cpu_seconds: Callable[[], float] | None = None,
) -> CreateResult:
    """`concurrency` clients POST items back to back, as a RIS bridge sending creates concurrently does."""
    cpu_before = cpu_seconds() if cpu_seconds else float("nan")
    result = asyncio.run(_creates(store, port, items, concurrency, duration, limit))
    if cpu_seconds and result.items:
        result.server_cpu_ms_per_item = (cpu_seconds() - cpu_before) * 1000 / result.items
    return result


async def _creates(
    store: str, port: int, items: list[Tags], concurrency: int, duration: float, limit: int
) -> CreateResult:
    url = f"http://127.0.0.1:{port}/worklists/create"
    latencies: list[float] = []
    errors: list[str] = []
    next_index = 0
    deadline = time.monotonic() + duration

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal next_index
        while next_index < min(limit, len(items)) and time.monotonic() < deadline:
            tags = items[next_index]
            next_index += 1
            began = time.monotonic()
            async with session.post(url, json={"Tags": tags}) as response:
                await response.read()
                if response.status != 200:
                    errors.append(f"HTTP {response.status}: {(await response.text())[:200]}")
                    continue
            latencies.append((time.monotonic() - began) * 1000)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        began = time.monotonic()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        elapsed = time.monotonic() - began
    return CreateResult(
        store,
        len(latencies),
        len(errors),
        elapsed,
        len(latencies) / elapsed,
        percentile(latencies, 0.5),
        percentile(latencies, 0.95),
        concurrency,
        errors[0] if errors else "",
    )


def create_to_visible(
    api_port: int, scp_port: int, items: list[Tags], *, samples: int, timeout: float = 10.0
) -> VisibleResult:
    """Each sample: POST an item with a new accession number, then C-FIND it until it is answered."""
    return asyncio.run(_visible(api_port, scp_port, items, samples, wait=timeout))


async def _visible(
    api_port: int, scp_port: int, items: list[Tags], samples: int, *, wait: float
) -> VisibleResult:
    url = f"http://127.0.0.1:{api_port}/worklists/create"
    visible: list[float] = []
    creates: list[float] = []
    failures = 0
    async with aiohttp.ClientSession() as session:
        for k in range(samples):
            tags = dict(items[k % len(items)])
            accession = f"VIS{time.time_ns() % 10**12:012d}"[:16]
            tags["AccessionNumber"] = accession
            ds = identifier({"AccessionNumber": accession}, {})
            implicit, explicit = encode(ds, implicit=True), encode(ds, implicit=False)
            began = time.monotonic()
            async with session.post(url, json={"Tags": tags}) as response:
                await response.read()
                ok = response.status == 200
            creates.append((time.monotonic() - began) * 1000)
            if not ok:
                failures += 1
                continue
            while time.monotonic() - began < wait:
                result = dimse.find("127.0.0.1", scp_port, implicit, explicit)  # nothing else runs meanwhile
                if result.answers:
                    visible.append((time.monotonic() - began) * 1000)
                    break
            else:
                failures += 1
    return VisibleResult(
        len(visible),
        percentile(visible, 0.5),
        percentile(visible, 0.95),
        max(visible, default=float("nan")),
        percentile(creates, 0.5),
        failures,
    )
