"""Matching and BM25F scoring over posting lists read as numpy arrays (the search path).

Whoosh answers a query by walking a tree of matcher objects one document at a time: a
dozen Python calls per document and tree node, and an intersection skips through its
sides block by block. At 100k messages a common word has thousands of postings in each of
the seven fields a bare word searches, and that walk costs tens of milliseconds. Here the
same query objects are evaluated a whole posting list at a time:

* A term's postings in one segment are read from the index's files (Whoosh's term table;
  posting blocks in grex's codec, grex.search.codec: arrays read with ``frombuffer``, or in
  Whoosh's W3 codec: pickled tuples) into numpy arrays of document numbers and weights,
  once per search (the cache ``Matcher`` is given): matching, ranking and phrase checks
  share them. Positions are read only for phrases, all at once.
* Matching sets are sorted arrays of segment-local document numbers: unions, intersections
  and differences are numpy set operations; ``date:`` ranges compare the segment's date
  column instead of unioning hundreds of tiered numeric terms.
* Scores are Whoosh's BM25F with its own statistics (the top-level searcher's idf and
  average field length, the length byte of each document's field): the same formula,
  evaluated for a whole posting list at once. A union adds the scores of its clauses where
  several match, an intersection adds all of them, a boost multiplies, a phrase scores as
  the intersection of its words (Whoosh's SpanNear2 over an IntersectionMatcher). Whoosh
  groups the additions of a union or intersection of more than two clauses as a binary
  tree; here they are added in clause order, so a score can differ from Whoosh's in the
  last bits of the float (relative 1e-15), which can only swap documents whose scores are
  equal to that precision.

Only the query classes grex's query language produces are evaluated here (Term, Phrase,
And, Or, Not, AndNot, Every, ConstantScoreQuery, Prefix / Wildcard / other multi-term
queries, NumericRange / DateRange); anything else falls back to Whoosh (``q.docs``), and
a scoring query with another class raises ``Unsupported`` so that the caller lets Whoosh
rank.

This module is on the search path: numpy and Whoosh only (never spaCy or scikit-learn).
"""

from __future__ import annotations

import io
import pickle
import zlib
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from whoosh import query as wq
from whoosh.codec.whoosh3 import LENGTHS_COLUMN, WHOOSH3_HEADER_MAGIC, _lenfield
from whoosh.query.terms import MultiTerm
from whoosh.util.numeric import byte_to_length

from grex.search.codec import (
    HEADER,
    IDS_ZIP,
    POSITIONS,
    W_CONST,
    W_MASK,
    W_ONES,
    GrexCodec,
    split_values,
    values_part,
)

EMPTY = np.zeros(0, dtype=np.int64)
_LENGTH_OF_BYTE = np.array([byte_to_length(b) if b else 0 for b in range(256)],
                           dtype=np.float64)
_MISSING_DATE = (1 << 64) - 1  # the DATETIME column's default (no date)


class Unsupported(Exception):
    """A query class (or a Whoosh version) this module does not evaluate."""


@dataclass(slots=True)
class Postings:
    """One term's postings in one segment: sorted local document numbers, their weights,
    and (for fields with positions) the encoded values, read lazily."""

    ids: np.ndarray  # int64, ascending
    weights: np.ndarray  # float64
    values: Any = None  # values[i]: the encoded value of posting i (None: not available)


