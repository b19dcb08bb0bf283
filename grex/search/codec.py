"""grex's Whoosh codec: Whoosh 3's files, with posting blocks stored as plain arrays.

Whoosh's W3 codec stores each block of up to 128 postings as a pickled tuple of Python
ints (delta-coded ids), floats (weights) and one bytes object per posting (the encoded
positions), compressed as one zlib stream. Reading a block therefore unpickles every
posting's positions even when a search only needs the ids and weights, and builds
hundreds of Python objects; at 100k messages that was most of a search's time.

``GrexCodec`` keeps everything else of W3 (term table, per-document columns, stored
fields, lengths, the block framing: a length, then a pickled info tuple with the block's
count, last id, max weight and length bytes, so Whoosh's own matchers skip blocks as
before) and changes only the block data, to three separately compressed parts:

    header   struct "<BIII": flags, byte length of the ids, weights and values parts
    ids      uint32 little-endian, delta-coded from 0 within the block
    weights  nothing (all 1.0), one float32 (all equal), or one float32 per posting
    values   nothing (fixed size 0); the values joined (fixed size); for Whoosh's
             Positions format, uint32 counts then uint32 position deltas (each posting's
             positions, the first from 0: what Positions.encode pickles); for any other
             variable-size value, uint32 lengths then the values joined

A part of SMALL_PART bytes or more is zlib-compressed (flags say which). Blocks hold up
to BLOCK_LIMIT postings. numpy reads a part with one ``frombuffer`` (grex.search.postings: a
phrase check is array arithmetic over all positions at once); ``GrexLeafMatcher`` gives
Whoosh's matchers the same ids, weights and value bytes as W3 (positions re-encoded).

Segments written with this codec name it in the index's table of contents (Whoosh pickles
each segment with its codec), so any reader opens them with it; segments of other codecs
in the same index are read with theirs.
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from collections.abc import Sequence
from itertools import accumulate, chain
from operator import sub
from pickle import dumps
from typing import Any

from whoosh import formats
from whoosh.codec.whoosh3 import (
    WHOOSH3_HEADER_MAGIC,
    W3Codec,
    W3LeafMatcher,
    W3PostingsWriter,
)
from whoosh.system import pack_uint
from whoosh.util.numeric import length_to_byte

BLOCK_LIMIT = 1024  # postings per block (W3: 128); grex reads whole posting lists
COMPRESSION = 1  # zlib level: about the size of level 3 here, written faster
SMALL_PART = 128  # parts shorter than this are stored as they are

HEADER = struct.Struct("<BIII")
IDS_ZIP, VALUES_ZIP = 1, 2  # flag bits: part compressed
W_ONES, W_CONST, W_ARRAY = 0, 4, 8  # flag bits 2-3: how the weights are stored
W_MASK = 12
POSITIONS = 16  # flag bit: the values part holds counts and position deltas
_LITTLE = sys.byteorder == "little"


def _le(a: array) -> bytes:
    if not _LITTLE:
        a = array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


def _from_le(typecode: str, data: bytes) -> array:
    a = array(typecode)
    a.frombytes(data)
    if not _LITTLE:
        a.byteswap()
    return a


def is_positions(fmt: Any) -> bool:
    """Whether values of this format are stored as raw positions."""
    return type(fmt) is formats.Positions


def _position_deltas(positions: Sequence[Any]) -> tuple[array, array]:
    """(counts, deltas) of each posting's positions (an int, or an ascending list)."""
    counts = array("I", [1 if p.__class__ is int else len(p) for p in positions])
    deltas = array("I")
    add, extend = deltas.append, deltas.extend
    for p in positions:
        if p.__class__ is int:
            add(p)
        else:  # p[0] - 0, p[1] - p[0], ...
            extend(map(sub, p, chain((0,), p)))
    return counts, deltas


