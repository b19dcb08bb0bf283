"""A faster Whoosh segment writer for grex's index: the same index, written with less Python.

Whoosh's ``SegmentWriter`` spends most of an index build in per-posting Python: every
(field, term, document) posting is a tuple that goes through the analyzer's generator chain,
the format's ``word_values``, a size-accounting ``PostingPool.add``, a sort of all postings,
and at flush time one ``add_posting`` call per posting, each reading the document's field
length back from the length column file it has just written.

``BulkWriter`` is a ``SegmentWriter`` that keeps the new segment's postings in memory,
grouped by field and term as they arrive (documents arrive in docnum order, so every posting
list is already sorted), and writes each posting list's blocks in one step. Text fields with
grex's ``WordTokenizer`` and the ``Positions`` format are analysed in one pass (words ->
terms through the tokenizer's cache, positions grouped per term and kept raw: grex's codec
stores them so, see grex.search.codec). Everything else (ID, KEYWORD, DATETIME, columns, stored
fields, deletions, merges, the TOC, locking) is Whoosh's own code.

It writes with grex's codec (grex.search.codec) what ``SegmentWriter`` writes with it for the same
documents: same terms, postings, weights, positions, block statistics (field lengths are
quantised to the length byte exactly as Whoosh reads them back) and stored values; tests
compare what Whoosh reads back from the two.

Memory: the postings of one segment are held in memory (about 60 bytes a posting). When they
pass ``limitmb`` they are poured into Whoosh's own pool (which spills to disk), and the
segment is finished the ordinary way. A bulk build avoids that by committing a segment
before the limit (see ``BulkWriter.full``).
"""

from __future__ import annotations

import struct
from array import array
from typing import Any

from whoosh import formats
from whoosh.codec.whoosh3 import WHOOSH3_HEADER_MAGIC, W3TermInfo
from whoosh.system import pack_int, pack_long, pack_ushort
from whoosh.util.numeric import byte_to_length, length_to_byte
from whoosh.writing import SegmentWriter

from grex.search.codec import GrexCodec, block_info, encode_block, encode_one
from grex.search.schema import _WORD, MAX_TOKEN, WordTokenizer, _stem_folded, fold

POSTING_BYTES = 60  # rough memory per held posting (arrays + shared value bytes + lists)

_QLENGTH: dict[int, int] = {}  # field length -> the length Whoosh reads back (via one byte)


def _qlength(length: int) -> int:
    q = _QLENGTH.get(length)
    if q is None:
        b = length_to_byte(length)
        q = byte_to_length(b) if b else 0
        _QLENGTH[length] = q
    return q


_STEM_BYTES: dict[str, bytes] = {}  # word -> UTF-8 term in a stemmed field (b"": dropped)
_FOLD_BYTES: dict[str, bytes] = {}  # word -> UTF-8 term in an unstemmed field


def _stem_miss(word: str) -> bytes:
    term = fold(word)
    b = b"" if len(term) > MAX_TOKEN else _stem_folded(term).encode("utf-8")
    if len(_STEM_BYTES) < 2_000_000:
        _STEM_BYTES[word] = b
    return b


def _fold_miss(word: str) -> bytes:
    term = fold(word)
    b = b"" if len(term) > MAX_TOKEN else term.encode("utf-8")
    if len(_FOLD_BYTES) < 2_000_000:
        _FOLD_BYTES[word] = b
    return b


def _positions(value: str, stem: bool) -> tuple[dict[bytes, Any], int]:
    """term bytes -> its position (an int) or positions (a list), and the number of terms:
    the words, terms and positions WordTokenizer yields, in one pass (a dropped word takes
    no position)."""
    if stem:
        get, miss = _STEM_BYTES.get, _stem_miss
    else:
        get, miss = _FOLD_BYTES.get, _fold_miss
    poses: dict[bytes, Any] = {}
    pget = poses.get
    pos = 0
    for word in _WORD.findall(value):
        b = get(word)
        if b is None:
            b = miss(word)
        if not b:
            continue
        p = pget(b)
        if p is None:
            poses[b] = pos
        elif p.__class__ is int:
            poses[b] = [p, pos]
        else:
            p.append(pos)
        pos += 1
    return poses, pos


def _fast_kind(field: Any) -> tuple[bool, float, Any] | None:
    """(stem, field boost, encoder) when ``field`` can take the one-pass path."""
    ana = getattr(field, "analyzer", None)
    fmt = getattr(field, "format", None)
    if fmt is None or type(ana) is not WordTokenizer or type(fmt) is not formats.Positions:
        return None
    if field.vector or field.separate_spelling():
        return None
    return ana.stem, float(fmt.field_boost), fmt.encode