class _LazyValues:
    """The values of a grex-codec posting list, decoded a block at a time when asked."""

    def __init__(self, fixedsize: int | None) -> None:
        self.fixedsize = fixedsize
        self.starts: list[int] = []
        self.blocks: list[tuple[int, int, bytes]] = []  # (count, flags, values part)
        self.decoded: dict[int, tuple[bytes, ...]] = {}

    def add(self, start: int, count: int, flags: int, part: bytes) -> None:
        self.starts.append(start)
        self.blocks.append((count, flags, part))

    def __getitem__(self, i: int) -> bytes:
        b = bisect_right(self.starts, i) - 1
        found = self.decoded.get(b)
        if found is None:
            count, flags, part = self.blocks[b]
            found = self.decoded[b] = split_values(values_part(flags, part), count,
                                                   self.fixedsize, flags)
        return found[i - self.starts[b]]

    def positions(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(posting index, position) of every position of every posting, as arrays; None
        unless the blocks hold raw positions (grex.search.codec's Positions layout)."""
        postings: list[np.ndarray] = []
        places: list[np.ndarray] = []
        for start, (count, flags, part) in zip(self.starts, self.blocks, strict=True):
            if not flags & POSITIONS:
                return None
            raw = values_part(flags, part)
            counts = np.frombuffer(raw, dtype="<u4", count=count).astype(np.int64)
            deltas = np.frombuffer(raw, dtype="<u4", offset=4 * count).astype(np.int64)
            which = np.repeat(np.arange(start, start + count, dtype=np.int64), counts)
            # each posting's deltas start from 0: a running sum, less the sum before it
            run = np.cumsum(deltas)
            ends = np.cumsum(counts)
            before = np.zeros(count, dtype=np.int64)
            before[1:] = run[ends[:-1] - 1]
            postings.append(which)
            places.append(run - np.repeat(before, counts))
        if not postings:
            return EMPTY, EMPTY
        return np.concatenate(postings), np.concatenate(places)


class Segment:
    """Arrays of one segment reader that searches keep: field lengths, dates, deletions.
    Made once per reader (an open index keeps its segments' readers)."""

    def __init__(self, reader: Any, offset: int) -> None:
        self.reader = reader
        self.offset = offset
        self.doccount = reader.doc_count_all()
        self._lengths: dict[str, np.ndarray] = {}
        self._dates: np.ndarray | None = None
        deleted = list(reader.deleted_docs_set) if reader.has_deletions() else []
        self.deleted = np.array(sorted(deleted), dtype=np.int64) if deleted else None
        terms = getattr(reader, "_terms", None)
        self._postfile = getattr(terms, "_postfile", None)
        self._term_info = getattr(terms, "term_info", None)
        codec = reader.codec() if hasattr(reader, "codec") else None
        self._grex = isinstance(codec, GrexCodec)
        self._schema = reader.schema

    def lengths(self, fieldname: str) -> np.ndarray:
        """Each document's length of ``fieldname`` as Whoosh reads it back (its length
        byte), as floats; 0 where the document has no such field."""
        found = self._lengths.get(fieldname)
        if found is None:
            found = self._lengths[fieldname] = _LENGTH_OF_BYTE[
                _column_array(self.reader, _lenfield(fieldname), np.uint8, 0, self.doccount,
                              lengths=True)]
        return found

    def dates(self) -> np.ndarray:
        """Each document's raw date (Whoosh's long), _MISSING_DATE where it has none."""
        if self._dates is None:
            self._dates = _column_array(self.reader, "date", np.dtype(">u8"), _MISSING_DATE,
                                        self.doccount).astype(np.uint64)
        return self._dates

    def live(self, mask: np.ndarray) -> np.ndarray:
        """``mask`` (of this segment's documents) without the deleted documents."""
        if self.deleted is not None:
            mask[self.deleted] = False
        return mask

    def postings(self, fieldname: str, btext: bytes, cache: dict[Any, Any]) -> Postings | None:
        key = (id(self), fieldname, btext)
        if key in cache:
            return cache[key]
        found = self._read(fieldname, btext)
        cache[key] = found
        return found

    def _read(self, fieldname: str, btext: bytes) -> Postings | None:
        if self._term_info is None or self._postfile is None:
            raise Unsupported("not a W3 segment reader")
        try:
            info = self._term_info(fieldname, btext)
        except Exception:  # noqa: BLE001 - TermNotFound, or a field this segment lacks
            return None
        if info.is_inlined():
            ids, weights, values = info.inlined_postings()
            return Postings(np.array(ids, dtype=np.int64), np.array(weights, dtype=np.float64),
                            list(values))
        offset, length = info.extent()
        if isinstance(length, tuple):  # W3TermInfo.from_bytes leaves it unpacked
            length = length[0]
        buf = self._postfile.get(offset, length)
        if self._grex:
            return _decode_grex(buf, self._schema[fieldname].format.fixed_value_size())
        return _decode(buf)


def _column_array(reader: Any, name: str, dtype: Any, default: int, doccount: int, *,
                  lengths: bool = False) -> np.ndarray:
    """A fixed-width numeric column of one segment as an array of ``doccount`` values
    (Whoosh writes none for the trailing documents that have the default)."""
    dtype = np.dtype(dtype)
    perdoc = getattr(reader, "_perdoc", None)
    col = None
    if perdoc is not None:
        try:
            if lengths:
                col = perdoc._cached_reader(name, LENGTHS_COLUMN)
            elif perdoc.has_column(name):
                col = reader.column_reader(name, translate=False)
        except Exception:  # noqa: BLE001 - no such column in this segment
            col = None
    out = np.full(doccount, default, dtype=dtype)
    if col is None:
        return out
    try:
        count = min(col._count, doccount)
        raw = col._dbfile.get(col._basepos, count * dtype.itemsize)
        out[:count] = np.frombuffer(raw, dtype=dtype, count=count)
    except AttributeError:  # another column class: read it the generic way
        for i, v in enumerate(col):
            if i >= doccount:
                break
            out[i] = v
    return out


_load = pickle.loads
_decompress = zlib.decompress


def _blocks(buf: bytes) -> Iterator[tuple[tuple[Any, ...], int, int]]:
    """(info tuple, start of the data, end) of each block of a posting list in Whoosh 3's
    framing: a 4-byte length (negative for the last block), a pickled info tuple (count,
    last id, max weight, compression, min / max length byte), then the block's data."""
    if buf[:4] != WHOOSH3_HEADER_MAGIC:
        raise Unsupported("not a W3 posting list")
    stream = io.BytesIO(buf)
    load = pickle.load
    pos = 4
    while True:
        length = int.from_bytes(buf[pos:pos + 4], "big", signed=True)
        end = pos + 4 + abs(length)
        if end > len(buf):
            raise Unsupported("a posting list longer than its extent")
        stream.seek(pos + 4)
        info = load(stream)
        yield info, stream.tell(), end
        if length < 0:
            return
        pos = end


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _decode(buf: bytes) -> Postings:
    """A posting list of W3 blocks -> arrays: each block's data is the pickled (ids
    delta-coded from 0, weights, values), zlib-compressed when its info says so."""
    ids_parts: list[np.ndarray] = []
    weight_parts: list[np.ndarray] = []
    values: list[Any] = []
    for (count, _lastid, _maxw, comp, _mn, _mx), start, end in _blocks(buf):
        data = buf[start:end]
        if comp:
            data = _decompress(data)
        ids, weights, vals = _load(data)
        block = np.array(ids, dtype=np.int64)
        if len(block) > 1:
            np.cumsum(block, out=block)
        ids_parts.append(block)
        if weights is None:
            weight_parts.append(np.ones(count, dtype=np.float64))
        elif isinstance(weights, float):
            weight_parts.append(np.full(count, weights, dtype=np.float64))
        else:
            weight_parts.append(np.array(weights, dtype=np.float64))
        if vals is not None:
            values.append(vals)
    ids_all = _joined(ids_parts)
    flat: list[Any] | None = None
    if values and all(isinstance(v, tuple) for v in values):
        flat = [v for block in values for v in block]
        if len(flat) != len(ids_all):
            flat = None  # empty values were dropped: positions are not usable
    return Postings(ids_all, _joined(weight_parts), flat)


def _decode_grex(buf: bytes, fixedsize: int | None) -> Postings:
    """A posting list written by grex's codec (grex.search.codec) -> arrays; values stay encoded
    until asked for (only phrases need them)."""
    unpack = HEADER.unpack_from
    hsize = HEADER.size
    ids_parts: list[np.ndarray] = []
    weight_parts: list[np.ndarray] = []
    values = _LazyValues(fixedsize) if fixedsize != 0 else None
    total = 0
    for info, start, _end in _blocks(buf):
        count = info[0]
        flags, ni, nw, nv = unpack(buf, start)
        start += hsize
        ids_part = buf[start:start + ni]
        if flags & IDS_ZIP:
            ids_part = _decompress(ids_part)
        block = np.frombuffer(ids_part, dtype="<u4").astype(np.int64)
        if count > 1:
            np.cumsum(block, out=block)
        ids_parts.append(block)
        kind = flags & W_MASK
        if kind == W_ONES:
            weight_parts.append(np.ones(count, dtype=np.float64))
        elif kind == W_CONST:
            weight_parts.append(np.full(count, np.frombuffer(
                buf, dtype="<f4", count=1, offset=start + ni)[0], dtype=np.float64))
        else:
            weight_parts.append(np.frombuffer(buf, dtype="<f4", count=count,
                                              offset=start + ni).astype(np.float64))
        if values is not None:
            values.add(total, count, flags, buf[start + ni + nw:start + ni + nw + nv])
        total += count
    return Postings(_joined(ids_parts), _joined(weight_parts), values)


# ------------------------------------------------------------------------------ matching


class Matcher:
    """Evaluates queries over one searcher's segments. ``cache`` holds the postings read
    during one search."""

    def __init__(self, searcher: Any, segments: Sequence[Segment], cache: dict[Any, Any]
                 ) -> None:
        self.searcher = searcher
        self.segments = segments
        self.cache = cache
        self.schema = searcher.schema

    # matching: a boolean mask of the segment's documents, deleted documents left out
    def masks(self, q: wq.Query) -> list[np.ndarray]:
        try:
            return [seg.live(self._mask(q, seg)) for seg in self.segments]
        except Unsupported:  # not Whoosh 2.7's W3 files: Whoosh's own matching
            return [seg.live(self._ids_mask(self._generic(q, seg), seg))
                    for seg in self.segments]

    def numbered(self, masks: Sequence[np.ndarray]) -> np.ndarray:
        """The global document numbers (ascending) of per-segment masks."""
        parts = [np.flatnonzero(mask) + seg.offset
                 for mask, seg in zip(masks, self.segments, strict=True)]
        return np.concatenate(parts) if parts else EMPTY

    def docset(self, q: wq.Query) -> np.ndarray:
        """Global document numbers matching ``q``, ascending."""
        return self.numbered(self.masks(q))

    @staticmethod
    def _ids_mask(ids: np.ndarray, seg: Segment) -> np.ndarray:
        m = np.zeros(seg.doccount, dtype=bool)
        m[ids] = True
        return m

    def _term_ids(self, fieldname: str, text: Any, seg: Segment) -> np.ndarray:
        btext = self._btext(fieldname, text)
        if btext is None:
            return EMPTY
        p = seg.postings(fieldname, btext, self.cache)
        return EMPTY if p is None else p.ids

    def _btext(self, fieldname: str, text: Any) -> bytes | None:
        try:
            field = self.schema[fieldname]
        except KeyError:
            return None
        try:
            return text if isinstance(text, bytes) else field.to_bytes(text)
        except ValueError:
            return None

    def _mask(self, q: wq.Query, seg: Segment) -> np.ndarray:
        cls = type(q)
        if cls is wq.Term:
            return self._ids_mask(self._term_ids(q.fieldname, q.text, seg), seg)
        if cls is wq.Or:
            out = np.zeros(seg.doccount, dtype=bool)
            for sub in q.subqueries:
                if type(sub) is wq.Term:  # scattered straight in
                    out[self._term_ids(sub.fieldname, sub.text, seg)] = True
                else:
                    out |= self._mask(sub, seg)
            return out
        if cls is wq.And:
            negative = [sub.query for sub in q.subqueries if type(sub) is wq.Not]
            positive = [sub for sub in q.subqueries if type(sub) is not wq.Not]
            both: np.ndarray | None = None
            for sub in positive:
                m = self._mask(sub, seg)
                both = m if both is None else np.logical_and(both, m, out=both)
                if not both.any():
                    return both
            out = np.ones(seg.doccount, dtype=bool) if both is None else both
            for sub in negative:
                out &= ~self._mask(sub, seg)
            return out
        if cls is wq.AndNot:
            return self._mask(q.a, seg) & ~self._mask(q.b, seg)
        if cls is wq.Not:
            return ~self._mask(q.query, seg)
        if cls is wq.Every and not q.fieldname:
            return np.ones(seg.doccount, dtype=bool)
        if cls is wq.ConstantScoreQuery:
            return self._mask(q.child, seg)
        if cls is wq.Phrase:
            found = self._phrase_docs(q, seg)
            if found is not None:
                return self._ids_mask(found, seg)
        if isinstance(q, wq.NumericRange):
            in_range = self._date_range(q, seg)
            if in_range is not None:
                return in_range
            simple = q.simplify(seg.reader)
            if simple is not q and simple != q:
                return self._mask(simple, seg)
        if isinstance(q, MultiTerm) and not isinstance(q, wq.NumericRange):
            try:
                fieldname = q.field()
                btexts = list(q._btexts(seg.reader))
            except (AttributeError, TypeError, ValueError):
                btexts = None  # another whoosh version: the generic way below
            if btexts is not None:
                out = np.zeros(seg.doccount, dtype=bool)
                for b in btexts:
                    p = seg.postings(fieldname, b, self.cache)
                    if p is not None:
                        out[p.ids] = True
                return out
        return self._ids_mask(self._generic(q, seg), seg)

    def _generic(self, q: wq.Query, seg: Segment) -> np.ndarray:
        sub = self._subsearcher(seg)
        return np.array(sorted(set(q.docs(sub))), dtype=np.int64)

    def _subsearcher(self, seg: Segment) -> Any:
        for sub, offset in self.searcher.leaf_searchers():
            if offset == seg.offset:
                return sub
        raise Unsupported("no searcher for this segment")

    def _date_range(self, q: wq.NumericRange, seg: Segment) -> np.ndarray | None:
        """A range over the date field, from the date column: a mask of the documents
        whose date lies in it (the set the tiered range terms give, without reading
        them)."""
        if q.fieldname != "date" or q.startexcl or q.endexcl:
            return None
        dates = seg.dates()
        keep = dates != _MISSING_DATE
        if q.start is not None:
            keep &= dates >= np.uint64(q.start)
        if q.end is not None:
            keep &= dates <= np.uint64(q.end)
        return keep

    # phrases: the documents holding every word, then their positions checked
    def _phrase_docs(self, q: wq.Phrase, seg: Segment) -> np.ndarray | None:
        if q.slop != 1 or not q.words:
            return None
        key = ("phrase", id(seg), q.fieldname, tuple(q.words))
        if key in self.cache:
            return self.cache[key]
        try:
            field = self.schema[q.fieldname]
        except KeyError:
            return EMPTY
        if not field.format or not field.format.supports("positions"):
            return None
        btexts = [self._btext(q.fieldname, w) for w in q.words]
        if any(b is None for b in btexts):
            return EMPTY
        lists = [seg.postings(q.fieldname, b, self.cache) for b in btexts]  # type: ignore[arg-type]
        if any(p is None for p in lists):
            found = EMPTY
        else:
            postings: list[Postings] = lists  # type: ignore[assignment]
            candidates = min((p.ids for p in postings), key=len)
            for p in postings:
                candidates = np.intersect1d(candidates, p.ids, assume_unique=True)
                if not len(candidates):
                    break
            if len(btexts) == 1 or not len(candidates):
                found = candidates
            else:
                in_row = _in_a_row(postings, candidates, seg.doccount)
                # None: W3 blocks, positions decoded one posting at a time
                found = (self._adjacent(field.format, postings, candidates)
                         if in_row is None else in_row)
        self.cache[key] = found
        return found

    @staticmethod
    def _adjacent(fmt: Any, postings: list[Postings], candidates: np.ndarray) -> np.ndarray:
        """The candidates where the words stand in a row (Whoosh's phrase rule: SpanNear2,
        ordered, slop 1, mindist 1)."""
        decode = fmt.decode_as
        positions: list[list[set[int] | list[int]]] = []
        for n, p in enumerate(postings):
            if p.values is None:
                raise Unsupported("postings without positions")
            where = np.searchsorted(p.ids, candidates)
            vals = p.values
            got = [decode("positions", vals[i]) for i in where.tolist()]
            positions.append(got if n == 0 else [set(g) for g in got])
        out = []
        first, rest = positions[0], positions[1:]
        for j, d in enumerate(candidates.tolist()):
            later = [r[j] for r in rest]
            for pos in first[j]:
                if all(pos + i in s for i, s in enumerate(later, 1)):
                    out.append(d)
                    break
        return np.array(out, dtype=np.int64)

    # scoring: (sorted local ids, scores) per segment, for the documents in ``allowed``
    def scores(self, q: wq.Query, allowed: Sequence[np.ndarray]
               ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per segment, (sorted local ids, scores) of the documents in the ``allowed``
        mask that ``q`` scores."""
        return [self._score(q, seg, mask) if mask.any() else (EMPTY, np.zeros(0))
                for seg, mask in zip(self.segments, allowed, strict=True)]

    def _score(self, q: wq.Query, seg: Segment, mask: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        cls = type(q)
        if cls is wq.Term:
            ids, sc = self._term_scores(q.fieldname, q.text, seg, mask)
        elif cls is wq.Or:
            ids, sc = _union([self._score(sub, seg, mask) for sub in q.subqueries])
        elif cls is wq.And:
            ids, sc = _intersection([self._score(sub, seg, mask) for sub in q.subqueries])
        elif cls is wq.Phrase:
            found = self._phrase_docs(q, seg)
            if found is None:
                raise Unsupported("phrase options")
            keep = np.zeros_like(mask)
            keep[found] = True
            keep &= mask
            ids, sc = _intersection([self._term_scores(q.fieldname, w, seg, keep)
                                     for w in q.words])
        else:
            raise Unsupported(cls.__name__)
        if q.boost != 1.0 and len(sc):
            sc = sc * q.boost
        return ids, sc

    def _term_scores(self, fieldname: str, text: Any, seg: Segment, mask: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
        btext = self._btext(fieldname, text)
        p = None if btext is None else seg.postings(fieldname, btext, self.cache)
        if p is None or not len(p.ids):
            return EMPTY, np.zeros(0)
        keep = mask[p.ids]
        ids, w = p.ids[keep], p.weights[keep]
        if not len(ids):
            return EMPTY, np.zeros(0)
        return ids, self._bm25(fieldname, btext, seg, ids, w)  # type: ignore[arg-type]

    def _bm25(self, fieldname: str, btext: bytes, seg: Segment, ids: np.ndarray,
              w: np.ndarray) -> np.ndarray:
        s = self.searcher
        weighting = s.weighting
        field = self.schema[fieldname]
        if type(weighting).__name__ != "BM25F" or getattr(weighting, "_field_B", None):
            raise Unsupported(type(weighting).__name__)
        if not field.scorable:
            return w.copy()  # Whoosh's WeightScorer: the posting's weight
        idf = s.idf(fieldname, btext)
        avgfl = s.avg_field_length(fieldname) or 1
        b, k1 = weighting.B, weighting.K1
        fl = seg.lengths(fieldname)[ids]
        # whoosh.scoring.bm25, term by term in its order, so the same floats
        return idf * ((w * (k1 + 1)) / (w + k1 * ((1 - b) + b * fl / avgfl)))


def _in_a_row(postings: list[Postings], candidates: np.ndarray, doccount: int
              ) -> np.ndarray | None:
    """The candidates where the words (one posting list each, in phrase order) stand in
    a row, from all their positions at once: (document, position - i) of word i must be
    one (document, start) pair for every word. None: no raw positions to read."""
    wanted = np.zeros(doccount, dtype=bool)
    wanted[candidates] = True
    starts = None
    for i, p in enumerate(postings):
        found = p.values.positions() if isinstance(p.values, _LazyValues) else None
        if found is None:
            return None
        which, places = found
        docs = p.ids[which]
        keep = wanted[docs] & (places >= i)
        keys = (docs[keep] << 32) | (places[keep] - i)  # unique: a position is one word
        starts = keys if starts is None else np.intersect1d(starts, keys, assume_unique=True)
        if not len(starts):
            return EMPTY
    assert starts is not None
    return np.unique(starts >> 32)


def _union(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return EMPTY, np.zeros(0)
    if len(parts) == 1:
        return parts[0]
    ids = np.concatenate([p[0] for p in parts])
    sc = np.concatenate([p[1] for p in parts])
    order = np.argsort(ids, kind="stable")  # clauses in order within each document
    ids, sc = ids[order], sc[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    return ids[starts], np.add.reduceat(sc, starts)


def _intersection(parts: list[tuple[np.ndarray, np.ndarray]]
                  ) -> tuple[np.ndarray, np.ndarray]:
    if not parts or any(not len(p[0]) for p in parts):
        return EMPTY, np.zeros(0)
    ids = parts[0][0]
    for p in parts[1:]:
        ids = np.intersect1d(ids, p[0], assume_unique=True)
        if not len(ids):
            return EMPTY, np.zeros(0)
    total = None
    for pids, psc in parts:
        vals = psc[np.searchsorted(pids, ids)]
        total = vals if total is None else total + vals
    return ids, total  # type: ignore[return-value]


def top(ids: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """Indexes of the ``k`` best (highest score, then lowest id), best first."""
    n = len(ids)
    if k <= 0 or not n:
        return np.zeros(0, dtype=np.int64)
    if k < n:
        cut = np.partition(scores, n - k)[n - k]  # the k-th highest score
        pick = np.flatnonzero(scores >= cut)
    else:
        pick = np.arange(n)
    order = np.lexsort((ids[pick], -scores[pick]))
    return pick[order][:k]


def factorize(values: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
    """(codes, uniques): ``uniques[codes[i]] == values[i]``, uniques in first-seen order."""
    index: dict[Any, int] = {}
    setdefault = index.setdefault
    codes = np.fromiter((setdefault(v, len(index)) for v in values), dtype=np.int64,
                        count=len(values))
    return codes, list(index)



__all__ = ["EMPTY", "Matcher", "Postings", "Segment", "Unsupported", "factorize", "top"]
