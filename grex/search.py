"""Search the index: threads (default) or messages, snippets, facets, suggestions, related.

Reading never takes a lock: a search opens the generation ``KB/index`` points at and sees
the last committed state; a commit or a rebuild swap racing the open shows up as an OSError
and the open+search is retried (whoosh re-reads its table of contents without retrying).

This module is on the search path: it imports Whoosh and grex's own light modules only
(never spaCy or scikit-learn).
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import re
import threading
import time
from array import array
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import accumulate
from pathlib import Path
from typing import Any, TypeVar

from whoosh import index as wix
from whoosh import query as wq
from whoosh.matching import (
    FilterMatcher,
    IntersectionMatcher,
    NullMatcherClass,
    UnionMatcher,
    WrappingMatcher,
)
from whoosh.query.terms import MultiTerm
from whoosh.scoring import BM25F, BM25FScorer, WeightLengthScorer
from whoosh.util.times import long_to_datetime

from grex.errors import IndexError_, QueryError
from grex.index import (
    FACETS,
    READ_RETRIES,
    SCHEMA_VERSION,
    TOKEN_PATTERN,
    current_index_dir,
    fold,
    read_meta,
    stem_term,
)
from grex.query import ParsedQuery, analyze, parse_query

SORTS = ("relevance", "newest", "oldest")
SNIPPET_CHARS = 220
SUGGEST_BELOW = 3  # offer "did you mean" when fewer hits than this
FACET_TOP = 10

T = TypeVar("T")


# --------------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One thread (or, with ``messages=True``, one message) that matched."""

    thread_id: str
    subject: str
    score: float
    message_ids: tuple[str, ...]  # the matching messages (thread order: oldest first)
    snippet: str = ""
    highlights: tuple[tuple[int, int], ...] = ()  # [start, end) spans of snippet to mark
    first_date: datetime | None = None
    last_date: datetime | None = None
    participants: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()
    total_messages: int = 0  # messages in the thread (0: unknown)
    sender: str = ""  # message hits: the From line

    def to_json(self) -> dict[str, Any]:
        return {
            "thread_id": self.thread_id,
            "subject": self.subject,
            "score": round(self.score, 4),
            "message_ids": list(self.message_ids),
            "snippet": self.snippet,
            "highlights": [list(s) for s in self.highlights],
            "first_date": _iso(self.first_date),
            "last_date": _iso(self.last_date),
            "participants": list(self.participants),
            "topics": list(self.topics),
            "total_messages": self.total_messages,
            **({"from": self.sender} if self.sender else {}),
        }


@dataclass(frozen=True, slots=True)
class SearchResult:
    query: str
    total: int  # threads (or messages) matching, not just this page
    hits: tuple[SearchHit, ...]
    messages: bool = False
    facets: dict[str, tuple[tuple[str, int], ...]] = field(default_factory=dict)
    suggestion: str | None = None  # a corrected query with more hits ("did you mean")
    offset: int = 0
    limit: int = 20

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "query": self.query,
            "total": self.total,
            "mode": "messages" if self.messages else "threads",
            "offset": self.offset,
            "limit": self.limit,
            "hits": [h.to_json() for h in self.hits],
        }
        if self.facets:
            out["facets"] = {k: [{"value": v, "count": c} for v, c in vals]
                             for k, vals in self.facets.items()}
        if self.suggestion:
            out["suggestion"] = self.suggestion
        return out


def _iso(d: datetime | None) -> str | None:
    if d is None:
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.isoformat()


# --------------------------------------------------------------------------------- opening


