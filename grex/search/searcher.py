"""Search the index: threads (default) or messages, snippets, facets, suggestions, related.

Reading never takes a lock: a search opens the generation ``KB/index`` points at and sees
the last committed state; a commit or a rebuild swap racing the open shows up as an OSError
and the open+search is retried (whoosh re-reads its table of contents without retrying).

Matching and ranking run over posting lists read as numpy arrays (grex.search.postings); this
module groups the matching messages into threads and builds the hits.

This module is on the search path: it imports Whoosh, numpy and grex's own light modules
only (never spaCy or scikit-learn).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from whoosh import query as wq
from whoosh.util.times import long_to_datetime

from grex.errors import NotFound, QueryError
from grex.search.facets import _facets, _suggestion
from grex.search.index import read_meta
from grex.search.opening import _block_cache, _matcher, _Open, _thread_codes, with_index
from grex.search.postings import EMPTY, Matcher, Unsupported, top
from grex.search.query import ParsedQuery, parse_query
from grex.search.results import SORTS, SUGGEST_BELOW, SearchHit, SearchResult
from grex.search.schema import FACETS
from grex.search.snippets import _snippet

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
    query ``q`` scores (BM25F over posting lists, grex.search.postings). Dates, labels, flags and
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
    filter=set(matched))`` returns (up to float rounding in sums, see grex.search.postings)."""
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
            raise NotFound(f"no thread {thread_id!r} in the index",
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



