"""C-FIND answers as bytes: each stored step encoded once per response shape, sent without pynetdicom's
per-message Dataset work.

pynetdicom turns every pending answer into a pydicom Dataset, encodes it, builds and encodes a command set
Dataset, and hands both to its DUL thread: about 1-3 ms of CPU per answer, which dominates any query with
more than a few answers. Here an answer is the identifier bytes of (item version, step, requested keys,
query character set, transfer syntax), made once with the same conversions as before and then reused, and
the response command set is encoded once per query. The bytes go to the same DUL queue pynetdicom uses, as
P-DATA primitives, so the association's state machine sees every PDU it sends.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pydicom.uid import UID
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.pdu_primitives import P_DATA

from services.scp.charsets import with_character_set
from shared.dicom_json import dicom_json_to_dataset

# Memory the cache may hold: an answer is ~0.5-1 kB of bytes plus ~200 bytes of key and bookkeeping, so
# 32 MB hold ~35,000 answers, the ones modalities ask for again and again (today's, per station) several
# times over; past it the oldest entries go first. (A budget of 64 MB of bytes alone came to ~100 MB.)
DEFAULT_BUDGET = 32 * 1024 * 1024
# Bytes an entry costs besides its data: the key tuple and its parts, the dict slot, the bytes header.
ENTRY_OVERHEAD = 200

AnswerKey = tuple[str, Any, int, Hashable, tuple[str, ...] | None, bool]

_COMMAND, _LAST = 0x01, 0x02


class AnswerCache:
    """Encoded answers by (item id, version, step, response shape, query character set, implicit VR).

    Reads take no lock (a dict lookup is atomic under the GIL); inserts and evictions serialise on `_lock`.
    An entry keyed by an old version is simply never asked for again and ages out.
    """

    def __init__(self, budget: int = DEFAULT_BUDGET) -> None:
        self.budget = budget
        self.size = 0
        self._entries: OrderedDict[AnswerKey, bytes] = OrderedDict()  # oldest first, O(1) eviction
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: AnswerKey) -> bytes | None:
        return self._entries.get(key)

    def put(self, key: AnswerKey, data: bytes) -> None:
        cost = len(data) + ENTRY_OVERHEAD
        if self.budget <= 0 or cost > self.budget:
            return
        with self._lock:
            if key in self._entries:
                return
            while self.size + cost > self.budget and self._entries:
                self.size -= len(self._entries.popitem(last=False)[1]) + ENTRY_OVERHEAD
            self._entries[key] = data
            self.size += cost


def encode_answer(response: dict[str, Any], terms: list[str] | None, implicit: bool) -> bytes | None:
    """The identifier bytes of one response, in the character set it is answered in (None: cannot be)."""
    dataset = dicom_json_to_dataset(with_character_set(response, terms))
    return encode(dataset, implicit, True)


@dataclass
class ResponseWriter:
    """Sends pending C-FIND responses with pre-encoded identifiers on one association."""

    assoc: Any
    message_id: int  # of the C-FIND-RQ answered
    sop_class: str  # its AffectedSOPClassUID
    context_id: int
    implicit: bool
    max_pdu: int  # the peer's maximum PDU length (0: no limit)

    @classmethod
    def for_event(cls, event: Any) -> ResponseWriter | None:
        """A writer for this C-FIND, or None when the association is not one it can serve (then the
        answers go through pynetdicom as Datasets): deflated or big endian transfer syntaxes, or an
        association object without the DUL this relies on (pynetdicom internals, or a test double)."""
        dul = getattr(event.assoc, "dul", None)
        if dul is None or not hasattr(dul, "send_pdu"):
            return None
        try:
            context_id = int(event.context.context_id)
            syntax = UID(event.context.transfer_syntax)
            max_pdu = int(event.assoc.requestor.maximum_length or 0)
            message_id = int(event.request.MessageID)
            sop_class = str(event.request.AffectedSOPClassUID)
        except (AttributeError, TypeError, ValueError):
            return None
        if syntax.is_deflated or not syntax.is_little_endian:
            return None
        return cls(event.assoc, message_id, sop_class, context_id, syntax.is_implicit_VR, max_pdu)

    @property
    def connected(self) -> bool:
        """Whether answers can still reach the peer: pynetdicom's reactor, blocked in the handler, cannot
        mark an aborted or closed association, but its DUL thread ends when the connection does."""
        return bool(self.assoc.is_established) and bool(self.assoc.dul.is_alive())

    def send(self, identifier: bytes, status: int) -> None:
        """Queue one pending response (command + identifier) for the association's DUL thread."""
        command = pending_command(self.message_id, self.sop_class, status)
        pdvs = [(_COMMAND | _LAST, command), *_fragments(identifier, self.max_pdu)]
        for group in _pdus(pdvs, self.max_pdu):
            primitive = P_DATA()
            # pynetdicom's PDV items: [context ID, message control header + fragment] (PS3.8 E.2).
            items: list[Any] = [[self.context_id, bytes([header]) + data] for header, data in group]
            primitive.presentation_data_value_list = items
            self.assoc.dul.send_pdu(primitive)


@functools.lru_cache(maxsize=256)
def pending_command(message_id: int, sop_class: str, status: int) -> bytes:
    """The command set of a pending C-FIND-RSP, encoded as pynetdicom encodes it.

    Cached: modalities mostly number their requests 1, so encoding it costs once, not once per query.
    """
    rsp = C_FIND()
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = sop_class
    rsp.Status = status
    # Only its presence matters: CommandDataSetType then says that a data set follows.
    rsp.Identifier = BytesIO(b"\0\0")
    message = C_FIND_RSP()
    message.primitive_to_message(rsp)
    message._set_command_group_length()
    data = encode(message.command_set, True, True)
    if data is None:
        raise ValueError("cannot encode the C-FIND-RSP command set")
    return data


def _fragments(data: bytes, max_pdu: int) -> list[tuple[int, bytes]]:
    """Data set PDVs of at most what fits a PDU (PS3.8 9.3.5: PDU length covers the PDV items)."""
    room = max_pdu - 6 if max_pdu else len(data) or 1  # one PDV per PDU: 4 length + 1 context + 1 header
    chunks = [data[i : i + room] for i in range(0, len(data), room)] or [b""]
    return [(_LAST if n == len(chunks) - 1 else 0, chunk) for n, chunk in enumerate(chunks)]


def _pdus(pdvs: list[tuple[int, bytes]], max_pdu: int) -> list[list[tuple[int, bytes]]]:
    """PDVs grouped into P-DATA-TF PDUs none longer than the peer accepts (command and data share one
    when they fit, as most implementations send them)."""
    groups: list[list[tuple[int, bytes]]] = []
    size = 0
    for pdv in pdvs:
        length = 6 + len(pdv[1])
        if groups and (not max_pdu or size + length <= max_pdu):
            groups[-1].append(pdv)
            size += length
        else:
            groups.append([pdv])
            size = length
    return groups
