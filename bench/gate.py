"""The correctness gate: every server's answer count for each query beside the expected ones, and the lean
client's counts checked against pynetdicom's."""

from __future__ import annotations

import multiprocessing
from dataclasses import asdict, dataclass

from pydicom import Dataset

from bench import dimse
from bench.queries import Query, QueryInstance

# pynetdicom costs ~1.5 ms per answer as a client: it checks the lean client on queries up to this size.
PYNETDICOM_CHECK_LIMIT = 3000

# How each server is expected to count: ours per Scheduled Procedure Step (PS3.4 K.2.2.1), the peers per
# item (one answer, the whole item, when any of its steps matches).
MODEL = {"ours": "per_step", "wlmscpfs": "per_item", "orthanc": "per_item"}
DEVIATION = {
    "wlmscpfs": "answers once per item whose SPS sequence matches, not once per matching SPS",
    "orthanc": "answers once per item whose SPS sequence matches, not once per matching SPS",
}


@dataclass
class GateRow:
    server: str
    query: str
    keys: dict[str, str]
    answers: int
    status: int
    per_step: int
    per_item: int
    pynetdicom: int | None  # answers counted by pynetdicom (None: not checked)
    verdict: str  # "ok", "deviation" (a known peer deviation), "MISMATCH"
    note: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _pynetdicom_count(port: int, ds: Dataset, called: str) -> int:
    from pynetdicom import AE

    ae = AE(ae_title="BENCHCHK")
    ae.add_requested_context("1.2.840.10008.5.1.4.31")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        return -1
    count = 0
    try:
        for status, _ in assoc.send_c_find(ds, "1.2.840.10008.5.1.4.31"):
            if status and status.Status in (0xFF00, 0xFF01):
                count += 1
    finally:
        assoc.release()
    return count


def pynetdicom_counts(port: int, datasets: list[Dataset], called: str) -> list[int]:
    """In a child process: pynetdicom starts threads, and the load driver later forks this one."""
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        return pool.starmap(_pynetdicom_count, [(port, ds, called) for ds in datasets])


def check(
    server: str, port: int, queries: list[Query], *, called: str = "ORTHANC", variants: int = 3
) -> list[GateRow]:
    rows: list[GateRow] = []
    chosen: list[tuple[Query, QueryInstance]] = [(q, i) for q in queries for i in q.instances[:variants]]
    results = [dimse.find("127.0.0.1", port, i.implicit, i.explicit, called=called) for _, i in chosen]
    to_check = [k for k, (_, i) in enumerate(chosen) if max(i.expected.per_step, 1) <= PYNETDICOM_CHECK_LIMIT]
    counts = dict(
        zip(to_check, pynetdicom_counts(port, [chosen[k][1].dataset for k in to_check], called), strict=True)
    )
    for k, ((query, instance), result) in enumerate(zip(chosen, results, strict=True)):
        expected = instance.expected
        wanted = getattr(expected, MODEL[server])
        checked = counts.get(k)
        if result.status != 0:
            verdict, note = "MISMATCH", f"final status {result.status:#06x}"
        elif checked is not None and checked != result.answers:
            verdict, note = "MISMATCH", f"pynetdicom counted {checked}, the lean client {result.answers}"
        elif result.answers == expected.per_step:
            verdict, note = "ok", ""
        elif result.answers == wanted:
            verdict, note = "deviation", DEVIATION.get(server, "")
        else:
            verdict, note = (
                "MISMATCH",
                f"expected {expected.per_step} (per SPS) or {expected.per_item} (per item)",
            )
        rows.append(
            GateRow(
                server,
                query.name,
                instance.keys,
                result.answers,
                result.status,
                expected.per_step,
                expected.per_item,
                checked,
                verdict,
                note,
            )
        )
    return rows
