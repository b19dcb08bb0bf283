"""The stage over a real KB of fixture mail: incremental, one person one entity, topics, who."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grex import ingest, store
from grex.config import load_config
from grex.extract import (
    list_entities,
    list_people,
    list_topics,
    run_extract,
    thread_knowledge,
    who,
)
from tests.fixtures_extract import KERRY, LENA, add_fixture_mails

pytestmark = pytest.mark.nlp


def _run(kb, conn, nlp, **kw):  # type: ignore[no-untyped-def]
    return run_extract(kb, conn, load_config(kb.path, {}), nlp=nlp, **kw)


def test_incremental_second_run_computes_nothing(fixture_kb, nlp_model) -> None:
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


def test_first_run_after_a_pruned_feed_sees_every_message(fixture_kb, nlp_model) -> None:
    """Extraction that never ran (spaCy was missing, say) starts from the whole catalog:
    the feed may have been pruned by the stages that did run."""
    kb, conn = fixture_kb
    with store.transaction(conn):
        store.set_cursor(conn, "index", store.last_seq(conn))
    assert store.prune_changes(conn) > 0
    assert store.changes_since(conn, "extract")[0] == []
    first = _run(kb, conn, nlp_model)
    assert first.messages_computed == 10 and first.topics >= 2
    assert _run(kb, conn, nlp_model).messages_computed == 0


def test_changed_thread_knowledge_is_announced_to_the_index(fixture_kb, nlp_model) -> None:
    """When a thread's entities change without a new message (`extract --all` after a model
    change), the index and the site hear of it through the change feed (the refit that
    --all does re-announces every thread)."""
    kb, conn = fixture_kb
    _run(kb, conn, nlp_model)
    tid = store.message_thread_id(conn, "m0@fixture.example")
    with store.transaction(conn):
        store.set_cursor(conn, "index", store.last_seq(conn))
        # what an older model would have left: this thread's aggregate differs
        conn.execute("DELETE FROM extract_thread_entities WHERE thread_id = ?", (tid,))
    assert _run(kb, conn, nlp_model).messages_computed == 0
    assert store.changes_since(conn, "index")[0] == []  # nothing new, nothing announced
    _run(kb, conn, nlp_model, all=True)
    announced = {(c.kind, c.key, c.op) for c in store.changes_since(conn, "index")[0]}
    assert ("thread", tid, "upsert") in announced
    assert thread_knowledge(conn, tid)["entities"]


def test_one_person_one_entity(fixture_kb, nlp_model) -> None:
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


def test_keyphrases_and_topics_json(fixture_kb, nlp_model) -> None:
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
def test_who_ranks_the_person_who_wrote_about_it(fixture_kb, nlp_model, query: str,
                                                 expert: str) -> None:
    kb, conn = fixture_kb
    _run(kb, conn, nlp_model)
    ranked = who(kb, conn, query)
    assert ranked and ranked[0].addr == expert


def test_quoted_text_does_not_make_an_expert(fixture_kb, nlp_model) -> None:
    kb, conn = fixture_kb
    _run(kb, conn, nlp_model)
    # Raj only quoted "reporting database"; Kerry wrote it
    ranked = [p.addr for p in who(kb, conn, "reporting database")]
    assert ranked[0] == "kerry.mcguire@acme-widgets.com"
    people = {p["addr"]: p for p in list_people(conn)}
    kerry = people["kerry.mcguire@acme-widgets.com"]
    assert kerry["messages"] == 3 and kerry["threads"] == 5 and kerry["topics"]
    # the words counted are the new text only: Raj's reply quotes Kerry but counts less
    raj_words = conn.execute("SELECT words FROM extract_messages WHERE message_id = ?",
                             ("m1@fixture.example",)).fetchone()[0]
    assert raj_words < 30


def test_cli_analyze_plain_text_offsets(tmp_path: Path, nlp_model) -> None:
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


def test_email_address_resolves_to_the_person(fixture_kb, nlp_model) -> None:
    kb, conn = fixture_kb
    _run(kb, conn, nlp_model)
    tid = store.message_thread_id(conn, "m0@fixture.example")
    ents = thread_knowledge(conn, tid)["entities"]
    kerry = next(e for e in ents if e["key"] == "person:kerry.mcguire@acme-widgets.com")
    assert "kerry.mcguire@acme-widgets.com" in kerry["variants"]
    assert not [e for e in ents if e["label"] == "EMAIL"]


def test_a_crash_mid_run_loses_and_doubles_nothing(fixture_kb, nlp_model,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import grex.extract.analyze as analyze_mod
    import grex.extract.stage as stage

    kb, conn = fixture_kb
    monkeypatch.setattr(stage, "CHUNK", 4)
    real = analyze_mod.analyze_texts
    calls = {"n": 0}

    def failing(*args, **kw):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # killed while the second chunk is analysed
        return real(*args, **kw)

    monkeypatch.setattr(analyze_mod, "analyze_texts", failing)
    with pytest.raises(KeyboardInterrupt):
        _run(kb, conn, nlp_model)
    assert conn.execute("SELECT COUNT(*) FROM extract_messages").fetchone()[0] == 4
    assert store.get_cursor(conn, "extract") == 0  # the cursor moves only at the end
    monkeypatch.setattr(analyze_mod, "analyze_texts", real)
    again = _run(kb, conn, nlp_model)
    assert again.messages_computed == 6 and again.messages_unchanged == 4
    assert conn.execute("SELECT COUNT(*) FROM extract_messages").fetchone()[0] == 10
    assert _run(kb, conn, nlp_model).messages_computed == 0


def test_a_removed_message_leaves_the_results(fixture_kb, nlp_model) -> None:
    kb, conn = fixture_kb
    _run(kb, conn, nlp_model)
    # the office-move thread (m6, m7) disappears: Lena wrote nothing else
    for mid in ("m7@fixture.example", "m6@fixture.example"):
        src = conn.execute("SELECT source FROM locations WHERE message_id = ?",
                           (mid,)).fetchone()[0]
        ingest.remove_location(kb, conn, mid, src)
    report = _run(kb, conn, nlp_model)
    assert report.messages_deleted == 2
    assert conn.execute("SELECT COUNT(*) FROM extract_messages").fetchone()[0] == 8
    assert "Allianz" not in {e.text for e in list_entities(conn)}
    assert who(kb, conn, "office move lease") == []  # nobody else wrote about it
    assert conn.execute("SELECT messages FROM extract_people WHERE addr = ?",
                        ("lena.fischer@acme-widgets.com",)).fetchone()[0] == 1


def test_cli_commands_json(fixture_kb, nlp_model) -> None:
    from typer.testing import CliRunner

    from grex.cli import app

    kb, conn = fixture_kb
    runner = CliRunner()
    base = ["--kb", str(kb.path)]
    res = runner.invoke(app, [*base, "extract", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["messages_computed"] == 10
    topics = json.loads(runner.invoke(app, [*base, "topics", "--json"]).stdout)
    assert topics and {"id", "label", "terms", "threads"} == set(topics[0])
    people = json.loads(runner.invoke(app, [*base, "entities", "--type", "PERSON",
                                            "--json"]).stdout)
    assert {"Kerry McGuire", "Raj Patel", "Lena Fischer"} <= {p["text"] for p in people}
    ranked = json.loads(runner.invoke(app, [*base, "who", "docker build cache",
                                            "--json"]).stdout)
    assert ranked[0]["addr"] == "raj.patel@acme-widgets.com"
    assert {w["addr"] for w in ranked[0]["works_with"]} == {"kerry.mcguire@acme-widgets.com",
                                                            "lena.fischer@acme-widgets.com"}
    refit = runner.invoke(app, [*base, "topics", "--refit", "--json"])
    assert refit.exit_code == 0 and json.loads(refit.stdout)


def test_a_text_spacy_cannot_handle_is_recorded_not_fatal(fixture_kb, nlp_model,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import grex.extract.analyze as analyze_mod
    from grex.errors import NLPError

    kb, conn = fixture_kb
    add_fixture_mails(kb, conn, [dict(subject="Broken", sender=KERRY, to=LENA,
                                      body="POISON text that the model chokes on")], offset=70)
    real = analyze_mod.analyze_texts

    def picky(nlp, items, **kw):  # type: ignore[no-untyped-def]
        if any("POISON" in text for text, _ in items):
            raise NLPError("spaCy failed on a batch")
        return real(nlp, items, **kw)

    monkeypatch.setattr(analyze_mod, "analyze_texts", picky)
    report = _run(kb, conn, nlp_model)
    assert report.messages_computed == 11
    assert len(report.errors) == 1 and "m70@fixture.example" in report.errors[0]
    assert conn.execute("SELECT COUNT(*) FROM extract_messages").fetchone()[0] == 11


def test_topics_are_refitted_once_the_kb_has_grown(fixture_kb, nlp_model) -> None:
    kb, conn = fixture_kb
    assert _run(kb, conn, nlp_model).topics_refit
    subjects = ["database replication", "docker build", "office lease"]
    add_fixture_mails(kb, conn, [
        dict(subject=f"{subjects[i % 3]} note {i}", sender=KERRY, to=LENA,
             body=f"Short note {i} about the {subjects[i % 3]} work this week.")
        for i in range(21)], offset=100)
    report = _run(kb, conn, nlp_model)
    assert report.messages_computed == 21 and report.topics_refit
    assert _run(kb, conn, nlp_model).topics_refit is False


def test_stop_between_chunks_keeps_work_and_the_next_run_finishes(
        fixture_kb, nlp_model, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A SIGTERM during a sync asks extraction to stop: it stops between chunks, keeps
    what it analysed, leaves its cursor, and the next run does only the rest."""
    from grex.extract import stage

    kb, conn = fixture_kb
    monkeypatch.setattr(stage, "CHUNK", 3)
    asked = []

    def should_stop() -> bool:
        asked.append(1)
        return len(asked) >= 2  # after two chunks

    cursor = store.get_cursor(conn, "extract")
    first = run_extract(kb, conn, load_config(kb.path, {}), nlp=nlp_model,
                        should_stop=should_stop)
    assert first.stopped and first.messages_computed == 6
    assert "stopped after 6" in first.summary()
    assert store.get_cursor(conn, "extract") == cursor  # nothing skipped next time
    rest = _run(kb, conn, nlp_model)
    assert not rest.stopped and (rest.messages_computed, rest.messages_unchanged) == (4, 6)
    assert rest.topics >= 2
    assert _run(kb, conn, nlp_model).messages_computed == 0
