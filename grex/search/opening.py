"""Opening the index for reading: long-lived searchers, doc sets, thread codes."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from whoosh import index as wix
from whoosh import query as wq
from whoosh.scoring import BM25F

from grex.errors import IndexError_
from grex.search.index import current_index_dir, read_meta
from grex.search.postings import EMPTY, Matcher, Segment, factorize
from grex.search.results import T
from grex.search.schema import READ_RETRIES, SCHEMA_VERSION, open_index

# --------------------------------------------------------------------------------- opening


class _Open:
    """A cached open index + searcher for one generation directory, with the arrays its
    searches keep (segments' field lengths and dates; for a long-lived reader also the
    thread of every document and the facet values)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ix = open_index(str(path))
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
    over posting lists (grex.search.postings)."""
    return _matcher(searcher).docset(q).tolist()


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

