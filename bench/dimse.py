"""A lean DICOM C-FIND client on raw sockets, so that the load measures servers, not a client library.

One association per query, as modalities do: A-ASSOCIATE-RQ proposing the Modality Worklist FIND context
(explicit and implicit VR little endian), one C-FIND-RQ with its identifier, responses read until the final
status, A-RELEASE. Answers are counted, not decoded (`keep=True` keeps their bytes for checks).
PS3.8 9.3 (PDU structure) and PS3.7 9.3.2 / E (C-FIND messages, command set encoding).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

MWL_FIND = b"1.2.840.10008.5.1.4.31"
APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"
IMPLICIT_LE = b"1.2.840.10008.1.2"
EXPLICIT_LE = b"1.2.840.10008.1.2.1"
IMPLEMENTATION_UID = b"1.2.826.0.1.3680043.10.543.1"
MAX_PDU = 65536
CONTEXT_ID = 1

PENDING = (0xFF00, 0xFF01)
NO_DATASET = 0x0101


class DimseError(RuntimeError):
    """The association was rejected or aborted, or the peer broke the protocol."""


@dataclass
class FindResult:
    answers: int
    status: int  # the final status
    identifiers: list[bytes] = field(default_factory=list)
    transfer_syntax: bytes = b""


def _uid(value: bytes) -> bytes:
    return value + b"\0" if len(value) % 2 else value


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def _ae(title: str) -> bytes:
    return title.encode("ascii")[:16].ljust(16)


def associate_rq(calling: str, called: str) -> bytes:
    context = struct.pack(">BBBB", CONTEXT_ID, 0, 0, 0) + _item(0x30, MWL_FIND)
    context += _item(0x40, EXPLICIT_LE) + _item(0x40, IMPLICIT_LE)
    user = (
        _item(0x51, struct.pack(">I", MAX_PDU)) + _item(0x52, IMPLEMENTATION_UID) + _item(0x55, b"MWL_BENCH")
    )
    body = struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + bytes(32)
    body += _item(0x10, APPLICATION_CONTEXT) + _item(0x20, context) + _item(0x50, user)
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def _element(group_element: int, value: bytes) -> bytes:
    group, element = divmod(group_element, 0x10000)
    return struct.pack("<HHI", group, element, len(value)) + value


def c_find_rq(message_id: int) -> bytes:
    """The C-FIND-RQ command set, always implicit VR little endian (PS3.7 6.3.1)."""
    body = (
        _element(0x00000002, _uid(MWL_FIND))
        + _element(0x00000100, struct.pack("<H", 0x0020))
        + _element(0x00000110, struct.pack("<H", message_id))
        + _element(0x00000700, struct.pack("<H", 0))
        + _element(0x00000800, struct.pack("<H", 0x0000))  # a dataset follows
    )
    return _element(0x00000000, struct.pack("<I", len(body))) + body


def _p_data(control: int, data: bytes, max_pdu: int) -> bytes:
    """P-DATA-TF PDUs carrying `data`, fragmented to the peer's maximum PDU length."""
    chunk = max(max_pdu - 6, 1024) if max_pdu else len(data) or 1
    out = bytearray()
    for start in range(0, len(data), chunk):
        part = data[start : start + chunk]
        last = 0x02 if start + chunk >= len(data) else 0
        pdv = struct.pack(">IBB", len(part) + 2, CONTEXT_ID, control | last) + part
        out += struct.pack(">BBI", 0x04, 0, len(pdv)) + pdv
    return bytes(out)


RELEASE_RQ = struct.pack(">BBII", 0x05, 0, 4, 0)


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def pdu(self) -> tuple[int, bytes]:
        while True:
            if len(self.buffer) >= 6:
                kind, length = self.buffer[0], struct.unpack_from(">I", self.buffer, 2)[0]
                if len(self.buffer) >= 6 + length:
                    body = bytes(self.buffer[6 : 6 + length])
                    del self.buffer[: 6 + length]
                    return kind, body
            data = self.sock.recv(262144)
            if not data:
                raise DimseError("connection closed by the peer")
            self.buffer += data


