"""Checks that DICOM bytes are well-formed: every element and item lies inside the file and fills it exactly.

pydicom reads a truncated or garbage file without complaint (a short last value, one UN element made of
text), so a worklist file is walked here first. Only the encoding is checked, not the values.
"""

from __future__ import annotations

import struct
import zlib

from pydicom.datadict import dictionary_VR

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"

# PS3.5 6.2: every VR an explicit VR element may carry.
_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV".split()
) | frozenset(b"TM UC UI UL UN UR US UT UV".split())
# PS3.5 7.1.2: these explicit VRs have two reserved bytes and a 32-bit length.
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_META_GROUP = 0x0002
_TRANSFER_SYNTAX = 0x00020010
MAX_DEPTH = 16


class MalformedDicom(ValueError):
    """The bytes are not a well-formed DICOM file or dataset; the message says why, without any value."""


class _Syntax:
    def __init__(self, explicit: bool, little: bool) -> None:
        self.explicit = explicit
        self.order = "<" if little else ">"


def check_structure(data: bytes) -> None:
    """Raise MalformedDicom unless `data` is a Part 10 file or bare dataset filled exactly by its elements."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        offset, transfer_syntax = _walk_meta(data, 132)
        body = data[offset:]
        if transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
            try:
                body = zlib.decompress(body, -zlib.MAX_WBITS)
            except zlib.error:
                raise MalformedDicom("the deflated dataset cannot be inflated") from None
        syntax = _Syntax(
            explicit=transfer_syntax != IMPLICIT_VR_LITTLE_ENDIAN,
            little=transfer_syntax != EXPLICIT_VR_BIG_ENDIAN,
        )
    else:
        # A bare dataset (dump2dcm without -F, old wlmscpfs files): explicit VR when a VR follows the tag.
        body = data
        syntax = _Syntax(explicit=data[4:6] in _VRS, little=True)
    if not body:
        raise MalformedDicom("the file holds no dataset")
    _walk_dataset(body, 0, len(body), syntax, depth=0, delimited=False)


def _walk_meta(data: bytes, pos: int) -> tuple[int, str]:
    """Where the File Meta Information (explicit VR little endian) ends, and its transfer syntax."""
    syntax = _Syntax(explicit=True, little=True)
    transfer_syntax = ""
    while pos + 4 <= len(data) and struct.unpack_from("<H", data, pos)[0] == _META_GROUP:
        tag, _vr, length, start = _header(data, pos, len(data), syntax)
        if length == _UNDEFINED or start + length > len(data):
            raise MalformedDicom("the file meta information is truncated")
        if tag == _TRANSFER_SYNTAX:
            transfer_syntax = data[start : start + length].rstrip(b"\x00 ").decode("ascii", "replace")
        pos = start + length
    return pos, transfer_syntax


def _header(buf: bytes, pos: int, end: int, syntax: _Syntax) -> tuple[int, bytes, int, int]:
    """(tag, VR or b"", value length, value start) of the element at `pos`."""
    if pos + 8 > end:
        raise MalformedDicom("the file ends inside an element header")
    group, element = struct.unpack_from(syntax.order + "HH", buf, pos)
    tag = group << 16 | element
    if tag in (_ITEM, _ITEM_END, _SEQUENCE_END) or not syntax.explicit:
        return tag, b"", struct.unpack_from(syntax.order + "L", buf, pos + 4)[0], pos + 8
    vr = bytes(buf[pos + 4 : pos + 6])
    if vr not in _VRS:
        raise MalformedDicom("an element has no valid VR")
    if vr in _LONG_VRS:
        if pos + 12 > end:
            raise MalformedDicom("the file ends inside an element header")
        return tag, vr, struct.unpack_from(syntax.order + "L", buf, pos + 8)[0], pos + 12
    return tag, vr, struct.unpack_from(syntax.order + "H", buf, pos + 6)[0], pos + 8


def _is_sequence(tag: int, vr: bytes) -> bool:
    if vr:
        return vr == b"SQ"
    try:
        return bool(dictionary_VR(tag) == "SQ")
    except KeyError:
        return False


def _walk_dataset(buf: bytes, pos: int, end: int, syntax: _Syntax, *, depth: int, delimited: bool) -> int:
    """Walk from `pos` to `end` (or to an item delimiter when `delimited`); returns where it ended."""
    if depth > MAX_DEPTH:
        raise MalformedDicom(f"sequences are nested deeper than {MAX_DEPTH} levels")
    while pos < end:
        tag, vr, length, start = _header(buf, pos, end, syntax)
        if tag == _ITEM_END and delimited:
            return start
        if tag in (_ITEM, _ITEM_END, _SEQUENCE_END):
            raise MalformedDicom("an item delimiter appears outside a sequence")
        if length == _UNDEFINED:
            if syntax.explicit and vr not in (b"SQ", b"UN", b"OB", b"OW"):
                raise MalformedDicom("an element of undefined length is not a sequence")
            # PS3.5 6.2.2: a UN of undefined length holds implicit VR little endian items.
            inner = _Syntax(explicit=False, little=True) if vr == b"UN" else syntax
            pos = _walk_items(buf, start, end, inner, depth=depth + 1, datasets=vr not in (b"OB", b"OW"))
            continue
        if start + length > end:
            raise MalformedDicom("an element runs past the end of the file")
        if _is_sequence(tag, vr):
            _walk_items(buf, start, start + length, syntax, depth=depth + 1, datasets=True, defined=True)
        pos = start + length
    if delimited:
        raise MalformedDicom("an item has no delimiter")
    return pos


def _walk_items(
    buf: bytes, pos: int, end: int, syntax: _Syntax, *, depth: int, datasets: bool, defined: bool = False
) -> int:
    """Walk the items of a sequence (or the fragments of encapsulated data when not `datasets`)."""
    while pos < end:
        tag, _vr, length, start = _header(buf, pos, end, _Syntax(explicit=False, little=syntax.order == "<"))
        if tag == _SEQUENCE_END and not defined:
            return start
        if tag != _ITEM:
            raise MalformedDicom("a sequence holds something other than items")
        if length == _UNDEFINED:
            if not datasets:
                raise MalformedDicom("a fragment has undefined length")
            pos = _walk_dataset(buf, start, end, syntax, depth=depth, delimited=True)
            continue
        if start + length > end:
            raise MalformedDicom("an item runs past the end of its sequence")
        if datasets:
            _walk_dataset(buf, start, start + length, syntax, depth=depth, delimited=False)
        pos = start + length
    if not defined:
        raise MalformedDicom("a sequence has no delimiter")
    return pos
