"""Property tests on the C-FIND identifier decoder and the matcher, with hypothesis.

Whatever bytes a modality sends as identifier, the SCP decodes them (pydicom, then services.scp.charsets),
compiles the query (shared.matching.compile_query) and matches it against stored items (match_item). Reading
may fail in pydicom for bytes that are no dataset (the SCP answers A900 "cannot be decoded"); once read,
compiling fails only with InvalidIdentifier (A900 naming the offending element), and matching and turning a
match into an answer never fail, for identifiers of any shape and for any item the REST API can store.
"""

from __future__ import annotations

from contextlib import suppress
from io import BytesIO
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydicom import Dataset
from pynetdicom.dsutils import decode, encode

from services.scp.charsets import decode_query, with_character_set
from shared.dicom_json import TagsError, dataset_from_tags, dicom_json_dict, dicom_json_to_dataset
from shared.matching import CompiledQuery, InvalidIdentifier, MatchOptions, compile_query, match_item
from tests.support import raw_dimse as rd
from tests.support.fuzz_cases import ALL_VRS, KEYS, SELECTORS
from tests.support.fuzz_cases import encode as encode_dataset

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about each odd value

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OPTIONS = (MatchOptions(), MatchOptions(case_sensitive_pn=False, combined_datetime=False))
START_DATE = "ScheduledProcedureStepStartDate"

# --------------------------------------------------------------------------------------------------------
# Identifiers as they come off the wire: any tag, any declared VR, any value, nested items


tags = st.one_of(
    st.sampled_from([tag for tag, _ in KEYS] + list(SELECTORS.values())),
    st.integers(0, 0xFFFFFFFF),
    st.sampled_from([0x00080005, 0x00100000, 0x00090010, 0x00091001, 0xFFFEE000, 0x00020010]),
)
values = st.one_of(
    st.binary(max_size=24),
    st.text(alphabet="AZaz09^=*?\\-. ÄéЖ山\x1b", max_size=24).map(lambda text: text.encode("utf-8")),
    st.sampled_from([b"", b"*", b"?", b"\\", b"20251014-20251015", b"0800-", b"1.2.3\\1.2.4", b"+0100"]),
)


@st.composite
def wire_dataset(draw: st.DrawFn, explicit: bool, depth: int = 0) -> bytes:
    """Encoded elements in any order; some sequences, of items of the same kind, up to 3 levels deep."""
    parts: list[bytes] = []
    for _ in range(draw(st.integers(0, 6))):
        tag = draw(tags)
        if depth < 3 and draw(st.integers(0, 4)) == 0:
            items = [draw(wire_dataset(explicit, depth + 1)) for _ in range(draw(st.integers(0, 2)))]
            undefined = draw(st.booleans())
            encoded = [rd.item(item, undefined=undefined) for item in items]
            parts.append(rd.sequence(tag, encoded, explicit=explicit, undefined=undefined))
        else:
            parts.append(rd.element(tag, draw(st.sampled_from(ALL_VRS)), draw(values), explicit=explicit))
    if draw(st.booleans()):
        parts.sort()
    return b"".join(parts)


def read(raw: bytes, explicit: bool) -> tuple[Dataset, list[str] | None] | None:
    """The identifier as the SCP reads it, or None when reading fails (answered A900 by the SCP)."""
    try:
        identifier = decode(BytesIO(raw), not explicit, True)
        return identifier, decode_query(identifier, "ISO_IR 100")
    except Exception:
        return None


def answer_of(response: dict[str, Any], terms: list[str] | None) -> None:
    """Turn a match into the answer the SCP sends; a TagsError is a damaged item the SCP skips."""
    try:
        dataset = dicom_json_to_dataset(with_character_set(response, terms))
    except TagsError:
        return
    encode(dataset, True, True)
    encode(dataset, False, True)


# --------------------------------------------------------------------------------------------------------
# Stored items, as the REST API stores them (dataset_from_tags) and as the SCP finds them


def _item(tags: dict[str, Any]) -> dict[str, Any]:
    return dicom_json_dict(dataset_from_tags(tags))


STORED = [
    _item(
        {
            "SpecificCharacterSet": "ISO_IR 192",
            "PatientName": "Doe^John",
            "PatientID": "P1",
            "AccessionNumber": "A1",
            "StudyInstanceUID": "1.2.3",
            "PatientBirthDate": "19700101",
            "ScheduledProcedureStepSequence": [
                {
                    "Modality": "CT",
                    "ScheduledStationAETitle": "CT01",
                    "ScheduledProcedureStepStartDate": "20251014",
                    "ScheduledProcedureStepStartTime": "093000",
                    "ScheduledProtocolCodeSequence": [{"CodeValue": "X1", "CodingSchemeDesignator": "L"}],
                },
                {"Modality": "MR", "ScheduledProcedureStepStartDate": "20251015"},
            ],
        }
    ),
    _item(
        {"PatientName": "Yamada^Tarou=山田^太郎", "PatientID": "P2", "ScheduledProcedureStepSequence": [{}]}
    ),
    _item({"PatientID": "P3", "ReferencedStudySequence": [{"ReferencedSOPInstanceUID": "1.2.4"}]}),
    _item({"PatientName": "Müller", "ScheduledProcedureStepSequence": None, "Rows": "512"}),
]


