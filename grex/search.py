"""Search the index: threads (default) or messages, snippets, facets, suggestions, related.

Reading never takes a lock: a search opens the generation ``KB/index`` points at and sees
the last committed state; a commit or a rebuild swap racing the open shows up as an OSError
and the open+search is retried (whoosh re-reads its table of contents without retrying).

Matching and ranking run over posting lists read as numpy arrays (grex.postings); this
module groups the matching messages into threads and builds the hits.

This module is on the search path: it imports Whoosh, numpy and grex's own light modules
only (never spaCy or scikit-learn).
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from whoosh import index as wix
from whoosh import query as wq
from whoosh.scoring import BM25F
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
from grex.postings import EMPTY, Matcher, Segment, Unsupported, factorize, top
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
    """A cached open index + searcher for one generation directory, with the arrays its
    searches keep (segments' field lengths and dates; for a long-lived reader also the
    thread of every document and the facet values)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ix = wix.open_dir(str(path))
        self.searcher = self.ix.searcher(weighting=BM25F())
        self.thread_codes: np.ndarray | None = None  # docnum -> index into thread_names
        self.thread_names: list[str] = []
        self.facet_values: list[Any] | None = None
        self.facet_tables: dict[str, Any] = {}  # facet name -> _FacetTable (long-lived)
        self._dates: np.ndarray | None = None
        self._segments: list[Segment] | None = None
        self.uses = 3 if LONG_LIVED[0] else 0  # >= 3: keep whole columns (see _thread_codes)
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

    def segments(self) -> list[Segment]:
        if self._segments is None:
            with self.lock:
                if self._segments is None:
                    self._segments = _segments_of(self.searcher)
        return self._segments

    def dates(self) -> np.ndarray:
        """docnum -> raw (sortable) date, from the segments' date columns."""
        if self._dates is None:
            segs = self.segments()
            self._dates = (np.concatenate([seg.dates() for seg in segs]) if segs
                           else np.zeros(0, dtype=np.uint64))
        return self._dates

    def close(self) -> None:
        with contextlib.suppress(Exception):  # a reader whose files are gone
            self.searcher.close()


def _segments_of(searcher: Any) -> list[Segment]:
    subs = searcher.leaf_searchers() if searcher.subsearchers else [(searcher, 0)]
    return [Segment(sub.reader(), offset) for sub, offset in subs]


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
        _thread_codes(opened, EMPTY)
        _facet_column(opened)
        opened.dates()
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


_LOCAL = threading.local()  # .blocks: the postings read by the running search


@contextlib.contextmanager
def _block_cache() -> Iterator[None]:
    """Within one search, each term's postings are read once (the matching set, the
    ranking and the phrase check all use them)."""
    outer = getattr(_LOCAL, "blocks", None)
    _LOCAL.blocks = {} if outer is None else outer
    try:
        yield
    finally:
        _LOCAL.blocks = outer


def _matcher(searcher: Any, opened: _Open | None = None) -> Matcher:
    segments = opened.segments() if opened is not None else _segments_of(searcher)
    cache = getattr(_LOCAL, "blocks", None)
    return Matcher(searcher, segments, {} if cache is None else cache)


def docset(searcher: Any, q: wq.Query) -> list[int]:
    """Global document numbers matching ``q``, ascending: the same set as
    ``searcher.docs_for_query(q)`` without deleted documents, computed with set operations
    over posting lists (grex.postings)."""
    return _matcher(searcher).docset(q).tolist()


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
        # the pattern ignores case: only accents need folding (and only where folding
        # keeps the offsets)
        if text.isascii():
            source = text
        else:
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
        opened.uses += 1
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


def _match(m: Matcher, q: wq.Query) -> tuple[list[np.ndarray], np.ndarray]:
    """(a mask of the matching documents per segment, their global numbers ascending)."""
    masks = m.masks(q)
    return masks, m.numbered(masks)


