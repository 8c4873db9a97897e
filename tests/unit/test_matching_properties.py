"""Properties of matching: the SQL narrowing hints never hide a match; wildcards agree with a reference."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from shared.match_values import fold_pn, person_name_str, sps_start_key, wildcard_matcher
from shared.matching import CompiledQuery, InvalidIdentifier, MatchOptions, compile_query, match_item
from tests.unit.test_matching import dataset, item, q, step, stored, wire

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SPS_KEY = "00400100"

# --- Reference wildcard matcher ---------------------------------------------------------------------------


def reference_wildcard(pattern: str, value: str) -> bool:
    """Brute force C.2.2.2.4: try every way `*` can consume characters."""
    if not pattern:
        return not value
    head, rest = pattern[0], pattern[1:]
    if head == "*":
        return any(reference_wildcard(rest, value[i:]) for i in range(len(value) + 1))
    return bool(value) and (head == "?" or head == value[0]) and reference_wildcard(rest, value[1:])


@settings(max_examples=400)
@given(st.text(alphabet="ab*?", max_size=8), st.text(alphabet="ab", max_size=8))
def test_wildcard_matcher_agrees_with_brute_force(pattern: str, value: str) -> None:
    assert wildcard_matcher(pattern)(value) is reference_wildcard(pattern, value)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet="aB*?", min_size=1, max_size=6), st.text(alphabet="aBb", max_size=6))
def test_c_find_wildcards_agree_with_brute_force(pattern: str, value: str) -> None:
    assume(pattern.strip("*"))  # all stars is universal, not a pattern
    answers = match_item(compile_query(wire(q(PatientID=pattern)), MatchOptions()), item(PatientID=value))
    assert bool(answers) is reference_wildcard(pattern, value)


@settings(max_examples=300)
@given(st.text(alphabet="aAäÄß*?", max_size=6), st.text(alphabet="aAäÄßs", max_size=6))
def test_folded_wildcards_agree_with_brute_force_on_folded_text(pattern: str, value: str) -> None:
    folded_pattern = "".join(c if c in "*?" else fold_pn(c) for c in pattern)
    expected = reference_wildcard(folded_pattern, fold_pn(value))
    assert wildcard_matcher(pattern, fold=True)(fold_pn(value)) is expected


@given(st.text(max_size=12), st.text(max_size=12))
def test_fold_pn_maps_concatenation_to_concatenation(left: str, right: str) -> None:
    # What makes the folded name prefix a safe SQL narrowing: fold(prefix + rest) starts with fold(prefix).
    assert fold_pn(left + right) == fold_pn(left) + fold_pn(right)


# --- The narrowing hints never exclude a match --------------------------------------------------------------

NAMES = ["Doe^John", "DOE^JOHN", "Döe^Jöhn", "Doe^John^^", "Doe", "Smith^Ann"]
NAMES += ["Yamada^Tarou=山田^太郎", "=山田^太郎"]
IDS = ["P1", "P2", "p1", "P10"]
ACCESSIONS = ["A1", "A2", "a1"]
UIDS = ["1.2.3", "1.2.4", "1.2.5"]
AETS = ["CT1", "CT2", "MR1"]
MODALITIES = ["CT", "MR", "ct"]
SPS_IDS = ["S1", "S2"]
DATES = ["20251013", "20251014", "20251015", "2025.10.14"]
STORED_DATES = [*DATES, "", "garbage"]
TIMES = ["0000", "0759", "08", "0800", "080000.5", "1200", "1800", "2359", "235959"]
STORED_TIMES = [*TIMES, "", "9:30", "235960", "24"]


def likely(draw: st.DrawFn, pool: list[str], seen: Any) -> str:
    """Mostly the stored value (so that queries often match), else any value of the pool."""
    seen = person_name_str(seen) if isinstance(seen, dict) else seen
    if isinstance(seen, str) and seen and draw(st.integers(0, 9)) < 7:
        return seen
    return draw(st.sampled_from(pool))


def text_key(draw: st.DrawFn, pool: list[str], seen: Any) -> Any:
    """A query value for a text key: absent, universal, exact, a wildcard pattern, or several values."""
    if draw(st.integers(0, 2)):
        return None  # most keys are absent: queries with a few keys match often enough to test the hints
    base = likely(draw, pool, seen)
    kind = draw(st.sampled_from(["empty", "star", "exact", "exact", "exact", "prefix", "qmark", "multi"]))
    if kind in ("empty", "star"):
        return "" if kind == "empty" else "*"
    if kind == "prefix":
        return base[: draw(st.integers(0, len(base)))] + "*"
    if kind == "qmark":
        index = draw(st.integers(0, max(len(base) - 1, 0)))
        return base[:index] + "?" + base[index + 1 :]
    if kind == "multi":
        return [draw(st.sampled_from(pool)), base]
    return base


def range_key(draw: st.DrawFn, pool: list[str], seen: Any) -> str | None:
    """A DA or TM query value: absent, universal, single, closed or open range."""
    seen = seen if seen in pool else None  # a query never holds the unreadable values some items have
    low, high = likely(draw, pool, seen), likely(draw, pool, seen)
    if draw(st.booleans()):
        high = draw(st.sampled_from(pool))
    if draw(st.integers(0, 2)):
        return None
    kind = draw(st.sampled_from(["empty", "single", "range", "range", "from", "until"]))
    return {
        "empty": "",
        "single": low,
        "range": f"{low}-{high}",
        "from": f"{low}-",
        "until": f"-{high}",
    }[kind]


def first(elem: dict[str, Any] | None) -> Any:
    values = (elem or {}).get("Value") or []
    return values[0] if values else ""


@st.composite
def queries(draw: st.DrawFn, stored_item: dict[str, Any]) -> dict[str, Any]:
    """A query about `stored_item`: its own values, patterns of them, or other values of the pools."""
    sps = draw(st.sampled_from(stored_item[SPS_KEY]["Value"]))
    uids = st.lists(st.sampled_from([*UIDS, str(first(stored_item.get("0020000D")) or UIDS[0])]), min_size=1)
    top = {
        "PatientName": text_key(draw, NAMES, first(stored_item.get("00100010"))),
        "PatientID": text_key(draw, IDS, first(stored_item.get("00100020"))),
        "AccessionNumber": text_key(draw, ACCESSIONS, first(stored_item.get("00080050"))),
        "RequestedProcedureID": text_key(draw, ["R1", "R2"], first(stored_item.get("00401001"))),
        "StudyInstanceUID": draw(st.one_of(st.none(), st.none(), st.none(), st.just(""), uids)),
    }
    step_keys = {
        "ScheduledStationAETitle": text_key(draw, AETS, first(sps.get("00400001"))),
        "Modality": text_key(draw, MODALITIES, first(sps.get("00080060"))),
        "ScheduledProcedureStepID": text_key(draw, SPS_IDS, first(sps.get("00400009"))),
        "ScheduledProcedureStepStartDate": range_key(draw, DATES, first(sps.get("00400002"))),
        "ScheduledProcedureStepStartTime": range_key(draw, TIMES, first(sps.get("00400003"))),
    }
    keys: dict[str, Any] = {k: v for k, v in top.items() if v is not None}
    if draw(st.integers(0, 3)):
        keys["ScheduledProcedureStepSequence"] = [{k: v for k, v in step_keys.items() if v is not None}]
    return keys


def maybe(pool: list[str]) -> st.SearchStrategy[str | None]:
    return st.one_of(st.none(), st.sampled_from(pool))


def element(vr: str, value: Any) -> dict[str, Any]:
    if vr == "PN" and isinstance(value, str):
        groups = dict(zip(("Alphabetic", "Ideographic", "Phonetic"), value.split("="), strict=False))
        value = {k: v for k, v in groups.items() if v}
    values = value if isinstance(value, list) else [value]
    return {"vr": vr, "Value": values} if values != [""] else {"vr": vr}


@st.composite
def stored_items(draw: st.DrawFn) -> dict[str, Any]:
    """Stored items built as raw DICOM JSON, odd values included (multi-valued AETs, unreadable times)."""
    result: dict[str, Any] = {}
    for key, vr, pool in (
        ("00100010", "PN", NAMES),
        ("00100020", "LO", [*IDS, ""]),
        ("00080050", "SH", ACCESSIONS),
        ("00401001", "SH", ["R1", "R2"]),
        ("0020000D", "UI", UIDS),
    ):
        value = draw(maybe(pool))
        if value is not None:
            result[key] = element(vr, value)
    steps = []
    for _ in range(draw(st.integers(1, 3))):
        sps: dict[str, Any] = {}
        aet: str | list[str] | None = draw(
            st.one_of(maybe(AETS), st.lists(st.sampled_from(AETS), min_size=2, max_size=2))
        )
        for key, vr, step_value in (
            ("00400001", "AE", aet),
            ("00080060", "CS", draw(maybe(MODALITIES))),
            ("00400009", "SH", draw(maybe(SPS_IDS))),
            ("00400002", "DA", draw(maybe(STORED_DATES))),
            ("00400003", "TM", draw(maybe(STORED_TIMES))),
        ):
            if step_value is not None:
                sps[key] = element(vr, step_value)
        steps.append(sps)
    result[SPS_KEY] = {"vr": "SQ", "Value": steps}
    return result


def name_keys(elem: dict[str, Any] | None) -> list[str]:
    """patient_name_key as the store may fold it: from the normalized PN string or from the raw groups."""
    value = first(elem)
    if not isinstance(value, dict):
        return [fold_pn(str(value))]
    raw = "=".join(value.get(k, "") for k in ("Alphabetic", "Ideographic", "Phonetic")).rstrip("=")
    return [fold_pn(person_name_str(value)), fold_pn(raw)]


def hints_admit(query: CompiledQuery, stored_item: dict[str, Any], sps: dict[str, Any]) -> bool:
    """Apply the hints as the SQL lookup does, to the scheduled_steps row of one step.

    Every value of a multi-valued ScheduledStationAETitle must be indexed for the hint to be safe.
    """
    low, high = query.start_range or ("", "99999999999999")
    stations = (sps.get("00400001") or {}).get("Value") or [""]
    start = sps_start_key(str(first(sps.get("00400002"))), str(first(sps.get("00400003"))))
    prefix, uids = query.patient_name_prefix, query.study_instance_uids
    equal = [
        (query.modality, first(sps.get("00080060"))),
        (query.sps_id, first(sps.get("00400009"))),
        (query.patient_id, first(stored_item.get("00100020"))),
        (query.accession_number, first(stored_item.get("00080050"))),
        (query.requested_procedure_id, first(stored_item.get("00401001"))),
    ]
    return (
        all(hint is None or hint == column for hint, column in equal)
        and (query.station_aet is None or query.station_aet in stations)
        and (uids is None or first(stored_item.get("0020000D")) in uids)
        and (query.start_range is None or low <= start <= high)
        and (prefix is None or all(key.startswith(prefix) for key in name_keys(stored_item.get("00100010"))))
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stored_items(), st.data(), st.booleans(), st.booleans())
def test_hints_never_exclude_a_matching_step(
    stored_item: dict[str, Any], data: st.DataObject, case_sensitive_pn: bool, combined: bool
) -> None:
    keys = data.draw(queries(stored_item))
    try:
        query = compile_query(dataset(**keys), MatchOptions(case_sensitive_pn, combined))
    except InvalidIdentifier:
        assume(False)
        return
    for sps in stored_item[SPS_KEY]["Value"]:
        one_step = {**stored_item, SPS_KEY: {"vr": "SQ", "Value": [sps]}}
        if match_item(query, one_step):
            assert hints_admit(query, stored_item, sps)


def times_key(data: st.DataObject, pool: list[str]) -> str:
    low, high = data.draw(st.sampled_from(pool)), data.draw(st.sampled_from(pool))
    return data.draw(st.sampled_from(["", low, f"{low}-{high}", f"{low}-", f"-{high}", "*"]))


@settings(max_examples=500, deadline=None)
@given(
    st.data(),
    st.sampled_from(STORED_DATES),
    st.sampled_from(STORED_TIMES),
    st.booleans(),
)
def test_start_range_never_excludes_a_matching_step(
    data: st.DataObject, stored_date: str, stored_time: str, combined: bool
) -> None:
    """The densest case of the hints: the SPS start, combined or not, against awkward stored times."""
    keys = {
        "ScheduledProcedureStepStartDate": times_key(data, DATES),
        "ScheduledProcedureStepStartTime": times_key(data, TIMES),
    }
    options = MatchOptions(combined_datetime=combined)
    query = compile_query(dataset(ScheduledProcedureStepSequence=[keys]), options)
    sps = {"00400002": element("DA", stored_date), "00400003": element("TM", stored_time)}
    stored_item = {SPS_KEY: {"vr": "SQ", "Value": [sps]}}
    if match_item(query, stored_item):
        assert hints_admit(query, stored_item, sps)


def test_the_hint_model_can_refuse() -> None:
    """hints_admit is not vacuous: each hint, applied to a row that differs, refuses it."""
    stored_item = item(
        [step(ScheduledProcedureStepStartDate="20251014", ScheduledProcedureStepStartTime="0800")],
        PatientName="Doe^John",
        RequestedProcedureID="R1",
    )
    sps = stored_item[SPS_KEY]["Value"][0]
    mismatching: list[dict[str, Any]] = [
        {"PatientName": "Smith*"},
        {"PatientID": "P2"},
        {"AccessionNumber": "A2"},
        {"RequestedProcedureID": "R2"},
        {"StudyInstanceUID": ["1.2.4", "1.2.5"]},
        {"ScheduledProcedureStepSequence": [{"ScheduledStationAETitle": "MR1"}]},
        {"ScheduledProcedureStepSequence": [{"Modality": "MR"}]},
        {"ScheduledProcedureStepSequence": [{"ScheduledProcedureStepID": "S9"}]},
        {"ScheduledProcedureStepSequence": [{"ScheduledProcedureStepStartDate": "20251015"}]},
    ]
    for keys in mismatching:
        assert not hints_admit(compile_query(dataset(**keys), MatchOptions()), stored_item, sps), keys
    assert hints_admit(compile_query(dataset(PatientName="DOE*"), MatchOptions()), stored_item, sps)


def test_hints_are_exact_values_only() -> None:
    exact = compile_query(
        q(
            PatientID="P1",
            AccessionNumber="A1",
            RequestedProcedureID="R1",
            StudyInstanceUID="1.2.3",
            PatientName="Müller^Jürgen*",
            sps={"ScheduledStationAETitle": "CT1", "Modality": "CT", "ScheduledProcedureStepID": "S1"},
        ),
        MatchOptions(),
    )
    assert (exact.patient_id, exact.accession_number, exact.requested_procedure_id) == ("P1", "A1", "R1")
    assert (exact.station_aet, exact.modality, exact.sps_id) == ("CT1", "CT", "S1")
    assert exact.study_instance_uids == ("1.2.3",)
    assert exact.patient_name_prefix == "muller^jurgen"
    loose = compile_query(
        q(
            PatientID="P*",
            AccessionNumber="*",
            RequestedProcedureID="",
            PatientName="*Doe",
            sps={"ScheduledStationAETitle": "CT?", "Modality": ["CT", "MR"]},
        ),
        MatchOptions(),
    )
    assert (loose.patient_id, loose.accession_number, loose.requested_procedure_id) == (None, None, None)
    assert (loose.station_aet, loose.modality, loose.sps_id) == (None, None, None)
    assert loose.study_instance_uids is None
    assert loose.patient_name_prefix is None
    assert loose.start_range is None
    assert compile_query(q(PatientName="=山田*"), MatchOptions()).patient_name_prefix is None
    assert compile_query(q(PatientName="Doe^John^^"), MatchOptions()).patient_name_prefix == "doe^john"


def test_stored_helpers_build_real_dicom_json() -> None:
    assert stored(PatientName="Doe^John")["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}
