"""Association negotiation (PS3.8 7.1, PS3.7 D.3.3) with pynetdicom's PDU codecs and its acceptor rules
(`negotiate_as_acceptor`): which presentation contexts are accepted, in which transfer syntax, and the
A-ASSOCIATE-AC or -RJ that says so.

An A-ASSOCIATE-RQ is negotiated once per distinct request: a modality sends the same bytes every time, and
the A-ASSOCIATE-AC they call for is kept with them (the access policy is still checked every time).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_items import PresentationContextItemRQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor

from services.scp.upper_layer import MAX_PDU_RECEIVE, ProtocolError

MODALITY_WORKLIST_FIND = "1.2.840.10008.5.1.4.31"
VERIFICATION = "1.2.840.10008.1.1"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"
# In order of preference, as pynetdicom's AE offered them.
TRANSFER_SYNTAXES = (IMPLICIT_VR_LE, EXPLICIT_VR_LE, DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE)

# Distinct A-ASSOCIATE-RQs whose negotiation is kept.
_NEGOTIATIONS = 256


@dataclass(frozen=True)
class Context:
    context_id: int
    abstract_syntax: str
    transfer_syntax: str

    @property
    def implicit(self) -> bool:
        return self.transfer_syntax == IMPLICIT_VR_LE

    @property
    def little_endian_plain(self) -> bool:
        """Implicit or explicit VR little endian, the syntaxes answers are pre-encoded in."""
        return self.transfer_syntax in (IMPLICIT_VR_LE, EXPLICIT_VR_LE)


@dataclass(frozen=True)
class Rejection:
    """An A-ASSOCIATE-RJ: result, source, diagnostic (PS3.8 9.3.4)."""

    result: int
    source: int
    diagnostic: int


# Rejected-transient by the service provider (presentation related): local limit exceeded.
TOO_MANY_ASSOCIATIONS = Rejection(0x02, 0x03, 0x02)
# Rejected-permanent by the service provider (ACSE related): protocol version not supported.
PROTOCOL_VERSION = Rejection(0x01, 0x02, 0x02)


@dataclass(frozen=True)
class Negotiation:
    """What one A-ASSOCIATE-RQ asked for and the answer it calls for (the A-ASSOCIATE-AC bytes)."""

    calling_aet: str
    called_aet: str
    peer_max_pdu: int  # 0: no limit
    contexts: dict[int, Context]  # the accepted ones
    accept: bytes
    rejection: Rejection | None = None  # the request itself is unacceptable (protocol version)


def supported_contexts() -> list[PresentationContext]:
    contexts = []
    for abstract in (MODALITY_WORKLIST_FIND, VERIFICATION):
        context = PresentationContext()
        context.abstract_syntax = abstract
        context.transfer_syntax = list(TRANSFER_SYNTAXES)
        contexts.append(context)
    return contexts


def _well_formed(item: Any) -> bool:
    """Whether pynetdicom can negotiate a proposed context: an odd id in 1-255, valid UIDs, an abstract
    syntax and at least one transfer syntax (PS3.8 9.3.2.2). pynetdicom raises on the others; they are
    dropped, and the request negotiated as if they had not been proposed."""
    if not isinstance(item, PresentationContextItemRQ):
        return True
    try:
        primitive = item.to_primitive()
    except (ValueError, TypeError):
        return False
    return bool(primitive.abstract_syntax) and bool(primitive.transfer_syntax)


def negotiate(data: bytes, contexts: list[PresentationContext]) -> Negotiation:
    """Decode an A-ASSOCIATE-RQ PDU and negotiate it (ProtocolError when it cannot be decoded)."""
    try:
        return _negotiate(data, contexts)
    except Exception as exc:
        raise ProtocolError(f"undecodable A-ASSOCIATE-RQ ({type(exc).__name__})") from None


def _negotiate(data: bytes, contexts: list[PresentationContext]) -> Negotiation:
    request = A_ASSOCIATE_RQ()
    request.decode(data)
    request.variable_items = [item for item in request.variable_items if _well_formed(item)]
    primitive = request.to_primitive()
    calling, called = str(primitive.calling_ae_title), str(primitive.called_ae_title)
    peer_max = int(primitive.maximum_length_received or 0)
    if request.protocol_version != 0x0001:
        return Negotiation(calling, called, peer_max, {}, b"", PROTOCOL_VERSION)
    roles = {
        item.sop_class_uid: (item.scu_role, item.scp_role)
        for item in primitive.user_information
        if isinstance(item, SCP_SCU_RoleSelectionNegotiation) and item.sop_class_uid is not None
    }
    result, role_replies = negotiate_as_acceptor(
        primitive.presentation_context_definition_list, contexts, roles
    )
    accepted = [cx for cx in result if cx.result == 0x00]
    reply = A_ASSOCIATE()
    reply.application_context_name = APPLICATION_CONTEXT
    reply.calling_ae_title = primitive.calling_ae_title
    reply.called_ae_title = primitive.called_ae_title
    reply.result = 0x00
    reply.result_source = 0x01
    reply.presentation_context_definition_results_list = accepted + [cx for cx in result if cx.result != 0]
    maximum = MaximumLengthNotification()
    maximum.maximum_length_received = MAX_PDU_RECEIVE
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = PYNETDICOM_IMPLEMENTATION_VERSION
    reply.user_information = [maximum, implementation, version, *role_replies]
    accept = A_ASSOCIATE_AC(reply).encode()
    negotiated = {
        int(cx.context_id or 0): Context(
            int(cx.context_id or 0), str(cx.abstract_syntax), str(cx.transfer_syntax[0])
        )
        for cx in accepted
    }
    return Negotiation(calling, called, peer_max, negotiated, accept)


def reject_pdu(rejection: Rejection) -> bytes:
    primitive = A_ASSOCIATE()
    primitive.result = rejection.result
    primitive.result_source = rejection.source
    primitive.diagnostic = rejection.diagnostic
    return bytes(A_ASSOCIATE_RJ(primitive).encode())


class Negotiations:
    """Negotiations by A-ASSOCIATE-RQ bytes, the most recent _NEGOTIATIONS of them."""

    def __init__(self, capacity: int = _NEGOTIATIONS) -> None:
        self.capacity = capacity
        self.contexts = supported_contexts()
        self._entries: OrderedDict[bytes, Negotiation] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, data: bytes) -> Negotiation:
        with self._lock:
            found = self._entries.get(data)
            if found is not None:
                self._entries.move_to_end(data)
                return found
        negotiation = negotiate(data, self.contexts)
        with self._lock:
            self._entries[data] = negotiation
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return negotiation
