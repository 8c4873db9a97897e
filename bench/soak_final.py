"""The soak's final checks, once the load has stopped: the store and the SCP agree with what was done.

- the store holds initial + created - deleted - reported stable items (REST listing's X-Total-Count);
- each item the bridge created answers an accession query once, as last updated, or not at all when gone;
- each station's query for today answers exactly the initial items' steps plus the bridge's live items';
- the universal query answers every Scheduled Procedure Step of the store.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp

from bench import dimse
from bench.data import SPS, STATIONS, Worklists
from bench.queries import encode, identifier
from bench.soak_modalities import today_steps
from bench.soak_ris import Bridge, BridgeItem, difference, find_accession

CONCURRENCY = 8


@dataclass
class Verdict:
    check: str
    passed: bool
    measured: str

    def as_dict(self) -> dict[str, object]:
        return {"check": self.check, "passed": self.passed, "measured": self.measured}


async def _store_count(api_port: int) -> int:
    url = f"http://127.0.0.1:{api_port}/worklists?limit=1"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        response.raise_for_status()
        return int(response.headers["X-Total-Count"])


async def _item_problem(port: int, kind: str, item: BridgeItem, gate: asyncio.Semaphore) -> str:
    async with gate:
        try:
            result = await asyncio.to_thread(find_accession, port, item.accession)
        except (OSError, dimse.DimseError) as exc:
            return f"{item.accession}: {type(exc).__name__}: {exc}"
    if result.status != 0:
        return f"{item.accession}: final status {result.status:#06x}"
    problem = difference(kind, item, result)
    return f"{item.accession}: {problem}" if problem else ""


def _count(port: int, top: dict[str, str], step: dict[str, str]) -> dimse.FindResult:
    ds = identifier(top, step)
    return dimse.find(
        "127.0.0.1",
        port,
        encode(ds, implicit=True),
        encode(ds, implicit=False),
        calling="SOAKCHK",
        timeout=300,
    )


async def _store(bridge: Bridge, wl: Worklists, api_port: int) -> Verdict:
    expected = wl.n + bridge.done["create"] - bridge.done["delete"] - bridge.done["stable"]
    try:
        stored = await _store_count(api_port)
    except (aiohttp.ClientError, KeyError, ValueError) as exc:
        return Verdict("store count", False, f"listing failed: {exc}")
    return Verdict(
        "store count = initial + created - deleted - stable",
        stored == expected,
        f"{stored:,} stored; {wl.n:,} + {bridge.done['create']} - {bridge.done['delete']} "
        f"- {bridge.done['stable']} = {expected:,}",
    )


async def _items(bridge: Bridge, scp_port: int) -> Verdict:
    gate = asyncio.Semaphore(CONCURRENCY)
    jobs = [_item_problem(scp_port, "update", item, gate) for item in bridge.live.values()]
    jobs += [_item_problem(scp_port, "delete", item, gate) for item in bridge.gone.values()]
    problems = [p for p in await asyncio.gather(*jobs) if p]
    return Verdict(
        "every bridge item answered as last changed (live: once, gone: never)",
        not problems,
        f"{len(bridge.live)} live, {len(bridge.gone)} gone; {len(problems)} wrong"
        + (f", first: {problems[0]}" if problems else ""),
    )


async def _stations(bridge: Bridge, wl: Worklists, scp_port: int) -> Verdict:
    today = wl.today_text
    initial = today_steps(wl.items, today)
    added = today_steps([item.tags for item in bridge.live.values()], today)
    wrong = []
    for modality, stations in STATIONS.items():
        for station in stations:
            step = {"Modality": modality, "ScheduledStationAETitle": station}
            result = await asyncio.to_thread(
                _count, scp_port, {}, {**step, "ScheduledProcedureStepStartDate": today}
            )
            want = initial.get((modality, station), 0) + added.get((modality, station), 0)
            if result.status != 0 or result.answers != want:
                wrong.append(f"{station}: {result.answers} (status {result.status:#06x}), expected {want}")
    return Verdict(
        "each station's query for today answers exactly its steps",
        not wrong,
        f"{sum(len(s) for s in STATIONS.values())} stations; " + ("; ".join(wrong) or "all exact"),
    )


async def _universal(bridge: Bridge, wl: Worklists, scp_port: int) -> Verdict:
    steps = sum(len(item[SPS]) for item in wl.items) + sum(len(i.tags[SPS]) for i in bridge.live.values())
    began = time.monotonic()
    result = await asyncio.to_thread(_count, scp_port, {}, {})
    return Verdict(
        "universal query answers every step of the store",
        result.status == 0 and result.answers == steps,
        f"{result.answers:,} answers (status {result.status:#06x}), expected {steps:,}; "
        f"{time.monotonic() - began:.1f} s",
    )


async def final_checks(bridge: Bridge, wl: Worklists, api_port: int, scp_port: int) -> list[Verdict]:
    return [
        await _store(bridge, wl, api_port),
        await _items(bridge, scp_port),
        await _stations(bridge, wl, scp_port),
        await _universal(bridge, wl, scp_port),
    ]
