"""Snippets: the passage of a hit that shows why it matched."""

from __future__ import annotations

import functools
import re
from typing import Any

from grex.search.query import ParsedQuery
from grex.search.results import SNIPPET_CHARS
from grex.search.schema import TOKEN_PATTERN, fold, stem_term

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


