"""Facets over matching threads, and "did you mean" suggestions."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from grex.errors import QueryError
from grex.search.opening import (
    _facet_column,
    _facet_table,
    _FacetTable,
    _Open,
    _thread_codes,
    docset,
)
from grex.search.query import ParsedQuery, analyze, parse_query
from grex.search.results import FACET_TOP

# ----------------------------------------------------------------------------------- facets








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


