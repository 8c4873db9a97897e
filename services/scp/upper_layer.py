"""The DICOM Upper Layer's PDUs as the acceptor sends and checks them (PS3.8 9.3): types, limits, A-ABORT,
A-RELEASE-RP and P-DATA-TF framing, and the errors that end an association."""

from __future__ import annotations

import struct

# PDU types (PS3.8 9.3.1).
ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA_PDU = 0x01, 0x02, 0x03, 0x04
RELEASE_RQ, RELEASE_RP, ABORT = 0x05, 0x06, 0x07
# The maximum length we announce for PDUs we receive (pynetdicom's default, PS3.8 D.1).
MAX_PDU_RECEIVE = 16382
# What we read at most in one PDU. Many SCUs ignore the announced length, and pynetdicom read any, so we are
# lenient, within a bound that no hostile length can push memory past.
MAX_PDU_READ = 4 * 1024 * 1024
# An A-ASSOCIATE-RQ proposing every SOP class there is stays well under this.
MAX_ASSOCIATE_RQ = 256 * 1024
# A-ABORT sources and reasons (PS3.8 9.3.8).
SERVICE_USER, SERVICE_PROVIDER = 0x00, 0x02
UNRECOGNIZED_PDU, UNEXPECTED_PDU, INVALID_PARAMETER = 0x01, 0x02, 0x06


class ProtocolError(Exception):
    """The peer broke PS3.8 or PS3.7: the association is aborted with this source and reason."""

    def __init__(self, message: str, source: int = SERVICE_PROVIDER, reason: int = INVALID_PARAMETER) -> None:
        super().__init__(message)
        self.source = source
        self.reason = reason


class PeerGone(Exception):
    """The connection closed, was reset, or stayed silent past the timeout."""


def abort_pdu(source: int, reason: int) -> bytes:
    return struct.pack(">BBIBBBB", ABORT, 0, 4, 0, 0, source, reason)


RELEASE_RP_PDU = struct.pack(">BBII", RELEASE_RP, 0, 4, 0)


def p_data(context_id: int, command: bytes, dataset: bytes | None, max_pdu: int) -> bytes:
    """One DIMSE message as P-DATA-TF PDUs, none longer than the peer accepts (`max_pdu`, 0: no limit).

    The command set and the data set each become PDV fragments of at most what fits a PDU; fragments share
    a PDU while they fit (most implementations send a response's command and answer in one).
    """
    room = max_pdu - 6 if max_pdu else 0  # a PDV item's header: 4 length + 1 context + 1 control
    pdvs: list[bytes] = []
    for control, data in ((0x01, command), (0x00, dataset)):
        if data is None:
            continue
        chunks = [data[i : i + room] for i in range(0, len(data), room)] if room else [data]
        chunks = chunks or [b""]
        for n, chunk in enumerate(chunks):
            last = 0x02 if n == len(chunks) - 1 else 0x00
            pdvs.append(struct.pack(">IBB", len(chunk) + 2, context_id, control | last) + chunk)
    out = bytearray()
    group: list[bytes] = []
    size = 0
    for pdv in pdvs:
        if group and max_pdu and size + len(pdv) > max_pdu:
            out += struct.pack(">BBI", P_DATA_PDU, 0, size) + b"".join(group)
            group, size = [], 0
        group.append(pdv)
        size += len(pdv)
    out += struct.pack(">BBI", P_DATA_PDU, 0, size) + b"".join(group)
    return bytes(out)
