"""C-FIND answers as bytes: each stored step encoded once per response shape.

Turning every pending answer into a pydicom Dataset and encoding it, with a command set Dataset beside it,
costs about 1-3 ms of CPU per answer, which dominates any query with more than a few answers. Here an answer
is the identifier bytes of (item version, step, requested keys, query character set, transfer syntax), made
once with pydicom and then reused.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from pynetdicom.dsutils import encode

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