def _accepted(body: bytes) -> tuple[bytes, int]:
    """The transfer syntax accepted for our context and the peer's maximum PDU length, from A-ASSOCIATE-AC."""
    offset, syntax, max_pdu = 68, b"", 0
    while offset + 4 <= len(body):
        kind, length = body[offset], struct.unpack_from(">H", body, offset + 2)[0]
        value = body[offset + 4 : offset + 4 + length]
        if kind == 0x21 and value[0] == CONTEXT_ID:
            if value[2] != 0:
                raise DimseError(f"presentation context refused (reason {value[2]})")
            sub = value[4:]
            syntax = sub[4 : 4 + struct.unpack_from(">H", sub, 2)[0]].rstrip(b"\0")
        elif kind == 0x50:
            pos = 0
            while pos + 4 <= len(value):
                sub_kind, sub_len = value[pos], struct.unpack_from(">H", value, pos + 2)[0]
                if sub_kind == 0x51:
                    max_pdu = struct.unpack_from(">I", value, pos + 4)[0]
                pos += 4 + sub_len
        offset += 4 + length
    if not syntax:
        raise DimseError("no presentation context accepted")
    return syntax, max_pdu


def _command_fields(command: bytes) -> tuple[int, int]:
    """Status (0000,0900) and CommandDataSetType (0000,0800) of an implicit VR little endian command set."""
    status, dataset_type, offset = -1, NO_DATASET, 0
    while offset + 8 <= len(command):
        group, element, length = struct.unpack_from("<HHI", command, offset)
        if group == 0 and element == 0x0900:
            status = struct.unpack_from("<H", command, offset + 8)[0]
        elif group == 0 and element == 0x0800:
            dataset_type = struct.unpack_from("<H", command, offset + 8)[0]
        offset += 8 + length
    return status, dataset_type


def find(
    host: str,
    port: int,
    implicit: bytes,
    explicit: bytes,
    *,
    calling: str = "BENCHSCU",
    called: str = "ORTHANC",
    keep: bool = False,
    timeout: float = 120.0,
) -> FindResult:
    """One association, one C-FIND, release: the number of pending answers and the final status."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(associate_rq(calling, called))
        reader = _Reader(sock)
        kind, body = reader.pdu()
        if kind == 0x03:
            raise DimseError(f"association rejected (result {body[1]}, source {body[2]}, reason {body[3]})")
        if kind != 0x02:
            raise DimseError(f"association not accepted (PDU type {kind:#04x})")
        syntax, max_pdu = _accepted(body)
        dataset = implicit if syntax == IMPLICIT_LE else explicit
        sock.sendall(_p_data(0x01, c_find_rq(1), max_pdu) + _p_data(0x00, dataset, max_pdu))
        result = FindResult(0, -1, transfer_syntax=syntax)
        command, data = bytearray(), bytearray()
        expecting_data = False
        while True:
            kind, body = reader.pdu()
            if kind == 0x07:
                raise DimseError("association aborted by the peer")
            if kind != 0x04:
                raise DimseError(f"unexpected PDU type {kind:#04x} during C-FIND")
            offset = 0
            while offset < len(body):
                length = struct.unpack_from(">I", body, offset)[0]
                control = body[offset + 5]
                fragment = body[offset + 6 : offset + 4 + length]
                offset += 4 + length
                if control & 0x01:
                    command += fragment
                    if not control & 0x02:
                        continue
                    status, dataset_type = _command_fields(bytes(command))
                    command.clear()
                    expecting_data = dataset_type != NO_DATASET
                    if status in PENDING:
                        result.answers += 1
                    else:
                        result.status = status
                else:
                    if keep:
                        data += fragment
                    if control & 0x02:
                        expecting_data = False
                        if keep:
                            result.identifiers.append(bytes(data))
                            data.clear()
            if result.status >= 0 and not expecting_data:
                break
        sock.sendall(RELEASE_RQ)
        try:
            while True:
                kind, _ = reader.pdu()
                if kind in (0x06, 0x07):
                    break
        except (DimseError, OSError):
            pass  # some servers close right after A-RELEASE-RP; the query is complete either way
        return result