class BulkWriter(SegmentWriter):
    """A SegmentWriter holding the new segment's postings in memory (see the module doc)."""

    def __init__(self, ix: Any, limitmb: int = 256, **kwargs: Any) -> None:
        kwargs.setdefault("codec", GrexCodec())
        super().__init__(ix, limitmb=limitmb, **kwargs)
        self._limit_postings = max(10_000, limitmb * 1024 * 1024 // POSTING_BYTES)
        # field -> term bytes -> [docnums, weights, values] (lists, in docnum order)
        self._bulk: dict[str, dict[bytes, list[Any]]] = {}
        self._held = 0
        self._lengths: dict[str, dict[int, int]] = {}  # field -> docnum -> quantised length
        self._fast: dict[str, tuple[bool, float, Any] | None] = {}
        self._spilled = False

    @property
    def full(self) -> bool:
        """True when the held postings are near the memory limit (commit a segment now)."""
        return self._held >= self._limit_postings * 0.9

    def _kind(self, fieldname: str, field: Any) -> tuple[bool, float, Any] | None:
        try:
            return self._fast[fieldname]
        except KeyError:
            kind = self._fast[fieldname] = _fast_kind(field)
            return kind

    def add_document(self, **fields: Any) -> None:
        self._check_state()
        schema = self.schema
        docnum = self.docnum
        docboost = self._doc_boost(fields)
        fieldnames = sorted(name for name in fields if not name.startswith("_"))
        self._check_fields(schema, fieldnames)

        # 1. analyse every field first: a failure leaves nothing half-written
        analysed = []
        for fieldname in fieldnames:
            value = fields.get(fieldname)
            if value is None:
                continue
            field = schema[fieldname]
            kind: Any = None
            items: Any = ()
            length = 0
            fieldboost = 1.0
            if field.indexed:
                fieldboost = self._field_boost(fields, fieldname, docboost)
                kind = self._kind(fieldname, field)
                if kind is not None and not isinstance(value, str):
                    raise TypeError(f"BulkWriter: field {fieldname!r} takes text, "
                                    f"not {type(value).__name__}")
                if kind is not None:
                    items, length = _positions(value, kind[0])
                else:
                    items = list(field.index(value))
                    length = sum(item[1] for item in items)
                if not field.scorable:
                    length = 0
            if field.separate_spelling() or field.vector:
                raise NotImplementedError("BulkWriter: spelling or vector fields")
            analysed.append((fieldname, field, value, kind, items, length, fieldboost))

        # 2. write: postings into memory, stored values / lengths / columns as Whoosh does
        perdoc = self.perdocwriter
        perdoc.start_doc(docnum)
        bulk = self._bulk
        for fieldname, field, value, kind, items, length, fieldboost in analysed:
            if items:
                terms = bulk.get(fieldname)
                if terms is None:
                    terms = bulk[fieldname] = {}
                get = terms.get
                if length:
                    qlen = _qlength(length)
                    if qlen:
                        self._lengths.setdefault(fieldname, {})[docnum] = qlen
                if kind is not None:  # values: the raw positions (grex.search.codec stores them)
                    _stem, fb, _encode = kind
                    w1 = 1.0 * fb * fieldboost
                    for tbytes, p in items.items():
                        w = w1 if p.__class__ is int else float(len(p)) * fb * fieldboost
                        lst = get(tbytes)
                        if lst is None:
                            terms[tbytes] = [[docnum], [w], [p]]
                        else:
                            lst[0].append(docnum)
                            lst[1].append(w)
                            lst[2].append(p)
                else:
                    for tbytes, _freq, w, v in items:
                        w *= fieldboost
                        lst = get(tbytes)
                        if lst is None:
                            terms[tbytes] = [[docnum], [w], [v]]
                        else:
                            lst[0].append(docnum)
                            lst[1].append(w)
                            lst[2].append(v)
                self._held += len(items)
            customval = fields.get(f"_stored_{fieldname}", value)
            perdoc.add_field(fieldname, field, customval if field.stored else None, length)
            column = field.column_type
            if column and customval is not None:
                perdoc.add_column_value(fieldname, column, field.to_column_value(customval))
        perdoc.finish_doc()
        self._added = True
        self.docnum += 1
        if self._held > self._limit_postings:
            self._spill()

    def _spill(self) -> None:
        """Pour the held postings into Whoosh's pool (it spills to disk)."""
        add = self.pool.add
        for fieldname, terms in self._bulk.items():
            kind = self._fast.get(fieldname)
            encode = kind[2] if kind is not None else None
            for tbytes, (ids, weights, values) in terms.items():
                for docnum, weight, v in zip(ids, weights, values, strict=True):
                    if encode is not None:  # raw positions
                        v = encode([v] if v.__class__ is int else v)
                    add((fieldname, tbytes, docnum, weight, v or None))
        self._bulk = {}
        self._lengths = {}
        self._held = 0
        self._spilled = True

    def add_reader(self, reader: Any) -> None:
        # merging another segment in goes through the pool: keep one posting stream
        if self._bulk:
            self._spill()
        self._spilled = True
        super().add_reader(reader)

    def _flush_segment(self) -> None:
        if self._spilled:
            if self._bulk:
                self._spill()
            super()._flush_segment()
            return
        self.perdocwriter.close()
        fw = self.fieldwriter
        schema = self.schema
        for fieldname in sorted(self._bulk):
            field = schema[fieldname]
            fw.start_field(fieldname, field)
            _write_field(fw, self._bulk[fieldname], field.format,
                         fw._postwriter._blocklimit, fw._postwriter._compression,
                         self._lengths.get(fieldname, {}),
                         raw_positions=self._fast.get(fieldname) is not None)
            fw.finish_field()
        fw.close()
        self._bulk = {}
        self._held = 0


FLUSH_BYTES = 8 << 20  # posting bytes gathered before one write to the segment file
_F32 = struct.Struct("f")


def _write_field(fw: Any, terms: dict[bytes, list[Any]], fmt: Any, blocklimit: int,
                 compression: int, doclengths: dict[int, int], raw_positions: bool) -> None:
    """Write one field's posting lists and term infos: what W3FieldWriter with grex's
    postings writer (grex.search.codec) writes for the same postings (start_term,
    add_posting..., finish_term), gathered into large writes."""
    postfile = fw._postfile
    tindex_add = fw._tindex.add
    keyprefix = pack_ushort(fw._fieldid)
    fixedsize = fmt.fixed_value_size()
    pack_info = W3TermInfo._struct.pack
    lengthof = doclengths.get
    f32 = _F32
    base = postfile.tell()
    out = bytearray()
    for tbytes in sorted(terms):
        ids, weights, values = terms[tbytes]
        n = len(ids)
        if len(out) > FLUSH_BYTES:
            postfile.write(out)
            base += len(out)
            out = bytearray()
        offset = base + len(out)
        out += WHOOSH3_HEADER_MAGIC
        if n == 1:  # most terms: one posting, one block
            d = ids[0]
            w = f32.unpack(f32.pack(weights[0]))[0]  # as the block's float32 array holds it
            ln = lengthof(d) if doclengths else None
            maxweight = w if w > 0 else 0
            data = encode_one(d, w, values[0], fixedsize, raw_positions)
            infobytes = block_info(1, d, maxweight, ln or None, ln or 0)
            out += pack_int(-(len(infobytes) + len(data)))
            out += infobytes
            out += data
            lbyte = length_to_byte(ln) if ln else 0
            info = pack_info(False, w, 1, lbyte, lbyte, maxweight, d, d)
            tindex_add(keyprefix + tbytes, info + pack_long(offset)
                       + pack_int(base + len(out) - offset))
            continue
        tweight = 0.0
        tminlen = None
        tmaxlen = 0
        tmaxweight = 0
        for start in range(0, n, blocklimit):
            if n > blocklimit:
                end = start + blocklimit
                bids, bws, bvals = ids[start:end], array("f", weights[start:end]), \
                    values[start:end]
                last = end >= n
            else:
                bids, bws, bvals, last = ids, array("f", weights), values, True
            # TermInfo.add_block
            tweight += sum(bws)
            ls = list(filter(None, map(lengthof, bids))) if doclengths else ()
            minlen = min(ls) if ls else None
            maxlen = max(ls) if ls else 0
            mw = max(bws)
            maxweight = mw if mw > 0 else 0
            if tminlen is None:
                tminlen = minlen
            elif minlen is not None:
                tminlen = min(tminlen, minlen)
            tmaxlen = max(tmaxlen, maxlen)
            tmaxweight = max(tmaxweight, maxweight)
            if raw_positions:  # (see BulkWriter.add_document)
                data = encode_block(bids, bws, (), fixedsize, compression, positions=bvals)
            else:
                data = encode_block(bids, bws, bvals if fixedsize != 0 else (), fixedsize,
                                    compression)
            infobytes = block_info(len(bids), bids[-1], maxweight, minlen, maxlen)
            blocklength = len(infobytes) + len(data)
            out += pack_int(-blocklength if last else blocklength)
            out += infobytes
            out += data
        info = pack_info(False, tweight, n, 0 if tminlen is None else length_to_byte(tminlen),
                         length_to_byte(tmaxlen), tmaxweight, ids[0], ids[-1])
        tindex_add(keyprefix + tbytes, info + pack_long(offset)
                   + pack_int(base + len(out) - offset))
    postfile.write(out)


__all__ = ["BulkWriter"]
