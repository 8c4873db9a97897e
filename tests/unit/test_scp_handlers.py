"""What the SCP answers on an association (services.scp.handlers): refusals, statuses, the log line and the
metrics of each C-FIND, and the transfer syntaxes answered through pydicom. The association is a recording
double here; the protocol by test_scp_protocol, the acceptor by the integration tests."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from io import BytesIO

import pytest
from pydicom import Dataset
from pynetdicom.dsutils import decode, encode

from services.scp.association import FindRequest
from services.scp.handlers import WorklistServices
from services.scp.messages import MAX_IDENTIFIER_BYTES
from services.scp.negotiation import (
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    MODALITY_WORKLIST_FIND,
    TOO_MANY_ASSOCIATIONS,
    Context,
    Rejection,
)
from services.scp.policy import AccessPolicy
from shared.metrics import REFUSAL_REASONS, ScpMetrics
from tests.support.dicom_clients import worklist
from tests.unit.test_scp_find import TWO_STEPS, finder, query

ALLOW = AccessPolicy("ORTHANC", [], always_allow_find=True, check_called_aet=True, check_host=False)
DENY = AccessPolicy("ORTHANC", [], always_allow_find=False, check_called_aet=False, check_host=False)


@dataclass
class RecordingAssociation:
    """What WorklistServices.find uses of an Association, recording what it sends."""

    calling_aet: str = "CT01"
    host: str = "192.0.2.1"
    connected: bool = True
    cancel_after: int | None = None
    pending: list[tuple[int, bytes]] = field(default_factory=list)
    finals: list[int | Dataset] = field(default_factory=list)

    def send_pending(self, request: FindRequest, command: bytes, identifier: bytes) -> None:
        self.pending.append((int(decode(BytesIO(command), True, True).Status), identifier))

    def send_final(self, request: FindRequest, status: int | Dataset) -> None:
        self.finals.append(status)

    def is_cancelled(self, request: FindRequest) -> bool:
        return self.cancel_after is not None and len(self.pending) >= self.cancel_after

    @property
    def final_status(self) -> int:
        [final] = self.finals
        return int(final.Status) if isinstance(final, Dataset) else int(final)


def request(identifier: Dataset | bytes | None, syntax: str = IMPLICIT_VR_LE) -> FindRequest:
    if isinstance(identifier, Dataset):
        implicit, little = syntax == IMPLICIT_VR_LE, syntax != EXPLICIT_VR_BE
        data = encode(identifier, implicit, little, syntax == DEFLATED_EXPLICIT_VR_LE)
        assert data is not None
        identifier = data
    size = len(identifier) if identifier is not None else 0
    return FindRequest(
        7, MODALITY_WORKLIST_FIND, Context(1, MODALITY_WORKLIST_FIND, syntax), identifier, size
    )


def services(items: list[dict[str, object]], policy: AccessPolicy = ALLOW) -> WorklistServices:
    return WorklistServices(finder(items), policy, ScpMetrics())


def sample(metrics: ScpMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels or None) or 0.0


@pytest.mark.parametrize("syntax", [IMPLICIT_VR_LE, EXPLICIT_VR_LE, DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE])
def test_each_matching_step_is_answered_in_the_negotiated_syntax(syntax: str) -> None:
    assoc = RecordingAssociation()
    services([TWO_STEPS]).find(assoc, request(query(), syntax))
    assert [status for status, _ in assoc.pending] == [0xFF00, 0xFF00]
    assert assoc.final_status == 0x0000
    implicit, little = syntax == IMPLICIT_VR_LE, syntax != EXPLICIT_VR_BE
    deflated = syntax == DEFLATED_EXPLICIT_VR_LE
    modalities = sorted(
        decode(BytesIO(data), implicit, little, deflated).ScheduledProcedureStepSequence[0].Modality
        for _, data in assoc.pending
    )
    assert modalities == ["CT", "MR"]


def test_refused_caller_gets_a_failure_with_comment_and_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    assoc = RecordingAssociation(calling_aet="STRANGER")
    services([TWO_STEPS], DENY).find(assoc, request(query()))
    assert assoc.pending == []
    [final] = assoc.finals
    assert isinstance(final, Dataset) and final.Status == 0xC003
    assert "not allowed" in final.ErrorComment
    assert "STRANGER" in caplog.text and "DicomAlwaysAllowFindWorklist" in caplog.text


def test_an_identifier_over_32_kib_is_refused_unread() -> None:
    assoc = RecordingAssociation()
    oversized = FindRequest(
        7,
        MODALITY_WORKLIST_FIND,
        Context(1, MODALITY_WORKLIST_FIND, IMPLICIT_VR_LE),
        b"",
        MAX_IDENTIFIER_BYTES + 1,
    )
    services([TWO_STEPS]).find(assoc, oversized)
    assert assoc.final_status == 0xA900
    assert "32 KiB" in assoc.finals[0].ErrorComment  # type: ignore[union-attr]


def test_a_cfind_without_identifier_is_a900() -> None:
    assoc = RecordingAssociation()
    services([TWO_STEPS]).find(assoc, request(None))
    assert assoc.final_status == 0xA900


@pytest.mark.parametrize("syntax", [IMPLICIT_VR_LE, EXPLICIT_VR_BE])
def test_undecodable_identifier_is_a900(syntax: str) -> None:
    assoc = RecordingAssociation()
    # A sequence of undefined length that never ends: pydicom cannot read it in either byte order.
    truncated = b"\x40\x00\x00\x01\xff\xff\xff\xff\x00\x00\x00\x00"
    if syntax == EXPLICIT_VR_BE:
        truncated = b"\x00\x40\x01\x00SQ\x00\x00\xff\xff\xff\xff\x00\x00\x00\x00"
    services([TWO_STEPS]).find(assoc, request(truncated, syntax))
    assert assoc.final_status == 0xA900


def test_cancel_ends_with_fe00_after_the_answers_already_sent() -> None:
    assoc = RecordingAssociation(cancel_after=1)
    services([TWO_STEPS, TWO_STEPS]).find(assoc, request(query()))
    assert 1 <= len(assoc.pending) < 4
    assert assoc.final_status == 0xFE00


def test_a_modality_gone_gets_nothing_more() -> None:
    assoc = RecordingAssociation(connected=False)
    services([TWO_STEPS]).find(assoc, request(query()))
    assert assoc.pending == [] and assoc.finals == []


def test_log_line_has_caller_count_and_duration_but_no_patient_data(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    item = worklist(name="Secretname^Patient", patient_id="PID-SECRET")
    assoc = RecordingAssociation()
    services([item]).find(assoc, request(query(PatientID="PID-SECRET")))
    assert len(assoc.pending) == 1
    assert "C-FIND from 'CT01': 1 answer(s)" in caplog.text
    assert " ms" in caplog.text
    assert "Secretname" not in caplog.text and "PID-SECRET" not in caplog.text


def test_log_line_carries_structured_fields(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    services([TWO_STEPS]).find(RecordingAssociation(), request(query()))
    [record] = [r for r in caplog.records if r.getMessage().startswith("C-FIND from")]
    fields = record.__dict__
    assert (fields["calling_ae"], fields["status"], fields["answers"]) == ("CT01", "0x0000", 2)
    assert fields["candidates"] == 1 and fields["duration_ms"] >= 0


def test_each_cfind_is_counted_with_its_status_latency_and_answers() -> None:
    handler = services([TWO_STEPS])
    handler.find(RecordingAssociation(), request(query()))
    handler.find(RecordingAssociation(), request(query(Modality="US")))
    metrics = handler.metrics
    assert sample(metrics, "mwl_cfind_requests_total", status="success") == 2
    assert sample(metrics, "mwl_cfind_duration_seconds_count") == 2
    assert sample(metrics, "mwl_cfind_answers_sum") == 2
    assert sample(metrics, "mwl_cfind_answers_bucket", le="0.0") == 1


def test_a_refused_cfind_counts_as_refused_not_as_a_refused_association() -> None:
    handler = services([TWO_STEPS], DENY)
    handler.find(RecordingAssociation(calling_aet="STRANGER"), request(query()))
    assert sample(handler.metrics, "mwl_cfind_requests_total", status="refused") == 1
    for reason in REFUSAL_REASONS:
        assert sample(handler.metrics, "mwl_associations_refused_total", reason=reason) == 0


def test_policy_rejections_are_counted_by_reason(caplog: pytest.LogCaptureFixture) -> None:
    handler = services([])
    assert handler.check_association("CT01", "ORTHANC", "192.0.2.1") is None
    assert handler.check_association("CT01", "SOMEONE", "192.0.2.1") == Rejection(0x01, 0x01, 0x07)
    assert sample(handler.metrics, "mwl_associations_refused_total", reason="called_aet") == 1
    assert sample(handler.metrics, "mwl_associations_refused_total", reason="calling_aet_host") == 0
    assert "SOMEONE" in caplog.text and "DicomCheckCalledAet" in caplog.text


def test_the_acceptors_own_rejections_are_counted_by_reason(caplog: pytest.LogCaptureFixture) -> None:
    handler = services([])
    handler.association_rejected(TOO_MANY_ASSOCIATIONS, "CT01", "192.0.2.1")
    handler.association_rejected(Rejection(0x01, 0x02, 0x02), "CT01", "192.0.2.1")
    assert sample(handler.metrics, "mwl_associations_refused_total", reason="too_many_associations") == 1
    assert sample(handler.metrics, "mwl_associations_refused_total", reason="other") == 1
    assert "too many associations" in caplog.text and "CT01" in caplog.text