class _Open:
    """A cached open index + searcher for one generation directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ix = wix.open_dir(str(path))
        self.searcher = self.ix.searcher(weighting=BM25F())
        self.thread_ids: list[str] | None = None
        self.facet_values: list[Any] | None = None
        self.dates: list[int] | None = None
        self.lengths: dict[Any, dict[str, list[Any]]] = {}  # field lengths read
        self.uses = 3 if LONG_LIVED[0] else 0  # >= 3: keep whole columns (see _thread_column)
        self.columns: dict[tuple[str, bool], Any] = {}
        self.lock = threading.Lock()

    def fresh(self) -> bool:
        return self.searcher.up_to_date()

    def column(self, name: str, *, translate: bool = True) -> Any:
        """A column reader, kept for the reader's life: creating one reads the column's
        whole offset table (milliseconds at 100k documents)."""
        key = (name, translate)
        reader = self.columns.get(key)
        if reader is None:
            reader = self.searcher.reader().column_reader(name, translate=translate)
            self.columns[key] = reader
        return reader

    def close(self) -> None:
        with contextlib.suppress(Exception):  # a reader whose files are gone
            self.searcher.close()


LONG_LIVED = [False]  # set by the search server: every reader it opens is long-lived
_CACHE: dict[str, _Open] = {}
_CACHE_LOCK = threading.Lock()


def _kb_path(kb: Any) -> Path:
    return Path(getattr(kb, "path", kb))


def _open(kb_path: Path) -> _Open:
    index_dir = current_index_dir(kb_path)
    if index_dir is None:
        raise IndexError_(f"no search index in {kb_path}",
                          hint="run `grex reindex` (or `grex import` / `grex sync`) first")
    meta = read_meta(index_dir)
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise IndexError_("the search index was built by another version of grex",
                          hint="run `grex reindex`")
    key = str(index_dir)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None and cached.fresh():
            return cached
        if cached is not None:
            cached.close()
        for other in [k for k in _CACHE if k != key]:
            _CACHE.pop(other).close()
        opened = _Open(index_dir)
        _CACHE[key] = opened
        return opened


def warm(kb: Any) -> None:
    """Open the KB's index and read the columns searches use (for a long-lived process:
    the search server)."""

    def fill(opened: _Open) -> None:
        opened.uses = max(opened.uses, 3)  # long-lived: keep what the searches read
        with opened.lock:
            if opened.thread_ids is None:
                opened.thread_ids = list(opened.column("thread_id"))
            if opened.facet_values is None:
                opened.facet_values = list(opened.column("facets"))
            if opened.dates is None:
                opened.dates = list(opened.column("date", translate=False))
        opened.column("id")

    with_index(kb, fill)


def _forget(kb_path: Path) -> None:
    with _CACHE_LOCK:
        for k in list(_CACHE):
            _CACHE.pop(k).close()


def with_index(kb: Any, fn: Callable[[_Open], T]) -> T:
    """Run ``fn`` on the open index; retry open+run on OSError (a commit or swap racing)."""
    kb_path = _kb_path(kb)
    delay = 0.02
    for attempt in range(READ_RETRIES):
        try:
            return fn(_open(kb_path))
        except (OSError, EOFError) as exc:
            _forget(kb_path)
            if attempt == READ_RETRIES - 1:
                raise IndexError_(f"could not read the search index: {exc}",
                                  hint="retry; if it persists run `grex reindex`") from exc
            time.sleep(delay)
            delay *= 2
        except wix.EmptyIndexError as exc:
            _forget(kb_path)
            if attempt == READ_RETRIES - 1:
                raise IndexError_("the search index is empty or unreadable",
                                  hint="run `grex reindex`") from exc
            time.sleep(delay)
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------------ doc sets


_LOCAL = threading.local()  # .blocks: the posting blocks read by the running search


@contextlib.contextmanager
def _block_cache() -> Iterator[None]:
    """Within one search, each term's posting blocks are read and unpickled once (the
    matching set, the ranking and the phrase check all walk them)."""
    outer = getattr(_LOCAL, "blocks", None)
    _LOCAL.blocks = {} if outer is None else outer
    try:
        yield
    finally:
        _LOCAL.blocks = outer


def _term_blocks(m: Any) -> list[tuple[Any, Any, Any]]:
    """(ids, weights, values) of each posting block of a W3LeafMatcher (from its first
    block: the matcher is reset), as its _read_ids / _read_weights / _read_values decode
    them; cached for the running search. AttributeError / TypeError: not Whoosh 2.7's
    leaf matcher."""
    if type(m).__name__ != "W3LeafMatcher":
        raise TypeError("not a W3LeafMatcher")
    cache = getattr(_LOCAL, "blocks", None)
    key = (id(m._postfile), m._startoffset)
    if cache is not None:
        found = cache.get(key)
        if found is not None:
            return found
    blocks = []
    fixedsize = m._fixedsize
    m.reset()
    while m.is_active():
        if m._data is None:
            m._read_data()
        ids, weights, values = m._data[0], m._data[1], m._data[2]
        n = m._blocklength
        if not m._byteids:
            ids = tuple(accumulate(ids))  # whoosh's delta_decode, in C
        if weights is None:
            weights = array("f", (1.0 for _ in range(n)))
        elif isinstance(weights, float):
            weights = array("f", (weights for _ in range(n)))
        if fixedsize == 0:
            values = (None,) * n
        elif fixedsize is not None and fixedsize > 0:
            values = tuple(values[i:i + fixedsize] for i in range(0, len(values), fixedsize))
        blocks.append((ids, weights, values))
        m._next_block()
    if cache is not None:
        cache[key] = blocks
    return blocks


def _leaf_ids(m: Any) -> Iterable[int]:
    """All ids of a posting matcher, a block at a time for Whoosh's own leaf matcher (its
    generic all_ids() costs three method calls per document)."""
    if isinstance(m, FilterMatcher):  # deletions: subtracted by the caller
        m = m.child
    if type(m).__name__ == "W3LeafMatcher":
        try:
            out: list[int] = []
            for ids, _w, _v in _term_blocks(m):
                out.extend(ids)
            return out
        except (AttributeError, TypeError):  # another whoosh version: the generic way
            pass
    return list(m.all_ids())


def _segment_docset(q: wq.Query, s: Any) -> set[int]:
    """The segment-local documents matching ``q`` (deleted ones included)."""
    r = s.reader()
    if isinstance(q, wq.Term):
        try:
            btext = s.schema[q.fieldname].to_bytes(q.text)
        except (KeyError, ValueError):
            return set()
        if (q.fieldname, btext) not in r:
            return set()
        return set(_leaf_ids(r.postings(q.fieldname, btext)))
    if isinstance(q, wq.Or):
        out: set[int] = set()
        for sub in q.subqueries:
            out |= _segment_docset(sub, s)
        return out
    if isinstance(q, wq.And):
        negative = [sub.query for sub in q.subqueries if isinstance(sub, wq.Not)]
        positive = [sub for sub in q.subqueries if not isinstance(sub, wq.Not)]
        if not positive:
            return set(range(r.doc_count_all())) - _segment_docset(wq.Or(negative), s)
        parts = sorted((_segment_docset(sub, s) for sub in positive), key=len)
        out = parts[0]
        for p in parts[1:]:
            if not out:
                break
            out &= p
        for sub in negative:
            if not out:
                break
            out -= _segment_docset(sub, s)
        return out
    if isinstance(q, wq.AndNot):
        return _segment_docset(q.a, s) - _segment_docset(q.b, s)
    if isinstance(q, wq.Not):
        return set(range(r.doc_count_all())) - _segment_docset(q.query, s)
    if isinstance(q, wq.Every):
        return set(range(r.doc_count_all()))
    if isinstance(q, wq.ConstantScoreQuery):
        return _segment_docset(q.child, s)
    if isinstance(q, wq.Phrase):
        found = _phrase_docset(q, s)
        if found is not None:
            return found
    if isinstance(q, wq.NumericRange):  # a union of tiered term ranges
        simple = q.simplify(r)
        if simple is not q and simple != q:
            return _segment_docset(simple, s)
    if isinstance(q, MultiTerm):  # prefixes, wildcards, term ranges: their terms' postings
        try:
            fieldname = q.field()
            out = set()
            for btext in q._btexts(r):
                out.update(_leaf_ids(r.postings(fieldname, btext)))
            return out
        except (AttributeError, TypeError, ValueError):
            pass  # another whoosh version: the generic way below
    return set(q.docs(s))


def _phrase_docset(q: wq.Phrase, s: Any) -> set[int] | None:
    """The documents holding the phrase: the documents with all its words (posting blocks,
    as for terms), then their positions checked for those only. Whoosh's phrase matcher
    (SpanNear2, ordered, slop 1) finds the same set through generic span matchers, one
    document at a time. None: not the plain case (a slop, a field without positions)."""
    if q.slop != 1 or not q.words:
        return None
    r = s.reader()
    fieldname = q.fieldname
    try:
        field = s.schema[fieldname]
    except KeyError:
        return set()
    if not field.format or not field.format.supports("positions"):
        return None
    try:
        btexts = [field.to_bytes(w) for w in q.words]
    except ValueError:
        return set()
    if any((fieldname, b) not in r for b in btexts):
        return set()
    try:
        parts = sorted((set(_leaf_ids(r.postings(fieldname, b))) for b in set(btexts)),
                       key=len)
        candidates = parts[0]
        for part in parts[1:]:
            candidates &= part
        if len(btexts) == 1 or not candidates:
            return candidates
        found = _adjacent(r, fieldname, btexts, candidates)
        cache = getattr(_LOCAL, "blocks", None)
        if cache is not None:  # every document of the segment with the phrase
            cache[("phrase", id(r), fieldname, tuple(btexts))] = found
        return set(found)
    except (AttributeError, TypeError):  # another whoosh version: the generic way
        return None


def _adjacent(r: Any, fieldname: str, btexts: Sequence[bytes], candidates: Iterable[int]
              ) -> set[int]:
    """The candidates (documents holding every word) where the words stand in a row:
    Whoosh's phrase rule (SpanNear2, ordered, slop 1, mindist 1)."""
    wanted = set(candidates)
    positions: list[dict[int, Any]] = []
    for b in btexts:
        m = r.postings(fieldname, b)
        m = m.child if isinstance(m, FilterMatcher) else m
        decode = m.format.decode_as
        found: dict[int, Any] = {}
        for ids, _w, values in _term_blocks(m):
            for d, v in zip(ids, values, strict=True):
                if d in wanted:
                    found[d] = v
        positions.append({d: decode("positions", v) for d, v in found.items()})
    out: set[int] = set()
    first = positions[0]
    rest = positions[1:]
    for d in wanted:
        if d not in first or any(d not in later for later in rest):
            continue
        sets = [set(later[d]) for later in rest]
        for p in first[d]:
            if all(p + i in later for i, later in enumerate(sets, 1)):
                out.add(d)
                break
    return out


