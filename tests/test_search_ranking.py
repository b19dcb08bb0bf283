"""Ranking over whole posting lists (grex.search.searcher._ranked, grex.search.postings)
gives Whoosh's scores and order: compared with Whoosh's own unlimited ranking (which scores every
document) on a real KB, for the query shapes it evaluates (unions, intersections, boosts,
phrases). Sums of more than two clauses are added in clause order where Whoosh adds them
as a binary tree, so scores are compared to 1e-12 and documents may only trade places
when their scores are equal to that precision."""

from __future__ import annotations

from pathlib import Path

import pytest
from whoosh import query as wq

from grex.search import opening as go
from grex.search import searcher as gs
from grex.search.query import parse_query

pytestmark = pytest.mark.corpus

QUERIES = [
    wq.Term("body", "maildir"),
    wq.Or([wq.Term("subject", "notmuch", boost=3.0), wq.Term("body", "notmuch")]),
    wq.And([wq.Or([wq.Term("subject", "patch", boost=3.0), wq.Term("body", "patch")]),
            wq.Or([wq.Term("body", "kernel"), wq.Term("quoted", "kernel", boost=0.3)])]),
    wq.Or([wq.Phrase("body", ["the", "message"]), wq.Term("subject", "messag", boost=3.0)]),
    wq.And([wq.Phrase("body", ["in", "the"]), wq.Term("body", "file")]),
    wq.Or([wq.Term("to", "kernel", boost=0.8), wq.Term("cc", "kernel", boost=0.6)]),
    parse_query("kernel driver").scoring,  # seven fields a word, two words
    parse_query('(patch OR fix) "the message"').scoring,
]


def _assert_same_ranking(got: list[tuple[int, float]], want: list[tuple[int, float]],
                         scores: dict[int, float]) -> None:
    assert len(got) == len(want)
    for (gd, gv), (wd, wv) in zip(got, want, strict=True):
        assert gv == pytest.approx(wv, rel=1e-12, abs=0)
        assert gd == wd or scores[gd] == pytest.approx(scores[wd], rel=1e-12, abs=0)


@pytest.mark.parametrize("q", QUERIES, ids=str)
def test_block_ranking_is_whooshs_ranking(q: wq.Query, notmuch_lkml_kb: Path) -> None:
    def check(opened: go._Open) -> None:
        s = opened.searcher
        matched = sorted(s.docs_for_query(q))
        assert matched, "the query should match something in notmuch-lkml"
        full = [(h.docnum, float(h.score)) for h in s.search(q, limit=None)]
        scores = dict(full)
        for k in (1, 5, 20, len(matched) + 5):
            _assert_same_ranking(gs._ranked(s, q, matched, k), full[:k], scores)
        # restricted to part of the matching set: Whoosh's filter
        half = matched[::2]
        want = [(h.docnum, float(h.score))
                for h in s.search(q, limit=None, filter=set(half))]
        _assert_same_ranking(gs._ranked(s, q, half, len(half)), want, scores)

    go.with_index(notmuch_lkml_kb, check)


def test_phrase_matching_set_is_whooshs(notmuch_lkml_kb: Path) -> None:
    def check(opened: go._Open) -> None:
        s = opened.searcher
        for text in ('"the message"', '"in the"', '"of the patch"', 'subject:"re patch"',
                     '"the the"'):
            q = parse_query(text).query
            assert go.docset(s, q) == sorted(s.docs_for_query(q)), text

    go.with_index(notmuch_lkml_kb, check)
