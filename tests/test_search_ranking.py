"""Ranking a posting block at a time (grex.search._bulk_ranked) gives Whoosh's scores and
order: compared with Whoosh's own unlimited ranking (which scores every document) on a
real KB, for the matcher shapes it evaluates (unions, intersections, boosts, phrases)."""

from __future__ import annotations

from pathlib import Path

import pytest
from whoosh import query as wq

from grex import search as gs
from grex.query import parse_query

pytestmark = pytest.mark.corpus

# Two-clause ORs: Whoosh builds a tree of union matchers for them at any index size (for
# more clauses on a small index it preloads an array instead; _bulk_ranked then declines).
QUERIES = [
    wq.Term("body", "maildir"),
    wq.Or([wq.Term("subject", "notmuch", boost=3.0), wq.Term("body", "notmuch")]),
    wq.And([wq.Or([wq.Term("subject", "patch", boost=3.0), wq.Term("body", "patch")]),
            wq.Or([wq.Term("body", "kernel"), wq.Term("quoted", "kernel", boost=0.3)])]),
    wq.Or([wq.Phrase("body", ["the", "message"]), wq.Term("subject", "messag", boost=3.0)]),
    wq.And([wq.Phrase("body", ["in", "the"]), wq.Term("body", "file")]),
    wq.Or([wq.Term("to", "kernel", boost=0.8), wq.Term("cc", "kernel", boost=0.6)]),
]


@pytest.mark.parametrize("q", QUERIES, ids=str)
def test_block_ranking_is_whooshs_ranking(q: wq.Query, notmuch_lkml_kb: Path) -> None:
    def check(opened: gs._Open) -> None:
        s = opened.searcher
        matched = sorted(s.docs_for_query(q))
        assert matched, "the query should match something in notmuch-lkml"
        full = [(h.docnum, float(h.score)) for h in s.search(q, limit=None)]
        for k in (1, 5, 20, len(matched) + 5):
            with gs._block_cache():
                got = gs._bulk_ranked(s, q, matched, k)  # raises if it can't
            assert got == full[:k]
        # restricted to part of the matching set: Whoosh's filter
        half = matched[::2]
        want = [(h.docnum, float(h.score))
                for h in s.search(q, limit=None, filter=set(half))]
        assert gs._bulk_ranked(s, q, half, len(half)) == want

    gs.with_index(notmuch_lkml_kb, check)


def test_phrase_matching_set_is_whooshs(notmuch_lkml_kb: Path) -> None:
    def check(opened: gs._Open) -> None:
        s = opened.searcher
        for text in ('"the message"', '"in the"', '"of the patch"', 'subject:"re patch"',
                     '"the the"'):
            q = parse_query(text).query
            with gs._block_cache():
                assert gs.docset(s, q) == sorted(s.docs_for_query(q)), text

    gs.with_index(notmuch_lkml_kb, check)