@FAST
@given(explicit=st.booleans(), data=st.data())
def test_a_read_identifier_compiles_or_is_refused_with_invalid_identifier(
    explicit: bool, data: st.DataObject
) -> None:
    read_back = read(data.draw(wire_dataset(explicit)), explicit)
    event("read" if read_back is not None else "unreadable")
    if read_back is None:
        return
    identifier, terms = read_back
    for options in OPTIONS:
        try:
            query = compile_query(identifier, options)
        except InvalidIdentifier as refused:
            assert len(refused.comment) <= 64  # ErrorComment is LO
            event("refused")
            continue
        event("compiled")
        for item in STORED:
            for response in match_item(query, item):
                event("answered")
                answer_of(response, terms)


@FAST
@given(explicit=st.booleans(), raw=st.binary(max_size=200))
def test_random_bytes_are_read_and_compiled_or_refused(explicit: bool, raw: bytes) -> None:
    read_back = read(raw, explicit)
    if read_back is not None:
        with suppress(InvalidIdentifier):
            compile_query(read_back[0], MatchOptions())


# --------------------------------------------------------------------------------------------------------
# Any item the REST API accepts, matched by queries of every matching type


def _query(**keys: Any) -> Dataset:
    query = Dataset()
    query.SpecificCharacterSet = "ISO_IR 192"
    steps = keys.pop("steps", None)
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    if steps is not None:
        step = Dataset()
        for keyword, value in steps.items():
            setattr(step, keyword, value)
        query.ScheduledProcedureStepSequence = [step]
    return query


QUERIES = [
    _query(PatientName="", PatientID="", steps={"Modality": "", "ScheduledStationAETitle": ""}),
    _query(PatientName="D*^J?hn", steps={"Modality": "CT\\MR"}),
    _query(PatientName="yamada*=山田*", PatientBirthDate="19700101-19801231"),
    _query(StudyInstanceUID="1.2.3\\1.2.4", AccessionNumber="A?"),
    _query(steps={START_DATE: "20251014-20251015", "ScheduledProcedureStepStartTime": "1800-0800"}),
    _query(steps={START_DATE: "-20251014", "ScheduledProtocolCodeSequence": [_query(CodeValue="X1")]}),
    _query(ReferencedStudySequence=[_query(ReferencedSOPInstanceUID="1.2.4")], PatientID="*"),
    _query(Rows=512, PatientSex="", ScheduledProcedureStepSequence=[]),
    _query(AcquisitionDateTime="20251014093000+0100-20251015", TimezoneOffsetFromUTC="-0500"),
]  # fmt: skip


def _compiled(query: Dataset, options: MatchOptions) -> CompiledQuery:
    read_back = read(encode_dataset(query, implicit=False), explicit=True)
    assert read_back is not None
    return compile_query(read_back[0], options)


COMPILED = [_compiled(query, options) for query in QUERIES for options in OPTIONS]

KEYWORDS = (
    "PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID", "PatientBirthDate", "PatientSex",
    "RequestedProcedureID", "ReferringPhysicianName", "AcquisitionDateTime", "Rows", "SpecificCharacterSet",
)  # fmt: skip
STEP_KEYWORDS = (
    "Modality", "ScheduledStationAETitle", START_DATE, "ScheduledProcedureStepStartTime",
    "ScheduledProcedureStepID", "ScheduledPerformingPhysicianName", "ScheduledProcedureStepStatus",
)  # fmt: skip
tag_values = st.one_of(
    st.none(),
    st.text(max_size=16),
    st.sampled_from(["", "20251014", "093000", "CT", "1.2.3", "Doe^John=山田", "512", "M", "ISO_IR 100"]),
)
step_tags = st.dictionaries(st.sampled_from(STEP_KEYWORDS), tag_values, max_size=5)
item_tags = st.dictionaries(st.sampled_from(KEYWORDS), tag_values, max_size=6).flatmap(
    lambda top: st.one_of(
        st.just(top),
        st.lists(step_tags, max_size=3).map(lambda steps: {**top, "ScheduledProcedureStepSequence": steps}),
    )
)


@FAST
@given(tags=item_tags)
def test_any_storable_item_is_matched_without_error(tags: dict[str, Any]) -> None:
    try:
        item = _item(tags)
    except TagsError:
        return  # the REST API refuses it with 400: never stored
    steps = len(item.get("00400100", {}).get("Value") or [])
    for query in COMPILED:
        responses = match_item(query, item)
        assert len(responses) <= steps  # one answer per matching step, none without a step
        for response in responses:
            assert set(response) == {node.key for node in query.top.nodes}  # exactly the requested keys
            answer_of(response, None)
