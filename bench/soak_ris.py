"""The soak's RIS bridge: REST creates at a steady rate with some updates, reads, deletes and studies reported
stable (which the housekeeper must delete), each change followed by C-FIND checks that a modality sees it.

The bridge is sequential, as a RIS interface engine is: one request at a time, at a fixed pace; it falls
behind (and the report says so) when the API answers slower than that pace. Its items are new patients with
new accession numbers, one Scheduled Procedure Step today, so that the modalities' counts stay checkable.
"""

from __future__ import annotations

import asyncio
import copy
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from io import BytesIO

import aiohttp
from pynetdicom.dsutils import decode

from bench import dimse
from bench.data import SPS, Tags
from bench.queries import encode, identifier

# One cycle of the bridge's operations: half creates, then updates, a read, a delete, a study done.
PATTERN = ("create", "update", "create", "get", "create", "delete", "create", "update", "create", "stable")
VISIBLE_TIMEOUT = 5.0  # seconds a change may take to show in C-FIND (the SCP reads the store: it should be 0)
STABLE_TIMEOUT = 30.0  # seconds the housekeeper may take to delete the items of a study reported stable
IN_FLIGHT = 4  # REST requests the bridge has under way at most
CHECKERS = 4  # concurrent checking tasks (each check is one association at a time)
POLL = 0.1
CHECK_BACKLOG = 2 * CHECKERS  # changes waiting for a checker beyond which creates and updates go unchecked
DRAIN_TIMEOUT = 120.0  # seconds the checks left at the end of the load may take
EXPECTED_STATUS = {"create": 200, "update": 200, "get": 200, "delete": 200, "stable": 202}


@dataclass
class BridgeItem:
    item_id: str
    accession: str
    tags: Tags


@dataclass
class CheckOutcome:
    """A change checked through C-FIND: how long until it showed, in how many associations, what failed."""

    kind: str
    seconds: float  # from the REST answer to the end of the association that saw the change
    associations: int
    queued: float = 0.0  # from the REST answer to the first association (waiting for a free checker)
    error: str = ""  # an association failed (status or protocol)
    wrong: str = ""  # the change did not show within its time bound