def encode_block(ids: Sequence[int], weights: Sequence[float], values: Sequence[bytes],
                 fixedsize: int | None, compression: int = COMPRESSION,
                 positions: Sequence[Any] | None = None) -> bytes:
    """The data of one block: ``ids`` ascending document numbers, ``weights`` floats,
    ``values`` the encoded values (empty ones included, one per posting), or for a
    Positions field ``positions``: each posting's positions (an int or a list)."""
    n = len(ids)
    flags = 0
    if n == 1:
        ids_part = _le(array("I", ids))
    else:
        deltas = array("I", ids)
        prev = 0
        for i in range(n):  # in place: deltas[i] = ids[i] - ids[i - 1]
            cur = deltas[i]
            deltas[i] = cur - prev
            prev = cur
        ids_part = _le(deltas)
    first = weights[0]
    if all(w == 1.0 for w in weights):
        w_part = b""
        flags |= W_ONES
    elif all(w == first for w in weights):
        w_part = _le(array("f", (first,)))
        flags |= W_CONST
    else:
        w_part = _le(array("f", weights))
        flags |= W_ARRAY
    if positions is not None:
        counts, deltas = _position_deltas(positions)
        v_part = _le(counts) + _le(deltas)
        flags |= POSITIONS
    elif fixedsize == 0:
        v_part = b""
    elif fixedsize is not None and fixedsize > 0:
        v_part = b"".join(values)
    else:
        v_part = _le(array("I", [len(v) for v in values])) + b"".join(values)
    if compression and len(ids_part) >= SMALL_PART:
        ids_part = zlib.compress(ids_part, compression)
        flags |= IDS_ZIP
    if compression and len(v_part) >= SMALL_PART:
        v_part = zlib.compress(v_part, compression)
        flags |= VALUES_ZIP
    return b"".join((HEADER.pack(flags, len(ids_part), len(w_part), len(v_part)), ids_part,
                     w_part, v_part))


_ONE_EXISTS = struct.Struct("<BIIII")  # header, id (fixed size 0, weight 1)
_ONE_AT = struct.Struct("<BIIIIII")  # header, id, count 1, position (weight 1)


def encode_one(docnum: int, weight: float, value: Any, fixedsize: int | None,
               raw_positions: bool) -> bytes:
    """encode_block for a block of one posting (most terms have one), without its loops;
    ``value``: the position (or positions) with ``raw_positions``, else the value bytes."""
    if weight == 1.0:
        if fixedsize == 0 and not raw_positions:
            return _ONE_EXISTS.pack(W_ONES, 4, 0, 0, docnum)
        if raw_positions and value.__class__ is int:
            return _ONE_AT.pack(POSITIONS | W_ONES, 4, 0, 8, docnum, 1, value)
    if raw_positions:
        return encode_block((docnum,), (weight,), (), fixedsize, positions=(value,))
    return encode_block((docnum,), (weight,), (value,) if fixedsize != 0 else (), fixedsize)


def block_info(count: int, lastid: int, maxweight: float, minlength: int | None,
               maxlength: int) -> bytes:
    """The pickled info tuple that precedes a block (W3's; compression 0: the parts say)."""
    return dumps((count, lastid, maxweight, 0, length_to_byte(minlength),
                  length_to_byte(maxlength)), 2)


def split_block(data: bytes) -> tuple[int, bytes, bytes, bytes]:
    """(flags, ids part, weights part, values part) of a block's data, decompressed except
    the values part (see ``values_part``)."""
    flags, ni, nw, nv = HEADER.unpack_from(data)
    start = HEADER.size
    ids_part = data[start:start + ni]
    if flags & IDS_ZIP:
        ids_part = zlib.decompress(ids_part)
    w_part = data[start + ni:start + ni + nw]
    v_part = data[start + ni + nw:start + ni + nw + nv]
    return flags, ids_part, w_part, v_part


def values_part(flags: int, v_part: bytes) -> bytes:
    return zlib.decompress(v_part) if flags & VALUES_ZIP else v_part


def split_values(v_part: bytes, count: int, fixedsize: int | None, flags: int = 0
                 ) -> tuple[bytes, ...]:
    """The per-posting values of a (decompressed) values part, as Whoosh encodes them."""
    if flags & POSITIONS:  # Positions.encode: the count, then the pickled deltas
        counts = _from_le("I", v_part[:4 * count])
        deltas = _from_le("I", v_part[4 * count:]).tolist()
        out = []
        pos = 0
        for n in counts:
            out.append(pack_uint(n) + dumps(deltas[pos:pos + n], 2))
            pos += n
        return tuple(out)
    if fixedsize == 0:
        return (b"",) * count
    if fixedsize is not None and fixedsize > 0:
        return tuple(v_part[i:i + fixedsize] for i in range(0, fixedsize * count, fixedsize))
    lengths = _from_le("I", v_part[:4 * count])
    out = []
    pos = 4 * count
    for n in lengths:
        out.append(v_part[pos:pos + n])
        pos += n
    return tuple(out)