def docset(searcher: Any, q: wq.Query) -> list[int]:
    """Global document numbers matching ``q``: the same set as
    ``searcher.docs_for_query(q)``, computed with set operations over posting blocks."""
    subs = searcher.subsearchers or [(searcher, 0)]
    out: list[int] = []
    for s, offset in subs:
        ids = _segment_docset(q, s)
        deleted = s.reader().deleted_docs_set if s.reader().has_deletions() else None
        if deleted:
            ids -= set(deleted)
        out.extend(sorted(d + offset for d in ids) if offset else sorted(ids))
    return out


# --------------------------------------------------------------------------------- snippets

_WS = re.compile(r"\s+")
_WORDS = re.compile(TOKEN_PATTERN)


@functools.lru_cache(maxsize=256)
def _candidates(heads: tuple[str, ...]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(h) for h in heads)
    return re.compile(rf"(?<!\w)(?:{alternatives})\w*", re.IGNORECASE)


def snippet_for(text: str, terms: frozenset[str], prefixes: frozenset[str] = frozenset(),
                width: int = SNIPPET_CHARS) -> tuple[str, tuple[tuple[int, int], ...]]:
    """A window of ``text`` around the densest cluster of matching words, whitespace
    collapsed, with the [start, end) spans of the matching words. No escaping: the caller
    formats (a terminal style, HTML escaping, ...)."""
    if not text:
        return "", ()
    matches: list[tuple[int, int, str]] = []
    if terms or prefixes:
        # stem only the words that can match: Porter2 keeps a word's first letters, so a
        # regex over the accent-folded text finds the candidates (stemming every word of
        # every snippet cost more than the search itself)
        heads = sorted({t[:3] for t in terms} | {p[:3] for p in prefixes}, key=len,
                       reverse=True)
        folded = fold(text)
        source = folded if len(folded) == len(text) else text
        pattern = _candidates(tuple(heads))
        for m in pattern.finditer(source):
            start, end = m.start(), m.end()
            t = stem_term(text[start:end])
            if t in terms or (prefixes and t.startswith(tuple(prefixes))):
                matches.append((start, end, t))
    if not matches:
        start, end = 0, min(len(text), width)
    else:
        best, best_key = 0, (-1, -1)
        for i, (s, _e, _t) in enumerate(matches):
            inside = [m for m in matches[i:] if m[1] <= s + width]
            key = (len({m[2] for m in inside}), len(inside))
            if key > best_key:
                best, best_key = i, key
        first = matches[best][0]
        start = max(0, first - width // 4)
        if start > 0:
            space = text.rfind(" ", max(0, start - 20), first)
            start = space + 1 if space >= 0 else start
        end = min(len(text), start + width)
        if end < len(text):
            space = text.rfind(" ", start + width // 2, end)
            end = space if space > 0 else end
    out: list[str] = []
    spans: list[tuple[int, int]] = []
    length = 0
    if start > 0:
        out.append("… ")
        length += 2
    cursor = start
    for s, e, _t in matches:
        if s < cursor or e > end:
            continue
        between = _WS.sub(" ", text[cursor:s])
        out.append(between)
        length += len(between)
        word = text[s:e]
        spans.append((length, length + len(word)))
        out.append(word)
        length += len(word)
        cursor = e
    tail = _WS.sub(" ", text[cursor:end])
    out.append(tail)
    snippet = "".join(out)
    # leading whitespace collapse may leave one space at the very start
    if snippet.startswith(" "):
        snippet = snippet[1:]
        spans = [(a - 1, b - 1) for a, b in spans]
    snippet = snippet.rstrip()
    if end < len(text):
        snippet += " …"
    return snippet, tuple(spans)


def _field_terms(parsed: ParsedQuery, name: str) -> frozenset[str]:
    return frozenset(t for f, t in parsed.highlight_terms if f == name)


def _field_prefixes(parsed: ParsedQuery, name: str) -> frozenset[str]:
    return frozenset(p for f, p in parsed.highlight_prefixes if f == name)


def _snippet(fields: dict[str, Any], parsed: ParsedQuery) -> tuple[str, tuple[tuple[int, int],
                                                                             ...]]:
    body_terms = _field_terms(parsed, "body") | _field_terms(parsed, "quoted")
    body_prefixes = _field_prefixes(parsed, "body")
    return snippet_for(fields.get("excerpt", "") or "", body_terms, body_prefixes)


# ----------------------------------------------------------------------------------- search


def search(
    kb: Any,
    query: str,
    *,
    messages: bool = False,
    limit: int = 20,
    offset: int = 0,
    sort: str = "relevance",
    facets: Sequence[str] = (),
    suggest: bool = True,
    now: datetime | None = None,
    conn: Any = None,
) -> SearchResult:
    """Search the KB's index with grex's query language (see docs/search.md).

    ``kb``: a KB (with ``.path``) or its path. ``conn``: an optional catalog connection,
    used for thread participants / date ranges / message counts and to follow merged
    thread ids in ``thread:``; without it those come from the matching documents.
    Raises QueryError (bad query, bad option) or IndexError_ (no readable index).
    """
    if sort not in SORTS:
        raise QueryError(f"unknown sort {sort!r}", hint="use " + " | ".join(SORTS))
    bad = [f for f in facets if f not in FACETS]
    if bad:
        raise QueryError(f"unknown facet {bad[0]!r}", hint="use " + " | ".join(FACETS))
    if limit < 0 or offset < 0:
        raise QueryError("--limit and --offset must not be negative")
    resolve = _thread_resolver(conn)
    parsed = parse_query(query, now=now, resolve_thread=resolve)

    def run(opened: _Open) -> SearchResult:
        s = opened.searcher
        if messages:
            total, hits, matched = _message_hits(opened, parsed, limit, offset, sort)
        else:
            total, hits, matched = _thread_hits(opened, parsed, limit, offset, sort, conn)
        facet_counts = _facets(opened, matched, facets, by_thread=not messages) if facets else {}
        suggestion = None
        if suggest and total < SUGGEST_BELOW and parsed.words:
            suggestion = _suggestion(s, parsed, total, now, resolve)
        return SearchResult(query=query, total=total, hits=tuple(hits), messages=messages,
                            facets=facet_counts, suggestion=suggestion, offset=offset,
                            limit=limit)

    def cached(opened: _Open) -> SearchResult:
        with _block_cache():
            return run(opened)

    return with_index(kb, cached)


def _thread_resolver(conn: Any) -> Callable[[str], str] | None:
    if conn is None:
        return None
    try:
        from grex import store  # noqa: PLC0415 - light; only when a catalog is at hand
    except ImportError:
        return None
    fn = getattr(store, "resolve_thread_id", None)
    if fn is None:
        return None

    def resolve(tid: str) -> str:
        try:
            return fn(conn, tid) or tid
        except Exception:  # noqa: BLE001 - an unknown id simply matches nothing
            return tid

    return resolve


def _date_of(fields: dict[str, Any]) -> datetime | None:
    d = fields.get("date")
    return d.replace(tzinfo=UTC) if isinstance(d, datetime) and d.tzinfo is None else d


def _ranked(s: Any, parsed: ParsedQuery, matched: list[int], k: int,
            opened: _Open | None = None) -> list[tuple[int, float]]:
    """The best ``k`` matching documents by relevance, as (docnum, score).

    Whoosh scores only the query's words (``parsed.scoring``), restricted to the matching
    set computed already: dates, labels, flags and negations filter without being dragged
    through Whoosh's matchers (a date range is a union of hundreds of numeric terms).
    Matching documents without a scored word (``a OR date:..``) come after, newest first.
    """
    return _ranker(s, parsed, matched, opened)(k)


def _ranker(s: Any, parsed: ParsedQuery, matched: list[int], opened: _Open | None = None
            ) -> Callable[[int], list[tuple[int, float]]]:
    """k -> the best k matching documents (see _ranked); scores are computed once."""
    if parsed.scoring is None:
        return lambda k: []
    lengths = opened.lengths if opened is not None and opened.uses >= 3 else None
    try:
        scores = _bulk_scores(s, parsed.scoring, matched, lengths)
    except _Unsupported:
        allowed = set(matched)
        return lambda k: [(h.docnum, float(h.score or 0.0))
                          for h in s.search(parsed.scoring, limit=k, filter=allowed)
                          ] if k > 0 else []
    return lambda k: heapq.nsmallest(k, scores.items(), key=lambda dv: (-dv[1], dv[0]))


class _Unsupported(Exception):
    """A matcher _bulk_ranked does not know: let Whoosh rank."""


def _bulk_ranked(s: Any, q: wq.Query, matched: list[int], k: int,
                 lengths: dict[Any, dict[str, list[Any]]] | None = None
                 ) -> list[tuple[int, float]]:
    """What ``s.search(q, limit=k, filter=set(matched))`` returns (see _bulk_scores)."""
    scores = _bulk_scores(s, q, matched, lengths)
    return heapq.nsmallest(k, scores.items(), key=lambda dv: (-dv[1], dv[0]))


def _bulk_scores(s: Any, q: wq.Query, matched: list[int],
                 lengths: dict[Any, dict[str, list[Any]]] | None = None
                 ) -> dict[int, float]:
    """docnum -> score of every matching document the scoring query ``q`` matches,
    computed a posting block at a time instead of a document at a time.

    Whoosh's collector walks its matcher tree document by document (a dozen Python calls
    per document and tree node for a word searched in seven fields); here the same tree,
    built by Whoosh for the same searcher and context, is evaluated bottom-up over
    dictionaries: a leaf's scores come from the same scorer with the same weight and
    field length, a union adds its two sides where both match, an intersection adds them
    where both match, a wrapper multiplies by its boost. Each document's score is the
    same sum in the same grouping, so the floats, and the order (score, then docnum), are
    Whoosh's. Raises _Unsupported for other matchers (phrases, ...). ``lengths``: field
    lengths read so far, per segment and field (a long-lived reader keeps them).

    Whoosh's own top-k collector can miss a document: it drops parts of the matcher tree
    whose bound (from lossily encoded field lengths) falls below the k-th score, and some
    documents do score above their bound; here every matching document is scored, so the
    top k are exactly the first k of Whoosh's unlimited ranking."""
    context = s.context()
    scores: dict[int, float] = {}
    remaining = sorted(matched)
    pos = 0
    for sub, offset in s.leaf_searchers():
        end = offset + sub.doc_count_all()
        local: set[int] = set()
        while pos < len(remaining) and remaining[pos] < end:
            local.add(remaining[pos] - offset)
            pos += 1
        if not local:
            continue
        memo = None if lengths is None else lengths.setdefault(id(sub.reader()), {})
        found = _tree_scores(q.matcher(sub, context), local, memo, sub.reader())
        if offset:
            scores.update((d + offset, v) for d, v in found.items())
        else:
            scores.update(found)
    return scores


def _tree_scores(m: Any, docs: set[int], lengths: dict[str, list[Any]] | None,
                 reader: Any = None) -> dict[int, float]:
    cls = type(m)
    if cls is UnionMatcher:
        a = _tree_scores(m.a, docs, lengths, reader)
        b = _tree_scores(m.b, docs, lengths, reader)
        out = dict(a)
        for d, v in b.items():
            x = out.get(d)
            out[d] = v if x is None else x + v
        return out
    if cls is IntersectionMatcher:
        a = _tree_scores(m.a, docs, lengths, reader)
        if not a:
            return a
        b = _tree_scores(m.b, docs, lengths, reader)
        return {d: v + b[d] for d, v in a.items() if d in b}
    if cls is WrappingMatcher or cls is FilterMatcher:
        inner = _tree_scores(m.child, docs, lengths, reader)
        if cls is FilterMatcher:
            ids = m._ids
            inner = ({d: v for d, v in inner.items() if d not in ids} if m._exclude
                     else {d: v for d, v in inner.items() if d in ids})
        boost = m.boost
        return {d: v * boost for d, v in inner.items()}
    if isinstance(m, NullMatcherClass):
        return {}
    if cls.__name__ == "W3LeafMatcher":
        return _leaf_scores(m, docs, lengths)
    if cls.__name__ == "SpanNear2Matcher" and reader is not None:
        # a phrase: scored as the intersection of its words (Whoosh: the wrapped
        # IntersectionMatcher's score times the boost), kept where the words stand in a row
        if (m.slop, m.ordered, m.mindist) != (1, True, 1) or \
                getattr(cls, "score", None) is not WrappingMatcher.score:
            raise _Unsupported("span options")
        terms = []
        for leaf in m.ms:
            leaf = leaf.child if type(leaf) is FilterMatcher else leaf
            term = getattr(leaf, "_term", None)
            if type(leaf).__name__ != "W3LeafMatcher" or not term:
                raise _Unsupported("phrase leaf")
            terms.append(term)
        if len({f for f, _b in terms}) != 1:
            raise _Unsupported("phrase over fields")
        inner = _tree_scores(m.child, docs, lengths, reader)
        cache = getattr(_LOCAL, "blocks", None) or {}
        phrase_docs = cache.get(("phrase", id(reader), terms[0][0], tuple(b for _f, b in terms)))
        keep = (phrase_docs.intersection(inner) if phrase_docs is not None
                else _adjacent(reader, terms[0][0], [b for _f, b in terms], inner))
        boost = m.boost
        return {d: inner[d] * boost for d in keep}
    raise _Unsupported(cls.__name__)


def _leaf_scores(m: Any, docs: set[int], lengths: dict[str, list[Any]] | None
                 ) -> dict[int, float]:
    scorer = m.scorer
    if scorer is None or type(scorer).score is not WeightLengthScorer.score or \
            not hasattr(scorer, "dfl"):
        raise _Unsupported(type(scorer).__name__)
    score, dfl = scorer._score, scorer.dfl
    bm25 = type(scorer) is BM25FScorer
    if bm25:  # whoosh.scoring.bm25, inline: the same expression, so the same floats
        idf, avgfl, b, k1 = scorer.idf, scorer.avgfl, scorer.B, scorer.K1
        k1p, omb = k1 + 1, 1 - b
    # field lengths: one column read per document; a long-lived reader keeps them
    memo = None
    term = getattr(m, "_term", None)
    if lengths is not None and term:
        memo = lengths.get(term[0])
        if memo is None:
            memo = lengths[term[0]] = [None] * (max(docs) + 1 if docs else 0)
        elif len(memo) <= max(docs):
            memo.extend([None] * (max(docs) + 1 - len(memo)))
    out: dict[int, float] = {}
    try:
        blocks = _term_blocks(m)
    except (AttributeError, TypeError) as exc:  # another whoosh version
        raise _Unsupported(str(exc)) from None
    for ids, weights, _values in blocks:
        for d, w in zip(ids, weights, strict=True):
            if d in docs:
                if memo is None:
                    fl = dfl(d)
                else:
                    fl = memo[d]
                    if fl is None:
                        fl = memo[d] = dfl(d)
                out[d] = (idf * ((w * k1p) / (w + k1 * (omb + b * fl / avgfl)))
                          if bm25 else score(w, fl))
    return out


def _by_date(opened: _Open, docs: Iterable[int], *, newest: bool) -> list[int]:
    dates = _dates(opened)
    return sorted(docs, key=lambda d: (dates[d], d), reverse=newest)


def _message_hits(opened: _Open, parsed: ParsedQuery, limit: int, offset: int,
                  sort: str) -> tuple[int, list[SearchHit], list[int]]:
    s = opened.searcher
    opened.uses += 1
    matched = docset(s, parsed.query)
    total = len(matched)
    want = offset + limit
    if sort == "relevance":
        page = _ranked(s, parsed, matched, want, opened)
        if len(page) < want and len(page) < total:
            seen = {d for d, _ in page}
            rest = _by_date(opened, (d for d in matched if d not in seen), newest=True)
            page += [(d, 0.0) for d in rest[:want - len(page)]]
    else:
        page = [(d, 0.0) for d in _by_date(opened, matched, newest=sort == "newest")[:want]]
    hits = []
    for docnum, score in page[offset:want] if limit else []:
        stored = s.stored_fields(docnum)
        snippet, spans = _snippet(stored, parsed)
        date = _date_of(stored)
        hits.append(SearchHit(
            thread_id=stored.get("thread_id", ""),
            subject=stored.get("subject", ""),
            score=score,
            message_ids=(stored["id"],),
            snippet=snippet,
            highlights=spans,
            first_date=date,
            last_date=date,
            participants=tuple(_names(stored)),
            topics=tuple(stored.get("topics") or ()),
            total_messages=0,
            sender=(stored.get("from", "") or "").split("\n")[0],
        ))
    return total, hits, matched


def _dates(opened: _Open) -> Any:
    """docnum -> the raw (sortable) date: the column, or for a long-lived reader (third
    search on it) the whole column as a list (a column read costs microseconds; sorting
    thousands of matches by date reads thousands)."""
    if opened.dates is None and opened.uses >= 3:
        with opened.lock:
            if opened.dates is None:
                opened.dates = list(opened.column("date", translate=False))
    if opened.dates is not None:
        return opened.dates
    return opened.column("date", translate=False)


def _names(stored: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key in ("from", "to", "cc"):
        for line in (stored.get(key) or "").split("\n"):
            name = line.split(" <")[0].strip() if " <" in line else line.strip()
            if name and name not in out:
                out.append(name)
    return out


def _thread_column(opened: _Open, docnums: list[int]) -> dict[int, str]:
    """docnum -> thread id for the matching documents. One lookup per document (about a
    microsecond) in a fresh process; a long-lived reader (third search on it) keeps the
    whole column, whose first read costs about 4 us per document of the index."""
    opened.uses += 1
    if opened.thread_ids is None and opened.uses >= 3:
        with opened.lock:
            if opened.thread_ids is None:
                opened.thread_ids = list(opened.column("thread_id"))
    if opened.thread_ids is not None:
        col = opened.thread_ids
        return {d: col[d] for d in docnums}
    creader = opened.column("thread_id")
    return {d: creader[d] for d in docnums}


def _thread_hits(opened: _Open, parsed: ParsedQuery, limit: int, offset: int, sort: str,
                 conn: Any) -> tuple[int, list[SearchHit], list[int]]:
    s = opened.searcher
    matched = docset(s, parsed.query)
    if not matched:
        return 0, [], []
    tid_of = _thread_column(opened, matched)
    by_thread: dict[str, list[int]] = defaultdict(list)
    for d in matched:
        by_thread[tid_of[d]].append(d)
    total = len(by_thread)
    want = offset + limit
    best: dict[str, tuple[int, float]] = {}  # thread -> (docnum, score) of its best message
    order: list[str] = []
    raw_dates = _dates(opened)
    if sort == "relevance":
        k = max(want * 3, 30)
        rank = _ranker(s, parsed, matched, opened)
        while True:
            ranked = rank(k)
            best.clear()
            order.clear()
            for docnum, score in ranked:
                tid = tid_of[docnum]
                if tid not in best:
                    best[tid] = (docnum, score)
                    order.append(tid)
                    if len(order) >= want:
                        break
            if len(order) >= want or len(ranked) < k or k >= len(matched):
                break
            k *= 4
        if len(order) < min(want, total):  # threads with no scored word: newest first
            newest_doc: dict[str, tuple[int, int]] = {}
            for tid, docs in by_thread.items():
                if tid not in best:
                    d = max(docs, key=lambda x: (raw_dates[x], x))
                    newest_doc[tid] = (raw_dates[d], d)
            for tid in sorted(newest_doc, key=lambda t: newest_doc[t], reverse=True):
                best[tid] = (newest_doc[tid][1], 0.0)
                order.append(tid)
                if len(order) >= want:
                    break
    else:
        newest = sort == "newest"
        key_of: dict[str, Any] = {}
        for tid, docs in by_thread.items():
            ds = [(raw_dates[d], d) for d in docs]
            pick = max(ds) if newest else min(ds)
            key_of[tid] = pick[0]
            best[tid] = (pick[1], 0.0)
        order = sorted(by_thread, key=lambda t: (key_of[t], t), reverse=newest)
    page = order[offset:offset + limit] if limit else []
    ids = opened.column("id")
    hits = [_thread_hit(opened, parsed, tid, by_thread[tid], best[tid], conn, ids, raw_dates)
            for tid in page]
    return total, hits, matched


def _thread_hit(opened: _Open, parsed: ParsedQuery, tid: str, docs: list[int],
                best: tuple[int, float], conn: Any, ids: Any, raw_dates: Any) -> SearchHit:
    s = opened.searcher
    ordered = sorted(docs, key=lambda d: (raw_dates[d], d))  # oldest first, from columns
    top = s.stored_fields(best[0])
    snippet, spans = _snippet(top, parsed)
    first = long_to_datetime(raw_dates[ordered[0]]).replace(tzinfo=UTC)
    last = long_to_datetime(raw_dates[ordered[-1]]).replace(tzinfo=UTC)
    subject, total_messages, participants = "", 0, []
    thread = _catalog_thread(conn, tid)
    if thread is not None:
        subject = thread.subject or ""
        first, last = thread.first_date, thread.last_date
        total_messages = len(thread.message_ids)
        participants = [a.label for a in thread.participants]
    if not participants:  # no catalog at hand: the names on a few matching messages
        for d in [best[0], *ordered[:4]]:
            for n in _names(s.stored_fields(d) if d != best[0] else top):
                if n not in participants:
                    participants.append(n)
    if not subject:
        subject = (s.stored_fields(ordered[0]) if ordered[0] != best[0] else top).get(
            "subject", "")
    return SearchHit(
        thread_id=tid,
        subject=subject,
        score=best[1],
        message_ids=tuple(ids[d] for d in ordered),
        snippet=snippet,
        highlights=spans,
        first_date=first,
        last_date=last,
        participants=tuple(participants),
        topics=tuple(top.get("topics") or ()),
        total_messages=total_messages,
    )


def _catalog_thread(conn: Any, tid: str) -> Any:
    if conn is None:
        return None
    try:
        from grex import store  # noqa: PLC0415
        return store.get_thread(conn, tid)
    except Exception:  # noqa: BLE001 - the catalog may be ahead of / behind the index
        return None


# ----------------------------------------------------------------------------------- facets


def _facets(opened: _Open, matched: list[int], names: Sequence[str], *,
            by_thread: bool) -> dict[str, tuple[tuple[str, int], ...]]:
    if not matched:
        return {name: () for name in names}
    col = opened.column("facets")
    if opened.facet_values is None and opened.uses >= 3:  # a long-lived reader: keep all
        with opened.lock:
            if opened.facet_values is None:
                opened.facet_values = list(col)
    if opened.facet_values is not None:
        col = opened.facet_values
    tid_of = _thread_column(opened, matched) if by_thread else {}
    counts: dict[str, dict[str, set[Any]]] = {n: {} for n in names}
    display: dict[str, dict[str, str]] = {n: {} for n in names}
    rows = [(tid_of[d] if by_thread else d, col[d]) for d in matched]
    for name in names:
        count, shown = counts[name], display[name]
        for unit, values in rows:
            if not values:
                continue
            for v in values.get(name, ()) or ():
                key = v.casefold()
                units = count.get(key)
                if units is None:
                    count[key] = units = set()
                    shown[key] = v
                units.add(unit)
    out = {}
    for name in names:
        ranked = sorted(counts[name].items(), key=lambda kv: (-len(kv[1]), kv[0]))
        out[name] = tuple((display[name][k], len(units)) for k, units in ranked[:FACET_TOP])
    return out


# ------------------------------------------------------------------------------ suggestions


def _surface(s: Any, fieldname: str, term: str) -> str:
    """A real word of the index that stems to ``term`` (suggestions show words, not stems)."""
    try:
        postings = s.reader().postings(fieldname, term)
        docnum = next(iter(postings.all_ids()))
    except (KeyError, StopIteration, Exception):  # noqa: BLE001
        return term
    stored = s.stored_fields(docnum)
    for text in (stored.get("subject", ""), stored.get("excerpt", "")):
        for m in re.finditer(r"\w+", text or ""):
            if analyze(fieldname, m.group()) == [term]:
                return m.group().lower()
    return term


def _suggestion(s: Any, parsed: ParsedQuery, total: int, now: datetime | None,
                resolve: Callable[[str], str] | None) -> str | None:
    replacements: list[tuple[int, int, str]] = []
    for w in parsed.words:
        if w.phrase or w.wildcard or w.prefix not in (None, "subject", "body"):
            continue
        terms = analyze("body", w.text)
        if len(terms) != 1:
            continue
        term = terms[0]
        known = s.doc_frequency("body", term) + s.doc_frequency("subject", term)
        if known > 0:
            continue
        candidates: list[tuple[int, str, str]] = []
        for fieldname in ("body", "subject"):
            try:
                for cand in s.suggest(fieldname, term, limit=5, maxdist=2, prefix=1):
                    candidates.append((s.doc_frequency(fieldname, cand), fieldname, cand))
            except Exception:  # noqa: BLE001 - an empty field has no word graph
                continue
        if not candidates:
            continue
        _freq, fieldname, cand = max(candidates)
        replacements.append((w.pos, w.pos + len(w.text), _surface(s, fieldname, cand)))
    if not replacements:
        return None
    text = parsed.text
    for start, end, new in sorted(replacements, reverse=True):
        text = text[:start] + new + text[end:]
    try:
        better = parse_query(text, now=now, resolve_thread=resolve)
    except QueryError:
        return None
    if len(docset(s, better.query)) <= total:
        return None
    return text


# ----------------------------------------------------------------------------------- related


def related(kb: Any, thread_id: str, *, limit: int = 10, conn: Any = None) -> SearchResult:
    """Threads like ``thread_id`` ("more like this"): its distinctive words, searched in
    every other thread's subject and body."""
    resolve = _thread_resolver(conn)
    tid = resolve(thread_id) if resolve else thread_id

    def run(opened: _Open) -> SearchResult:
        s = opened.searcher
        docs = list(s.docs_for_query(wq.Term("thread_id", tid)))
        if not docs:
            raise QueryError(f"no thread {thread_id!r} in the index",
                             hint="thread ids are shown by `grex search`")
        text = "\n".join(f"{f.get('subject', '')}\n{f.get('excerpt', '')}"
                         for f in (s.stored_fields(d) for d in docs))
        keys = s.key_terms_from_text("body", text, numterms=15)
        if not keys:
            return SearchResult(query=f"related:{tid}", total=0, hits=(), limit=limit)
        q = wq.Or([wq.Term(f, word, boost=float(weight))
                   for word, weight in keys for f in ("body", "subject")])
        q = wq.AndNot(q, wq.Term("thread_id", tid))
        parsed = ParsedQuery(text=f"related:{tid}", tree=None,  # type: ignore[arg-type]
                             query=q, scoring=q,
                             highlight_terms=frozenset(("body", w) for w, _ in keys))
        total, hits, _matched = _thread_hits(opened, parsed, limit, 0, "relevance", conn)
        return SearchResult(query=f"related:{tid}", total=total, hits=tuple(hits),
                            limit=limit)

    return with_index(kb, run)


# ------------------------------------------------------------------------------ for export


def matching_threads(kb: Any, query: str, *, conn: Any = None,
                     now: datetime | None = None) -> set[str]:
    """The ids of every thread the query matches, without ranking, snippets or the catalog
    (for `grex export --only QUERY`: search(..., limit=all) builds a hit per thread)."""
    parsed = parse_query(query, now=now, resolve_thread=_thread_resolver(conn))

    def run(opened: _Open) -> set[str]:
        matched = docset(opened.searcher, parsed.query)
        return set(_thread_column(opened, matched).values())

    return with_index(kb, run)



def iter_index_docs(kb: Any, *, thread_id: str | None = None) -> Iterator[dict[str, Any]]:
    """The stored fields of every live document (or of one thread's), for the HTML
    exporter: id, thread_id, subject, from, to, cc, date (naive UTC), folder, label,
    attachment, flag, excerpt, topics. Reads one consistent generation."""

    def collect(opened: _Open) -> list[dict[str, Any]]:
        s = opened.searcher
        if thread_id is not None:
            return [s.stored_fields(d)
                    for d in s.docs_for_query(wq.Term("thread_id", thread_id))]
        return list(s.all_stored_fields())

    yield from with_index(kb, collect)


def index_stats(kb: Any) -> dict[str, Any]:
    """Documents, deleted documents, segments and the generation directory in use."""

    def stats(opened: _Open) -> dict[str, Any]:
        r = opened.searcher.reader()
        return {"documents": r.doc_count(), "documents_all": r.doc_count_all(),
                "segments": len(opened.ix._segments()), "path": str(opened.path),
                "meta": read_meta(opened.path)}

    return with_index(kb, stats)


def facet_names() -> tuple[str, ...]:
    return FACETS


__all__ = ["SORTS", "SearchHit", "SearchResult", "docset", "facet_names", "index_stats",
           "iter_index_docs", "matching_threads", "related", "search", "snippet_for",
           "with_index"]

