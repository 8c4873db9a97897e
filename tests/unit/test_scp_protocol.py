"""The acceptor's codecs (services.scp.negotiation, messages, upper_layer): negotiation (PS3.8 7.1, PS3.7
D.3.3) and its cache, P-DATA-TF framing (PS3.8 9.3.5, E.2), response command sets (PS3.7 9.3.2, C.4.1.1).
Connections, states and hostile peers are covered from outside by tests/integration/test_scp_*."""

from __future__ import annotations

import struct
from io import BytesIO

import pytest
from pydicom import Dataset
from pynetdicom.dsutils import decode
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ

from services.scp.messages import echo_response, find_response, pending_response
from services.scp.negotiation import (
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    MODALITY_WORKLIST_FIND,
    PROTOCOL_VERSION,
    VERIFICATION,
    Negotiations,
    negotiate,
    reject_pdu,
    supported_contexts,
)
from services.scp.upper_layer import MAX_PDU_RECEIVE, ProtocolError, p_data
from tests.support import raw_dimse as rd

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def test_worklist_and_verification_are_accepted_in_the_preferred_syntax() -> None:
    request = rd.associate_rq(
        calling="CT01",
        contexts=[
            (1, MODALITY_WORKLIST_FIND, [EXPLICIT_VR_LE, IMPLICIT_VR_LE]),
            (3, MODALITY_WORKLIST_FIND, [EXPLICIT_VR_LE]),
            (5, VERIFICATION, [IMPLICIT_VR_LE]),
            (7, CT_IMAGE_STORAGE, [IMPLICIT_VR_LE]),
            (9, MODALITY_WORKLIST_FIND, ["1.2.840.10008.1.2.4.50"]),  # JPEG: no identifier travels in it
        ],
        max_length=32768,
    )
    negotiation = negotiate(request, supported_contexts())
    assert (negotiation.calling_aet, negotiation.called_aet, negotiation.peer_max_pdu) == (
        "CT01",
        "ORTHANC",
        32768,
    )
    assert {cid: cx.transfer_syntax for cid, cx in negotiation.contexts.items()} == {
        1: IMPLICIT_VR_LE,
        3: EXPLICIT_VR_LE,
        5: IMPLICIT_VR_LE,
    }
    assert negotiation.rejection is None
    accept = A_ASSOCIATE_AC()
    accept.decode(negotiation.accept)
    primitive = accept.to_primitive()
    results = {cx.context_id: cx.result for cx in primitive.presentation_context_definition_results_list}
    assert results == {1: 0x00, 3: 0x00, 5: 0x00, 7: 0x03, 9: 0x04}  # abstract / transfer syntax refused
    assert primitive.maximum_length_received == MAX_PDU_RECEIVE
    assert primitive.implementation_class_uid
    assert (primitive.calling_ae_title, primitive.called_ae_title) == ("CT01", "ORTHANC")


def test_malformed_contexts_are_dropped_and_the_rest_negotiated() -> None:
    good = rd.presentation_context(1, MODALITY_WORKLIST_FIND, [IMPLICIT_VR_LE])
    even_id = rd.presentation_context(2, VERIFICATION, [IMPLICIT_VR_LE])
    no_syntax = rd.presentation_context(3, VERIFICATION, [])
    request = bytearray(rd.associate_rq(contexts=[]))
    insert = 6 + 68 + 4 + len(rd.APPLICATION_CONTEXT)  # after the application context item
    request[insert:insert] = good + even_id + no_syntax
    struct.pack_into(">I", request, 2, len(request) - 6)
    negotiation = negotiate(bytes(request), supported_contexts())
    assert list(negotiation.contexts) == [1]


def test_an_unknown_protocol_version_is_rejected() -> None:
    request = bytearray(rd.associate_rq())
    request[6:8] = b"\x00\x02"
    negotiation = negotiate(bytes(request), supported_contexts())
    assert negotiation.rejection == PROTOCOL_VERSION
    reject = A_ASSOCIATE_RJ()
    reject.decode(reject_pdu(PROTOCOL_VERSION))
    assert (reject.result, reject.source, reject.reason_diagnostic) == (0x01, 0x02, 0x02)


