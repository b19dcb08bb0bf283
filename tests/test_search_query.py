"""The query language: parsing, translation to Whoosh, dates, errors (no index needed)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from whoosh import query as wq

from grex.errors import QueryError
from grex.search.query import (
    And,
    DateSpan,
    Not,
    Or,
    Word,
    format_error,
    parse_date_range,
    parse_query,
)
from grex.search.schema import name_analyzer, text_analyzer
from grex.search.snippets import snippet_for

NOW = datetime(2024, 6, 15, 12, 0, tzinfo=UTC)


def tree(q: str):  # type: ignore[no-untyped-def]
    return parse_query(q, now=NOW).tree


def terms(text: str, *, stem: bool = True) -> list[str]:
    analyzer = text_analyzer() if stem else name_analyzer()
    return [t.text for t in analyzer(text)]


# ----------------------------------------------------------------------------- analyzer


def test_porter2_stems_what_whooshs_porter_gets_wrong() -> None:
    assert terms("running runs run") == ["run", "run", "run"]
    assert terms("stopped stopping") == ["stop", "stop"]


def test_accents_fold_and_case_folds() -> None:
    assert terms("Accentué ACCENTUE accentue") == [terms("accentue")[0]] * 3
    assert terms("Müller", stem=False) == ["muller"]


def test_names_are_not_stemmed_and_addresses_split() -> None:
    assert terms("Keith Packard <keithp@keithp.com>", stem=False) == [
        "keith", "packard", "keithp", "keithp", "com"]


def test_no_stop_words_and_one_letter_words_kept() -> None:
    assert terms("Mac OS X and the") == ["mac", "os", "x", "and", "the"]


# ----------------------------------------------------------------------------- grammar


def test_juxtaposition_is_and() -> None:
    t = tree("budget report")
    assert isinstance(t, And) and [w.text for w in t.children] == ["budget", "report"]


def test_minus_negates_but_not_inside_a_word() -> None:
    t = tree("budget -draft")
    assert isinstance(t, And) and isinstance(t.children[1], Not)
    t = tree("pkg-config")
    assert isinstance(t, Word) and t.text == "pkg-config"


def test_a_not_b_is_and_not() -> None:
    t = tree("a NOT b")
    assert isinstance(t, And) and isinstance(t.children[1], Not)
    t = tree("install AND NOT subject:PATCH")
    assert isinstance(t, And) and isinstance(t.children[1], Not)
    assert t.children[1].child == Word("PATCH", 24, "subject")


def test_or_binds_looser_than_and() -> None:
    t = tree("a b OR c")
    assert isinstance(t, Or)
    assert isinstance(t.children[0], And) and t.children[1] == Word("c", 7)


def test_parentheses_group() -> None:
    t = tree("(a OR b) c")
    assert isinstance(t, And) and isinstance(t.children[0], Or)


def test_lowercase_operators_are_words() -> None:
    t = tree("rock and roll")
    assert isinstance(t, And) and [w.text for w in t.children] == ["rock", "and", "roll"]


def test_prefix_applies_to_a_group() -> None:
    q = parse_query("from:(alice OR bob)", now=NOW).query
    assert {(t.fieldname, t.text) for t in q.subqueries} == {("from", "alice"), ("from", "bob")}


def test_phrase_and_prefixed_phrase() -> None:
    t = tree('subject:"notmuch help"')
    assert t == Word("notmuch help", 8, "subject", phrase=True)
    q = parse_query('subject:"notmuch help"', now=NOW).query
    assert isinstance(q, wq.Phrase) and q.words == ["notmuch", "help"]


def test_word_that_splits_becomes_a_phrase() -> None:
    q = parse_query("from:cworth@cworth.org", now=NOW).query
    assert isinstance(q, wq.Phrase) and q.words == ["cworth", "cworth", "org"]


def test_bare_word_searches_subject_body_and_headers() -> None:
    q = parse_query("maildir", now=NOW).query
    fields = {s.fieldname for s in q.subqueries}
    assert fields == {"subject", "body", "quoted", "from", "to", "cc", "attachment"}


def test_new_text_outweighs_quoted_text() -> None:
    q = parse_query("maildir", now=NOW).query
    boost = {s.fieldname: s.boost for s in q.subqueries}
    assert boost["subject"] > boost["body"] > boost["quoted"]


def test_wildcards() -> None:
    q = parse_query("subject:maildi*", now=NOW).query
    assert isinstance(q, wq.Prefix) and q.text == "maildi"
    q = parse_query("subject:runn*", now=NOW).query  # "running" is indexed as "run"
    assert isinstance(q, wq.Prefix) and q.text == "run"
    q = parse_query("subject:m?ildir", now=NOW).query
    assert isinstance(q, wq.Wildcard)
    assert isinstance(parse_query("*", now=NOW).query, wq.Every)


def test_exact_prefixes() -> None:
    assert parse_query("id:<abc@example.com>", now=NOW).query == wq.Term("id", "abc@example.com")
    assert parse_query("thread:0123abcd", now=NOW).query == wq.Term("thread_id", "0123abcd")
    q = parse_query("thread:old", now=NOW, resolve_thread=lambda t: "new").query
    assert q == wq.Term("thread_id", "new")


def test_flags_labels_and_notmuch_tags() -> None:
    assert parse_query("has:attachment", now=NOW).query == wq.Term("flag", "attachment")
    q = parse_query("tag:attachment", now=NOW).query
    assert wq.Term("flag", "attachment") in q.subqueries
    assert parse_query("label:Projects", now=NOW).query == wq.Term("label", "projects")


def test_extraction_prefixes() -> None:
    assert parse_query("org:acme", now=NOW).query == wq.Term("org", "acme")
    assert parse_query("place:paris", now=NOW).query == wq.Term("place", "paris")
    assert parse_query("topic:budgets", now=NOW).query.text == "budget"
    person = parse_query("person:kerry", now=NOW).query
    assert {s.fieldname for s in person.subqueries} == {"person", "from", "to", "cc"}


# ------------------------------------------------------------------------------- dates


@pytest.mark.parametrize(("value", "start", "end"), [
    ("2009-11-17..2009-11-17", datetime(2009, 11, 17, tzinfo=UTC),
     datetime(2009, 11, 17, 23, 59, 59, 999999, tzinfo=UTC)),
    ("2009-11-17", datetime(2009, 11, 17, tzinfo=UTC),
     datetime(2009, 11, 17, 23, 59, 59, 999999, tzinfo=UTC)),
    ("2024-02", datetime(2024, 2, 1, tzinfo=UTC),
     datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)),
    ("2023..", datetime(2023, 1, 1, tzinfo=UTC), None),
    ("..2023", None, datetime(2023, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ("30d..", datetime(2024, 5, 16, 12, 0, tzinfo=UTC), None),
    ("2w..", datetime(2024, 6, 1, 12, 0, tzinfo=UTC), None),
    ("yesterday", datetime(2024, 6, 14, tzinfo=UTC),
     datetime(2024, 6, 14, 23, 59, 59, 999999, tzinfo=UTC)),
    ("20240101..20240131", datetime(2024, 1, 1, tzinfo=UTC),
     datetime(2024, 1, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ("2024-03-15T09:30..2024-03-15T10:00", datetime(2024, 3, 15, 9, 30, tzinfo=UTC),
     datetime(2024, 3, 15, 10, 0, 59, 999999, tzinfo=UTC)),
])
def test_date_ranges(value: str, start: datetime | None, end: datetime | None) -> None:
    assert parse_date_range(value, NOW) == (start, end)
    t = tree(f"date:{value}")
    assert isinstance(t, DateSpan) and (t.start, t.end) == (start, end)


def test_relative_months_and_years() -> None:
    assert parse_date_range("6m..", NOW)[0] == datetime(2023, 12, 15, 12, 0, tzinfo=UTC)
    assert parse_date_range("1y..", NOW)[0] == datetime(2023, 6, 15, 12, 0, tzinfo=UTC)


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(("query", "position", "says"), [
    ("(a OR b", 0, "unbalanced '('"),
    ("a OR b)", 6, "unbalanced ')'"),
    ('"abc', 0, "unterminated phrase"),
    ("budget AND", 7, "AND needs a search term"),
    ("OR b", 0, "OR needs a search term on its left"),
    ("a OR", 2, "OR needs a search term on its right"),
    ("form:alice", 0, "unknown prefix 'form:'"),
    ("date:2009-13-01", 5, "can't read the date"),
    ("date:2024-02-01..soon", 17, "can't read the date 'soon'"),
    ("date:2024-02..2024-01", 5, "ends before it starts"),
    ("date:..", 5, "needs at least one end"),
    ("from:", 0, "needs a value"),
    ("from: alice", 0, "needs a value"),
    ("has:pictures", 4, "has:pictures"),
    ("()", 0, "empty parentheses"),
    ("a NOT", 2, "NOT needs a search term"),
    ("", 0, "empty query"),
    ("!!! ???", 0, "no searchable words"),
])
def test_bad_queries_point_at_the_problem(query: str, position: int, says: str) -> None:
    with pytest.raises(QueryError) as info:
        parse_query(query, now=NOW)
    err = info.value
    assert says in str(err)
    assert err.position == position
    assert err.exit_code == 2
    if query:
        lines = format_error(err).splitlines()
        assert lines[1] == "  " + query
        assert lines[2] == "  " + " " * position + "^"


# ----------------------------------------------------------------------------- snippets


def test_snippet_marks_stemmed_matches_without_escaping() -> None:
    text = "Intro.\n\n  We were running the <build> & it failed;   running again fixed it."
    snippet, spans = snippet_for(text, frozenset({"run"}))
    assert "<build> & it" in snippet and "  " not in snippet
    assert [snippet[a:b] for a, b in spans] == ["running", "running"]


def test_snippet_window_and_ellipses() -> None:
    text = ("filler " * 100) + "the needle is here " + ("filler " * 100)
    snippet, spans = snippet_for(text, frozenset({"needl"}), width=80)
    assert snippet.startswith("… ") and snippet.endswith(" …")
    assert [snippet[a:b] for a, b in spans] == ["needle"]
    assert len(snippet) <= 90


def test_snippet_without_match_is_the_beginning() -> None:
    snippet, spans = snippet_for("Hello world. " * 40, frozenset({"absent"}), width=50)
    assert snippet.startswith("Hello world.") and spans == ()


def test_negation_is_never_a_bare_not() -> None:
    # a bare whoosh Not matches deleted (unshared) documents until a merge
    q = parse_query("-draft", now=NOW).query
    assert isinstance(q, wq.And) and isinstance(q.subqueries[0], wq.Every)
    assert isinstance(q.subqueries[1], wq.Not)
    q = parse_query("budget -draft NOT memo", now=NOW).query
    assert isinstance(q, wq.And) and [type(x) for x in q.subqueries] == [wq.Or, wq.Not, wq.Not]
    q = parse_query("a OR NOT b", now=NOW).query
    assert isinstance(q, wq.Or) and isinstance(q.subqueries[1].subqueries[1], wq.Not)


def test_snowball_english_stems_what_the_old_porter2_got_wrong() -> None:
    # Snowball's current English stemmer (PyStemmer); whoosh.lang.porter2 gave "ad"
    assert terms("added adding add") == ["add", "add", "add"]
    assert terms("evening") != terms("even")