class GrexPostingsWriter(W3PostingsWriter):
    """W3PostingsWriter writing grex's block data (see the module doc)."""

    def add_posting(self, id_: int, weight: float, vbytes: bytes, length: int | None = None
                    ) -> None:
        super().add_posting(id_, weight, vbytes, length)
        # W3 keeps non-empty values only; a block here keeps one per posting
        if not vbytes:
            self._values.append(vbytes)

    def _write_block(self, last: bool = False) -> None:
        if not self._blockcount:
            self._postfile.write(WHOOSH3_HEADER_MAGIC)
        self._terminfo.add_block(self)
        ids = self._ids
        fmt = self._format
        fixedsize = fmt.fixed_value_size()
        values = self._values if fixedsize != 0 else ()
        positions = [fmt.decode_positions(v) for v in values] if is_positions(fmt) else None
        data = encode_block(ids, self._weights, values, fixedsize, self._compression,
                            positions=positions)
        info = block_info(len(ids), ids[-1], self._maxweight, self._minlength,
                          self._maxlength)
        length = len(info) + len(data)
        self._postfile.write_int(-length if last else length)
        self._postfile.write(info)
        self._postfile.write(data)
        self._blockcount += 1
        self._new_block()


class GrexLeafMatcher(W3LeafMatcher):
    """W3LeafMatcher over grex's block data: the same ids, weights and values."""

    def _read_data(self) -> None:
        datalen = self._nextoffset - self._dataoffset
        self._data = split_block(self._postfile.get(self._dataoffset, datalen))

    def _read_ids(self) -> None:
        if self._data is None:
            self._read_data()
        self._ids = tuple(accumulate(_from_le("I", self._data[1])))

    def _read_weights(self) -> None:
        if self._data is None:
            self._read_data()
        flags, _ids, w_part, _v = self._data
        kind = flags & W_MASK
        n = self._blocklength
        if kind == W_ONES:
            self._weights = array("f", (1.0,)) * n
        elif kind == W_CONST:
            self._weights = _from_le("f", w_part) * n
        else:
            self._weights = _from_le("f", w_part)

    def _read_values(self) -> None:
        if self._data is None:
            self._read_data()
        flags, _ids, _w, v_part = self._data
        if self._fixedsize == 0:  # as W3LeafMatcher gives them
            self._values = (None,) * self._blocklength
            return
        self._values = split_values(values_part(flags, v_part), self._blocklength,
                                    self._fixedsize, flags)


class GrexCodec(W3Codec):
    """Whoosh 3's codec with grex's posting blocks (see the module doc)."""

    def __init__(self, blocklimit: int = BLOCK_LIMIT, compression: int = COMPRESSION,
                 inlinelimit: int = 1) -> None:
        super().__init__(blocklimit=blocklimit, compression=compression,
                         inlinelimit=inlinelimit)

    def postings_writer(self, dbfile: Any, byteids: bool = False) -> Any:
        if byteids:  # term vectors: W3's own blocks (grex's schema has none)
            return super().postings_writer(dbfile, byteids=True)
        return GrexPostingsWriter(dbfile, blocklimit=self._blocklimit, byteids=False,
                                  compression=self._compression,
                                  inlinelimit=self._inlinelimit)

    def postings_reader(self, dbfile: Any, terminfo: Any, format_: Any, term: Any = None,
                        scorer: Any = None) -> Any:
        if terminfo.is_inlined():
            return super().postings_reader(dbfile, terminfo, format_, term=term,
                                           scorer=scorer)
        offset, length = terminfo.extent()
        return GrexLeafMatcher(dbfile, offset, length, format_, term=term, scorer=scorer)


__all__ = ["BLOCK_LIMIT", "GrexCodec", "block_info", "encode_block", "encode_one", "is_positions",
           "split_block", "split_values", "values_part"]