def test_an_undecodable_request_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        negotiate(rd.pdu(rd.ASSOCIATE_RQ, b"\x00\x01" + bytes(20)), supported_contexts())


def test_a_request_is_negotiated_once_and_the_cache_stays_bounded() -> None:
    negotiations = Negotiations(capacity=2)
    first = negotiations.get(rd.associate_rq(calling="CT01"))
    assert negotiations.get(rd.associate_rq(calling="CT01")) is first
    assert negotiations.get(rd.associate_rq(calling="MR01")).calling_aet == "MR01"
    negotiations.get(rd.associate_rq(calling="US01"))
    assert negotiations.get(rd.associate_rq(calling="CT01")) is not first  # the oldest went first


def _pdus(data: bytes) -> list[bytes]:
    pdus, offset = [], 0
    while offset < len(data):
        kind, length = data[offset], struct.unpack_from(">I", data, offset + 2)[0]
        assert kind == rd.P_DATA_TF
        pdus.append(data[offset + 6 : offset + 6 + length])
        offset += 6 + length
    return pdus


@pytest.mark.parametrize("max_pdu", [0, 16382, 1024, 256])
def test_pdus_never_exceed_the_peers_maximum_and_carry_the_whole_message(max_pdu: int) -> None:
    command = pending_response(7, MODALITY_WORKLIST_FIND, 0xFF00)
    identifier = bytes(range(256)) * 20  # 5120 bytes: fragmented under 1024
    received = {0x01: b"", 0x00: b""}
    lasts = {0x01: 0, 0x00: 0}
    for body in _pdus(p_data(3, command, identifier, max_pdu)):
        assert not max_pdu or 6 + len(body) - 6 <= max_pdu  # the PDU length field counts the PDV items
        offset = 0
        while offset < len(body):
            length, context, header = struct.unpack_from(">IBB", body, offset)
            assert context == 3
            received[header & 0x01] += body[offset + 6 : offset + 4 + length]
            lasts[header & 0x01] += bool(header & 0x02)
            offset += 4 + length
    assert received[0x00] == identifier and received[0x01] == command
    assert lasts == {0x01: 1, 0x00: 1}  # each part's last fragment, and only it, says so


def test_a_final_failure_carries_its_comment_and_offending_elements() -> None:
    status = Dataset()
    status.Status = 0xA900
    status.OffendingElement = [0x00100010]
    status.ErrorComment = "Invalid query"
    command = decode(BytesIO(find_response(9, MODALITY_WORKLIST_FIND, status)), True, True)
    assert (command.CommandField, command.MessageIDBeingRespondedTo, command.Status) == (0x8020, 9, 0xA900)
    assert command.ErrorComment == "Invalid query"
    assert command.OffendingElement == 0x00100010
    assert command.CommandDataSetType == 0x0101  # no identifier follows a final response
    assert struct.unpack("<HH", find_response(9, MODALITY_WORKLIST_FIND, 0)[:4]) == (
        0,
        0,
    )  # group length first


def test_echo_response_is_success() -> None:
    command = decode(BytesIO(echo_response(4, VERIFICATION)), True, True)
    assert (command.CommandField, command.MessageIDBeingRespondedTo, command.Status) == (0x8030, 4, 0)
    assert command.AffectedSOPClassUID == VERIFICATION


def test_a_pending_response_says_an_identifier_follows() -> None:
    command = decode(BytesIO(pending_response(7, MODALITY_WORKLIST_FIND, 0xFF01)), True, True)
    assert (command.CommandField, command.MessageIDBeingRespondedTo, command.Status) == (0x8020, 7, 0xFF01)
    assert command.CommandDataSetType != 0x0101
    assert command.AffectedSOPClassUID == MODALITY_WORKLIST_FIND
