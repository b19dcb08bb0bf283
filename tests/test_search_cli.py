"""`grex search`, `grex related`, `grex reindex` as a user runs them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures_search import REPO, grex_process

pytestmark = pytest.mark.corpus


def test_thread_hits_in_json(notmuch_default_kb: Path, grex_cli: Any) -> None:
    res = grex_cli(notmuch_default_kb, "search", "--json", "maildir")
    assert res.exit_code == 0, res.stderr
    out = res.json()
    assert out["query"] == "maildir" and out["total"] == 5 and out["mode"] == "threads"
    hits = out["hits"]
    assert len(hits) == 5
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    for h in hits:
        assert {"thread_id", "subject", "score", "message_ids", "snippet", "first_date",
                "last_date", "participants", "topics"} <= set(h)
        assert h["message_ids"] and h["total_messages"] >= len(h["message_ids"])
        assert h["first_date"] <= h["last_date"]
    # the best thread's snippet marks the word searched for
    marked = [h["snippet"][a:b].lower() for h in hits for a, b in h["highlights"]]
    assert marked and all(m.startswith("maildir") for m in marked)


def test_limit_offset_and_sort(notmuch_default_kb: Path, grex_cli: Any) -> None:
    everything = grex_cli(notmuch_default_kb, "search", "--json", "--limit", "100",
                          "subject:PATCH").json()
    page = grex_cli(notmuch_default_kb, "search", "--json", "--limit", "3", "--offset", "2",
                    "subject:PATCH").json()
    assert page["total"] == everything["total"] == 12
    assert [h["thread_id"] for h in page["hits"]] == \
        [h["thread_id"] for h in everything["hits"][2:5]]
    newest = grex_cli(notmuch_default_kb, "search", "--json", "--messages", "--sort",
                      "newest", "--limit", "100", "subject:PATCH").json()["hits"]
    dates = [h["first_date"] for h in newest]
    assert dates == sorted(dates, reverse=True)
    oldest = grex_cli(notmuch_default_kb, "search", "--json", "--messages", "--sort",
                      "oldest", "--limit", "100", "subject:PATCH").json()["hits"]
    assert [h["first_date"] for h in oldest] == sorted(dates)


def test_facets(notmuch_default_kb: Path, grex_cli: Any) -> None:
    out = grex_cli(notmuch_default_kb, "search", "--json", "--facet", "from", "emacs").json()
    counts = {f["value"]: f["count"] for f in out["facets"]["from"]}
    assert counts["Carl Worth"] >= 2
    assert all(c <= out["total"] for c in counts.values())
    bad = grex_cli(notmuch_default_kb, "search", "--facet", "colour", "emacs")
    assert bad.exit_code == 2 and "unknown facet" in bad.stderr


def test_did_you_mean(notmuch_default_kb: Path, grex_cli: Any) -> None:
    out = grex_cli(notmuch_default_kb, "search", "--json", "maildri").json()
    assert out["total"] == 0 and out["suggestion"] == "maildir"
    text = grex_cli(notmuch_default_kb, "search", "from:cworth emacss")
    assert "Did you mean: from:cworth emacs" in text.stdout


def test_related_threads(notmuch_default_kb: Path, grex_cli: Any) -> None:
    seed = grex_cli(notmuch_default_kb, "search", "--json", "--limit", "1",
                    'subject:"Working with Maildir storage"').json()["hits"][0]
    out = grex_cli(notmuch_default_kb, "related", "--json", seed["thread_id"]).json()
    assert out["hits"] and seed["thread_id"] not in {h["thread_id"] for h in out["hits"]}
    missing = grex_cli(notmuch_default_kb, "related", "nosuchthread")
    assert missing.exit_code == 2 and "no thread" in missing.stderr


def test_text_output_has_no_markup_escaping(notmuch_default_kb: Path, grex_cli: Any) -> None:
    res = grex_cli(notmuch_default_kb, "search", "--limit", "2", '"inode order"')
    assert res.exit_code == 0
    assert "inode" in res.stdout.lower() and "&amp;" not in res.stdout and "<b>" not in res.stdout


def test_malformed_query_exits_2_with_a_caret(notmuch_default_kb: Path) -> None:
    done = grex_process("--kb", str(notmuch_default_kb), "search", "from:(alice OR bob")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert lines[0].startswith("Error: unbalanced '('")
    assert lines[1] == "  from:(alice OR bob" and lines[2] == "       ^"


def test_help_documents_the_query_language() -> None:
    done = grex_process("search", "--help")
    assert done.returncode == 0
    for token in ("date:2024-01-01..2024-03-31", "from:", "has:attachment", "NOT a", "-a",
                  "thread:", "id:", "topic:", "person:", "--messages", "--facet"):
        assert token in done.stdout, token


def test_search_path_imports_no_nlp(notmuch_default_kb: Path) -> None:
    code = (
        "import sys\n"
        "from grex.cli import main\n"
        "try:\n"
        f"    main(['--kb', {str(notmuch_default_kb)!r}, 'search', '--json', 'emacs'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('spacy', 'sklearn', 'thinc', 'torch'))\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    import subprocess

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert "HEAVY []" in done.stderr, done.stderr
    assert json.loads(done.stdout)["total"] == 5


def test_docset_equals_whoosh_matching(notmuch_default_kb: Path) -> None:
    """grex's set-based matching (thread grouping, facets) equals what Whoosh scores."""
    from grex.search.opening import docset, with_index
    from grex.search.query import parse_query

    queries = ["install AND NOT subject:PATCH", "emacs -subject:patch", "NOT maildir", "*",
               "maildir OR emacs", "(notmuch OR xapian) AND NOT from:cworth", "pat*",
               "date:2009-11-17..2009-11-17 -tag:attachment", '"inode order" OR freebsd']

    def check(opened: Any) -> None:
        s = opened.searcher
        for q in queries:
            pq = parse_query(q)
            scored = sorted(h.docnum for h in s.search(pq.query, limit=None))
            assert docset(s, pq.query) == scored, q

    with_index(notmuch_default_kb, check)


