"""The stage over a real KB of fixture mail: incremental, one person one entity, topics, who."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grex import store
from grex.config import load_config
from grex.extract import list_entities, list_topics, run_extract, thread_knowledge, who
from tests.fixtures_extract import (  # noqa: F401
    KERRY,
    LENA,
    add_fixture_mails,
    fixture_kb,
    nlp_model,
)

pytestmark = pytest.mark.nlp


def _run(kb, conn, nlp, **kw):  # type: ignore[no-untyped-def]
    return run_extract(kb, conn, load_config(kb.path, {}), nlp=nlp, **kw)


def test_incremental_second_run_computes_nothing(fixture_kb, nlp_model) -> None:  # noqa: F811
    kb, conn = fixture_kb
    first = _run(kb, conn, nlp_model)
    assert first.messages_computed == 10
    assert first.topics >= 2 and first.topics_refit
    second = _run(kb, conn, nlp_model)
    assert second.messages_computed == 0 and second.threads_updated == 0
    # a new thread is analysed alone and assigned to the existing topics without a refit
    add_fixture_mails(kb, conn, [dict(subject="Failover drill", sender=KERRY, to=LENA, body=(
        "Lena, the database failover drill is on Thursday; the replica will be promoted."))],
        offset=50)
    third = _run(kb, conn, nlp_model)
    assert third.messages_computed == 1 and not third.topics_refit
    tid = store.message_thread_id(conn, "m50@fixture.example")
    topics = thread_knowledge(conn, tid)["topics"]
    assert topics and abs(sum(t["weight"] for t in topics) - 1) < 0.01
    # --all recomputes everything
    assert _run(kb, conn, nlp_model, all=True).messages_computed == 11


def test_one_person_one_entity(fixture_kb, nlp_model) -> None:  # noqa: F811
    kb, conn = fixture_kb
    _run(kb, conn, nlp_model)
    tid = store.message_thread_id(conn, "m0@fixture.example")
    ents = thread_knowledge(conn, tid)["entities"]
    kerry = [e for e in ents if e["key"] == "person:kerry.mcguire@acme-widgets.com"]
    assert len(kerry) == 1
    assert {"Kerry", "Kerry McGuire"} <= set(kerry[0]["variants"])
    assert not [e for e in ents if e["label"] == "PERSON" and e["text"] == "Kerry"]
    people = {e.text for e in list_entities(conn, "PERSON")}
    assert {"Kerry McGuire", "Raj Patel", "Lena Fischer"} <= people
    assert ("DB-4211", "TICKET") in {(e["text"], e["label"]) for e in ents}


def test_keyphrases_and_topics_json(fixture_kb, nlp_model) -> None:  # noqa: F811
    kb, conn = fixture_kb
    _run(kb, conn, nlp_model)
    tid = store.message_thread_id(conn, "m0@fixture.example")
    k = thread_knowledge(conn, tid)
    assert 5 <= len(k["keyphrases"]) <= 10
    assert any("replication" in p.lower() or "failover" in p.lower() for p in k["keyphrases"])
    out = list_topics(conn)
    json.dumps(out)
    assert all(set(t) == {"id", "label", "terms", "threads"} for t in out)
    assigned = {x["thread_id"] for t in out for x in t["threads"]}
    assert assigned == {r[0] for r in conn.execute("SELECT thread_id FROM threads")}


@pytest.mark.parametrize("query, expert", [
    ("database failover replication", "kerry.mcguire@acme-widgets.com"),
    ("docker build cache", "raj.patel@acme-widgets.com"),
    ("office move lease", "lena.fischer@acme-widgets.com"),
])
def test_who_ranks_the_person_who_wrote_about_it(fixture_kb, nlp_model, query: str,  # noqa: F811
                                                 expert: str) -> None:
    kb, conn = fixture_kb
    _run(kb, conn, nlp_model)
    ranked = who(kb, conn, query)
    assert ranked and ranked[0].addr == expert


def test_quoted_text_does_not_make_an_expert(fixture_kb, nlp_model) -> None:  # noqa: F811
    kb, conn = fixture_kb
    _run(kb, conn, nlp_model)
    # Raj only quoted "reporting database"; Kerry wrote it
    ranked = [p.addr for p in who(kb, conn, "reporting database")]
    assert ranked[0] == "kerry.mcguire@acme-widgets.com"


def test_cli_analyze_plain_text_offsets(tmp_path: Path, nlp_model) -> None:  # noqa: F811
    from typer.testing import CliRunner

    from grex.cli import app

    text = "Hello team,\nKerry McGuire will meet Microsoft in Seattle; see OPS-42.\n"
    f = tmp_path / "note.txt"
    f.write_text(text, encoding="utf-8")
    res = CliRunner().invoke(app, ["--kb", str(tmp_path / "nokb"), "analyze", str(f), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert {"entities", "keyphrases"} <= set(out)
    for e in out["entities"]:
        assert text[e["start"]:e["end"]] == e["text"]
    assert ("OPS-42", "TICKET") in {(e["text"], e["label"]) for e in out["entities"]}