@dataclass
class Bridge:
    api_port: int
    scp_port: int
    templates: list[Tags]
    seed: int
    today: date
    on_create: Callable[[], None]  # called before each create (the modalities' upper bound)
    live: dict[str, BridgeItem] = field(default_factory=dict)
    gone: dict[str, BridgeItem] = field(default_factory=dict)
    settled: list[str] = field(default_factory=list)  # live items whose last change has been checked
    done: Counter[str] = field(default_factory=Counter)  # successful operations by kind
    rest_ms: dict[str, list[float]] = field(default_factory=dict)
    rest_errors: list[str] = field(default_factory=list)
    checks: list[CheckOutcome] = field(default_factory=list)
    operations: int = 0
    requests: int = 0
    unchecked: int = 0  # creates and updates not checked during the load (checkers busy)
    elapsed_s: float = 0.0
    _queue: asyncio.Queue[tuple[str, BridgeItem, float]] = field(default_factory=asyncio.Queue)
    _next: int = 0

    # -- REST ------------------------------------------------------------------------------------------

    async def _request(
        self, session: aiohttp.ClientSession, op: str, method: str, path: str, body: object = None
    ) -> dict[str, object] | None:
        self.requests += 1
        began = time.monotonic()
        try:
            async with session.request(method, f"http://127.0.0.1:{self.api_port}{path}", json=body) as r:
                text = await r.text()
                payload = await r.json(content_type=None) if r.status == EXPECTED_STATUS[op] else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.rest_errors.append(f"{op} {method} {path}: {type(exc).__name__}: {exc}")
            return None
        self.rest_ms.setdefault(op, []).append((time.monotonic() - began) * 1000)
        if payload is None:
            self.rest_errors.append(f"{op} {method} {path}: HTTP {r.status}: {text[:200]}")
            return None
        self.done[op] += 1
        return payload if isinstance(payload, dict) else {}

    def _new_tags(self) -> Tags:
        k = self._next
        self._next += 1
        tags = copy.deepcopy(self.templates[k % len(self.templates)])
        tags["AccessionNumber"] = f"R{self.seed % 1000:03d}{k:08d}"
        tags["PatientID"] = f"R{k:08d}"
        tags["StudyInstanceUID"] = f"1.2.826.0.1.3680043.10.543.{self.seed}.0.{k + 1}"
        tags["RequestedProcedureID"] = f"RR{k:08d}"
        step = tags[SPS][0]
        step["ScheduledProcedureStepStartDate"] = self.today.strftime("%Y%m%d")
        step["ScheduledProcedureStepID"] = f"RSPS{k:08d}"
        tags[SPS] = [step]
        return tags

    def _take(self, rng: random.Random) -> BridgeItem | None:
        """A settled live item, no longer settled (its next change is to be checked)."""
        if not self.settled:
            return None
        index = rng.randrange(len(self.settled))
        self.settled[index], self.settled[-1] = self.settled[-1], self.settled[index]
        return self.live[self.settled.pop()]

    async def _operate(self, session: aiohttp.ClientSession, op: str, rng: random.Random) -> None:
        target = None if op == "create" else self._take(rng)
        if target is None:
            op = "create"
        if op == "create":
            tags = self._new_tags()
            self.on_create()
            answer = await self._request(session, op, "POST", "/worklists/create", {"Tags": tags})
            if answer is not None:
                item = BridgeItem(str(answer["ID"]), tags["AccessionNumber"], tags)
                self.live[item.item_id] = item
                self._enqueue("create", item)
            return
        assert target is not None
        path = f"/worklists/{target.item_id}"
        if op == "get":
            answer = await self._request(session, op, "GET", path)
            read = answer.get("Tags") if answer is not None else None
            if answer is not None and (
                not isinstance(read, dict) or read.get("AccessionNumber") != target.accession
            ):
                self.rest_errors.append(f"GET {path}: not the item created (AccessionNumber differs)")
            self.settled.append(target.item_id)
        elif op == "update":
            tags = copy.deepcopy(target.tags)
            minutes = rng.randrange(7 * 60, 19 * 60, 5)
            tags[SPS][0]["ScheduledProcedureStepStartTime"] = f"{minutes // 60:02d}{minutes % 60:02d}00"
            tags["RequestedProcedurePriority"] = rng.choice(("ROUTINE", "HIGH", "STAT"))
            if await self._request(session, op, "PUT", path, {"Tags": tags}) is None:
                self.settled.append(target.item_id)
                return
            target.tags = tags
            self._enqueue("update", target)
        elif op == "delete":
            if await self._request(session, op, "DELETE", path) is None:
                self.settled.append(target.item_id)
                return
            self.gone[target.item_id] = self.live.pop(target.item_id)
            self._enqueue("delete", target)
        else:  # the study arrived: the housekeeper deletes its items
            body = {"StudyInstanceUID": target.tags["StudyInstanceUID"]}
            if await self._request(session, op, "POST", "/studies/stable", body) is None:
                self.settled.append(target.item_id)
                return
            self.gone[target.item_id] = self.live.pop(target.item_id)
            self._enqueue("stable", target)

    def _enqueue(self, kind: str, item: BridgeItem) -> None:
        """Have the change checked by C-FIND; creates and updates only while the checkers keep up (the final
        checks see every item anyway), deletes and studies always (the final count waits for them)."""
        if kind in ("create", "update") and self._queue.qsize() >= CHECK_BACKLOG:
            self.unchecked += 1
            self.settled.append(item.item_id)
            return
        self._queue.put_nowait((kind, item, time.monotonic()))

    async def run(self, duration: float, rate: float) -> None:
        """Operations at `rate` per second for `duration` s, then wait for every change's check.

        At most IN_FLIGHT requests at a time (a RIS interface engine with a few outbound threads): when the
        API is slower than the pace, the bridge falls behind rather than piling requests up.
        """
        rng = random.Random(f"{self.seed}:bridge")
        checkers = [asyncio.create_task(self._checker()) for _ in range(CHECKERS)]
        gate = asyncio.Semaphore(IN_FLIGHT)
        running: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            running.discard(task)
            gate.release()
            if not task.cancelled() and task.exception() is not None:
                self.rest_errors.append(f"bridge operation crashed: {task.exception()!r}")

        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            began = time.monotonic()
            while (now := time.monotonic()) < began + duration:
                pause = began + self.operations / rate - now
                if pause > 0:
                    await asyncio.sleep(pause)
                await gate.acquire()
                op = PATTERN[self.operations % len(PATTERN)]
                task = asyncio.create_task(self._operate(session, op, rng))
                running.add(task)
                task.add_done_callback(finished)
                self.operations += 1
            await asyncio.gather(*running, return_exceptions=True)
            self.elapsed_s = time.monotonic() - began
        try:
            await asyncio.wait_for(self._queue.join(), DRAIN_TIMEOUT)
        except TimeoutError:
            self.checks.append(CheckOutcome("drain", 0.0, 0, wrong="checks still pending after the soak"))
        for task in checkers:
            task.cancel()
        await asyncio.gather(*checkers, return_exceptions=True)

    # -- C-FIND checks -------------------------------------------------------------------------------------

    async def _checker(self) -> None:
        while True:
            kind, item, since = await self._queue.get()
            try:
                self.checks.append(await self._check(kind, item, since))
                if kind in ("create", "update"):
                    self.settled.append(item.item_id)
            finally:
                self._queue.task_done()

    async def _check(self, kind: str, item: BridgeItem, since: float) -> CheckOutcome:
        """C-FIND the item's accession number until the change shows; `since`: the REST answer.

        The time bound runs from the first association, not from `since`: under load the checkers fall
        behind the bridge, and a change must not fail for the time it waited for a checker.
        """
        first = time.monotonic()
        deadline = max(first, since) + (STABLE_TIMEOUT if kind == "stable" else VISIBLE_TIMEOUT)
        outcome = CheckOutcome(kind, 0.0, 0, queued=first - since)
        while True:
            outcome.associations += 1
            try:
                result = await asyncio.to_thread(find_accession, self.scp_port, item.accession)
            except (OSError, dimse.DimseError) as exc:
                outcome.error = f"{type(exc).__name__}: {exc}"
                return outcome
            if result.status != 0:
                outcome.error = f"final status {result.status:#06x}"
                return outcome
            problem = difference(kind, item, result)
            outcome.seconds = time.monotonic() - since
            if not problem:
                return outcome
            if time.monotonic() > deadline:
                outcome.wrong = problem
                return outcome
            await asyncio.sleep(POLL)


def find_accession(port: int, accession: str, *, calling: str = "RISCHECK") -> dimse.FindResult:
    ds = identifier({"AccessionNumber": accession}, {})
    return dimse.find(
        "127.0.0.1",
        port,
        encode(ds, implicit=True),
        encode(ds, implicit=False),
        calling=calling,
        keep=True,
        timeout=60,
    )


def difference(kind: str, item: BridgeItem, result: dimse.FindResult) -> str:
    """What the C-FIND answer misses of the change made, or ""."""
    if kind in ("delete", "stable"):
        return f"{result.answers} answer(s) for a {kind}d item" if result.answers else ""
    if result.answers != 1:
        return f"{result.answers} answer(s) after {kind}, expected 1"
    implicit = result.transfer_syntax == dimse.IMPLICIT_LE
    answer = decode(BytesIO(result.identifiers[0]), implicit, True)
    wanted = item.tags[SPS][0]["ScheduledProcedureStepStartTime"]
    got = answer.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime
    return "" if got == wanted else f"start time {got!r} after {kind}, expected {wanted!r}"