def _scored(m: Matcher, q: wq.Query | None, masks: list[np.ndarray],
            matched: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(global docnums ascending, scores) of the matching documents that the ranking
    query ``q`` scores (BM25F over posting lists, grex.postings). Dates, labels, flags and
    negations filter without taking part: they are in the matching set only. A query the
    arrays can't score is ranked by Whoosh, restricted to the matching set."""
    if q is None or not len(matched):
        return EMPTY, np.zeros(0)
    try:
        parts = m.scores(q, masks)
    except Unsupported:
        hits = m.searcher.search(q, limit=None, filter=set(matched.tolist()))
        pairs = sorted((h.docnum, float(h.score or 0.0)) for h in hits)
        return (np.array([d for d, _ in pairs], dtype=np.int64),
                np.array([v for _, v in pairs], dtype=np.float64))
    ids = [p_ids + seg.offset if seg.offset else p_ids
           for (p_ids, _sc), seg in zip(parts, m.segments, strict=True)]
    return np.concatenate(ids), np.concatenate([sc for _ids, sc in parts])


def _ranked(s: Any, q: wq.Query, matched: Sequence[int], k: int) -> list[tuple[int, float]]:
    """The best ``k`` of the ``matched`` documents by ``q``'s score, as (docnum, score),
    highest score first, then lowest docnum: what ``s.search(q, limit=k,
    filter=set(matched))`` returns (up to float rounding in sums, see grex.postings)."""
    with _block_cache():
        m = _matcher(s)
        wanted = np.array(sorted(set(matched)), dtype=np.int64)
        masks = []
        for seg in m.segments:
            lo, hi = np.searchsorted(wanted, [seg.offset, seg.offset + seg.doccount])
            mask = np.zeros(seg.doccount, dtype=bool)
            mask[wanted[lo:hi] - seg.offset] = True
            masks.append(mask)
        ids, scores = _scored(m, q, masks, wanted)
    pick = top(ids, scores, k)
    return list(zip(ids[pick].tolist(), scores[pick].tolist(), strict=True))


def _newest_first(docs: np.ndarray, dates: np.ndarray) -> np.ndarray:
    """``docs`` by (date, docnum), newest first."""
    return docs[np.lexsort((docs, dates[docs]))[::-1]]


def _message_hits(opened: _Open, parsed: ParsedQuery, limit: int, offset: int,
                  sort: str) -> tuple[int, list[SearchHit], np.ndarray]:
    s = opened.searcher
    m = _matcher(s, opened)
    masks, matched = _match(m, parsed.query)
    total = len(matched)
    want = offset + limit
    dates = opened.dates()
    page: list[tuple[int, float]]
    if sort == "relevance":
        sids, scores = _scored(m, parsed.scoring, masks, matched)
        pick = top(sids, scores, want)
        page = list(zip(sids[pick].tolist(), scores[pick].tolist(), strict=True))
        if len(page) < want and len(page) < total:  # no scored word: newest first
            rest = np.setdiff1d(matched, sids, assume_unique=True)
            page += [(d, 0.0) for d in _newest_first(rest, dates)[:want - len(page)].tolist()]
    else:
        ordered = _newest_first(matched, dates)
        if sort == "oldest":
            ordered = ordered[::-1]
        page = [(d, 0.0) for d in ordered[:want].tolist()]
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


def _names(stored: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key in ("from", "to", "cc"):
        for line in (stored.get(key) or "").split("\n"):
            name = line.split(" <")[0].strip() if " <" in line else line.strip()
            if name and name not in out:
                out.append(name)
    return out


def _thread_codes(opened: _Open, docnums: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(codes, names): the thread of each of ``docnums`` is ``names[code]``. A fresh
    reader looks up the matching documents only (about a microsecond each); a long-lived
    one (third search on it) numbers the whole thread-id column once (about 4 us per
    document of the index) and then only indexes that array."""
    if opened.thread_codes is None and opened.uses >= 3:
        with opened.lock:
            if opened.thread_codes is None:
                codes, names = factorize(list(opened.column("thread_id")))
                opened.thread_names = names
                opened.thread_codes = codes
    if opened.thread_codes is not None:
        return opened.thread_codes[docnums], opened.thread_names
    creader = opened.column("thread_id")
    return factorize([creader[d] for d in docnums.tolist()])


def _thread_hits(opened: _Open, parsed: ParsedQuery, limit: int, offset: int, sort: str,
                 conn: Any) -> tuple[int, list[SearchHit], np.ndarray]:
    s = opened.searcher
    m = _matcher(s, opened)
    masks, matched = _match(m, parsed.query)
    if not len(matched):
        return 0, [], matched
    codes, names = _thread_codes(opened, matched)
    total = len(np.unique(codes))
    want = offset + limit
    dates = opened.dates()
    best: dict[int, tuple[int, float]] = {}  # thread code -> (docnum, score) of its best
    order: list[int] = []
    if sort == "relevance":
        sids, scores = _scored(m, parsed.scoring, masks, matched)
        scodes = codes[np.searchsorted(matched, sids)]
        k = max(want * 3, 30)
        while len(sids):
            pick = top(sids, scores, k)
            best.clear()
            order.clear()
            for c, d, v in zip(scodes[pick].tolist(), sids[pick].tolist(),
                               scores[pick].tolist(), strict=True):
                if c not in best:
                    best[c] = (d, v)
                    order.append(c)
                    if len(order) >= want:
                        break
            if len(order) >= want or len(pick) < k or k >= len(sids):
                break
            k *= 4
        if len(order) < min(want, total):  # threads with no scored word: newest first
            rest = ~np.isin(codes, np.array(list(best), dtype=np.int64))
            tcodes, tdocs = _per_thread(codes[rest], matched[rest], dates, newest=True)
            for i in _newest_first(np.arange(len(tdocs)), dates[tdocs])[:want - len(order)]:
                c = int(tcodes[i])
                best[c] = (int(tdocs[i]), 0.0)
                order.append(c)
    else:
        newest = sort == "newest"
        tcodes, tdocs = _per_thread(codes, matched, dates, newest=newest)
        keys = dates[tdocs]
        if len(keys) > want:  # the page's threads, ties at its edge included
            edge = np.sort(keys)[::-1][want - 1] if newest else np.sort(keys)[want - 1]
            near = np.flatnonzero(keys >= edge if newest else keys <= edge)
        else:
            near = np.arange(len(keys))
        chosen = sorted(((int(keys[i]), names[int(tcodes[i])], int(tcodes[i]), int(tdocs[i]))
                         for i in near.tolist()), reverse=newest)
        for _key, _name, c, d in chosen[:want]:
            best[c] = (d, 0.0)
            order.append(c)
    page = order[offset:offset + limit] if limit else []
    ids = opened.column("id")
    summaries = _catalog_threads(conn, [names[c] for c in page])
    on_page = np.isin(codes, np.array(page, dtype=np.int64))
    page_codes, page_docs = codes[on_page], matched[on_page]
    hits = [_thread_hit(opened, parsed, names[c], page_docs[page_codes == c], best[c],
                        summaries.get(names[c]), ids, dates) for c in page]
    return total, hits, matched


def _per_thread(codes: np.ndarray, docs: np.ndarray, dates: np.ndarray, *, newest: bool
                ) -> tuple[np.ndarray, np.ndarray]:
    """(thread codes, the newest / oldest of ``docs`` in each thread, by (date, docnum))."""
    if not len(docs):
        return codes, docs
    o = np.lexsort((docs, dates[docs], codes))
    c = codes[o]
    edges = np.flatnonzero(np.r_[c[1:] != c[:-1], True] if newest
                           else np.r_[True, c[1:] != c[:-1]])
    return c[edges], docs[o][edges]


def _thread_hit(opened: _Open, parsed: ParsedQuery, tid: str, docs: np.ndarray,
                best: tuple[int, float], thread: Any, ids: Any, dates: np.ndarray
                ) -> SearchHit:
    s = opened.searcher
    ordered = docs[np.lexsort((docs, dates[docs]))].tolist()  # oldest first
    top_fields = s.stored_fields(best[0])
    snippet, spans = _snippet(top_fields, parsed)
    first = long_to_datetime(int(dates[ordered[0]])).replace(tzinfo=UTC)
    last = long_to_datetime(int(dates[ordered[-1]])).replace(tzinfo=UTC)
    subject, total_messages, participants = "", 0, []
    if thread is not None:  # the catalog's ThreadSummary
        subject = thread.subject or ""
        first, last = thread.first_date, thread.last_date
        total_messages = thread.message_count
        participants = [a.label for a in thread.participants]
    if not participants:  # no catalog at hand: the names on a few matching messages
        for d in [best[0], *ordered[:4]]:
            for n in _names(s.stored_fields(d) if d != best[0] else top_fields):
                if n not in participants:
                    participants.append(n)
    if not subject:
        subject = (s.stored_fields(ordered[0]) if ordered[0] != best[0] else top_fields).get(
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
        topics=tuple(top_fields.get("topics") or ()),
        total_messages=total_messages,
    )


def _catalog_threads(conn: Any, tids: list[str]) -> dict[str, Any]:
    """thread id -> the catalog's ThreadSummary, for the threads of a page (one query)."""
    if conn is None or not tids:
        return {}
    try:
        from grex import store  # noqa: PLC0415
        return store.thread_summaries(conn, tids)
    except Exception:  # noqa: BLE001 - the catalog may be ahead of / behind the index
        return {}


# ----------------------------------------------------------------------------------- facets


def _facet_column(opened: _Open) -> Any:
    """docnum -> facet values: the column, or for a long-lived reader the whole of it."""
    if opened.facet_values is None and opened.uses >= 3:
        with opened.lock:
            if opened.facet_values is None:
                opened.facet_values = list(opened.column("facets"))
    return opened.facet_values if opened.facet_values is not None else opened.column("facets")


@dataclass(frozen=True, slots=True)
class _FacetTable:
    """One facet's values for a run of documents: row i's value codes are
    ``codes[ptr[i]:ptr[i + 1]]``; a code's case-folded key and shown form."""

    ptr: np.ndarray
    codes: np.ndarray
    keys: list[str]
    shown: list[str]


def _facet_table(rows: Iterable[Any], name: str) -> _FacetTable:
    code_of: dict[str, int] = {}
    keys: list[str] = []
    shown: list[str] = []
    ptr = [0]
    codes: list[int] = []
    for values in rows:
        for v in (values.get(name, ()) or ()) if values else ():
            key = v.casefold()
            c = code_of.get(key)
            if c is None:
                c = code_of[key] = len(keys)
                keys.append(key)
                shown.append(v)
            codes.append(c)
        ptr.append(len(codes))
    return _FacetTable(np.array(ptr, dtype=np.int64), np.array(codes, dtype=np.int64), keys,
                       shown)


def _facets(opened: _Open, matched: np.ndarray, names: Sequence[str], *,
            by_thread: bool) -> dict[str, tuple[tuple[str, int], ...]]:
    """The FACET_TOP most frequent values of each facet among the matching threads (or
    messages), counting each thread once per value. A long-lived reader keeps each
    facet's table for the whole index; otherwise one is made for the matching documents."""
    if not len(matched):
        return {name: () for name in names}
    units = _thread_codes(opened, matched)[0] if by_thread else matched
    col = _facet_column(opened)
    out = {}
    for name in names:
        if opened.facet_values is not None:  # long-lived: rows are all documents
            with opened.lock:
                table = opened.facet_tables.get(name)
                if table is None:
                    table = opened.facet_tables[name] = _facet_table(col, name)
            rows = matched
        else:
            table = _facet_table((col[d] for d in matched.tolist()), name)
            rows = np.arange(len(matched))
        out[name] = _top_values(table, rows, units)
    return out


def _top_values(table: _FacetTable, rows: np.ndarray, units: np.ndarray
                ) -> tuple[tuple[str, int], ...]:
    starts, ends = table.ptr[rows], table.ptr[rows + 1]
    lens = ends - starts
    total = int(lens.sum())
    if not total:
        return ()
    # every (value, unit) of the selected rows, each pair once
    first = np.repeat(starts - (np.cumsum(lens) - lens), lens)
    values = table.codes[np.arange(total) + first]
    owners = np.repeat(units, lens)
    pairs = np.unique(values * (int(units.max()) + 1) + owners)
    counts = np.bincount(pairs // (int(units.max()) + 1), minlength=len(table.keys))
    found = np.flatnonzero(counts)
    if len(found) > FACET_TOP:
        cut = np.partition(counts[found], len(found) - FACET_TOP)[len(found) - FACET_TOP]
        found = found[counts[found] >= cut]
    ranked = sorted(found.tolist(), key=lambda c: (-int(counts[c]), table.keys[c]))
    return tuple((table.shown[c], int(counts[c])) for c in ranked[:FACET_TOP])


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
        with _block_cache():
            _masks, matched = _match(_matcher(opened.searcher, opened), parsed.query)
        codes, names = _thread_codes(opened, matched)
        return {names[c] for c in set(codes.tolist())}

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