def test_matching_threads_equals_the_thread_hits(notmuch_default_kb: Path) -> None:
    from grex import store
    from grex.search.searcher import matching_threads, search

    kb = store.KB.open(notmuch_default_kb)
    for q in ("subject:PATCH", "maildir -emacs", "*"):
        full = search(kb, q, limit=1000)
        assert matching_threads(kb, q) == {h.thread_id for h in full.hits}
        assert len(full.hits) == full.total


def test_reindex_command(tmp_path: Path, notmuch_default_kb: Path, grex_cli: Any) -> None:
    before = grex_cli(notmuch_default_kb, "search", "--json", "--messages", "--limit", "100",
                      "*").json()
    res = grex_cli(notmuch_default_kb, "reindex", "--json")
    assert res.exit_code == 0, res.stderr
    report = res.json()
    assert report["rebuilt"] and report["documents"] == 52
    after = grex_cli(notmuch_default_kb, "search", "--json", "--messages", "--limit", "100",
                     "*").json()
    assert after["total"] == before["total"] == 52


def test_fast_path_matches_the_typer_command(notmuch_default_kb: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`grex search` skips Typer (fast_main); the Typer command must print the same."""
    from grex.cli import app
    from grex.cli.search import fast_main

    args = ["--kb", str(notmuch_default_kb), "search", "--json", "--limit", "5", "--facet",
            "from", "--sort=newest"]
    capsys.readouterr()
    assert fast_main([*args, "subject:PATCH", "-emacs"]) == 0  # -emacs: a negated word
    fast = json.loads(capsys.readouterr().out)
    app(args=[*args, "subject:PATCH -emacs"], prog_name="grex", standalone_mode=False)
    slow = json.loads(capsys.readouterr().out)
    assert fast == slow and fast["total"] > 5
    assert fast_main(["--kb", "x", "search", "--help"]) is None
    assert fast_main(["--kb", "x", "related", "abc"]) is None
    assert fast_main(["--kb", "x", "search", "--bogus", "q"]) is None
