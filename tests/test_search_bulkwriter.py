"""grex's bulk index writer writes the index Whoosh's own writer writes, and a parallel
rebuild writes the index a one-process rebuild writes (same terms, postings, positions,
weights, block statistics, stored values and field lengths)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from whoosh import index as wix
from whoosh.writing import SegmentWriter

from grex import index as gi
from grex import pipeline, store
from grex.config import load_config
from grex.index_bulk import BulkWriter
from grex.search import search
from tests.corpora import corpus

pytestmark = pytest.mark.corpus


@pytest.fixture(scope="module")
def kb(tmp_path_factory: pytest.TempPathFactory) -> store.KB:
    kb = store.KB.init(tmp_path_factory.mktemp("bulk") / "kb")
    conn = kb.connect()
    pipeline.import_paths(kb, conn, load_config(kb.path, {}),
                          [corpus("notmuch-lkml", "maildir")])
    conn.close()
    return kb


def _documents(kb: store.KB) -> list[dict[str, Any]]:
    """Every message's document, with knowledge fields filled from its own headers (so
    the person/org/place/keyword/topic fields are written too)."""
    conn = kb.connect()
    build = gi._DocBuilder(kb, conn, None)
    docs = []
    for i, msg in enumerate(store.iter_messages(conn)):
        words = (msg.subject or "").split()
        k = gi.Knowledge(persons=(msg.sender.name,) if msg.sender and msg.sender.name else (),
                         orgs=tuple(words[:2]), places=tuple(words[2:3]),
                         keyphrases=(" ".join(words[:3]),), topics=(f"topic {i % 7}",))
        doc = gi.message_document(msg, thread_id=build.rows[msg.message_id][0],
                                  knowledge=k, flags=("signed",) if i % 5 == 0 else ())
        gi.validate_document(doc)
        docs.append(doc)
    conn.close()
    assert len(docs) > 100
    return docs


def _dump(path: Path) -> dict[str, Any]:
    """Everything a search can read from an index, by document number."""
    ix = wix.open_dir(str(path))
    with ix.reader() as r:
        terms = {}
        for fieldname, tbytes in r.all_terms():
            ti = r.term_info(fieldname, tbytes)
            m = r.postings(fieldname, tbytes)
            postings = []
            while m.is_active():
                postings.append((m.id(), m.weight(), m.value()))
                m.next()
            terms[(fieldname, tbytes)] = (ti.weight(), ti.doc_frequency(), ti.min_length(),
                                          ti.max_length(), ti.max_weight(), postings)
        scorable = [n for n in r.schema.names() if r.schema[n].scorable]
        # a segment without any value in a field reads its length as 0, one with a length
        # column as None (a document that has no term in the field is never scored on it)
        docs = [(r.stored_fields(n), tuple(r.doc_field_length(n, f) or 0 for f in scorable))
                for n in range(r.doc_count_all())]
        lengths = {f: r.field_length(f) for f in scorable}
        columns = {f: list(r.column_reader(f)) for f in ("id", "thread_id", "date", "facets")}
    return {"terms": terms, "docs": docs, "lengths": lengths, "columns": columns}


def _write(path: Path, cls: Any, docs: list[dict[str, Any]], hold: int | None = None) -> Path:
    path.mkdir()
    ix = wix.create_in(str(path), gi.make_schema())
    w = cls(ix, limitmb=64)
    if hold is not None:
        w._limit_postings = hold  # force the spill into Whoosh's pool
    for doc in docs:
        w.add_document(**doc)
    w.commit()
    return path


def test_bulk_writer_writes_what_whoosh_writes(kb: store.KB, tmp_path: Path) -> None:
    docs = _documents(kb)
    stock = _dump(_write(tmp_path / "stock", SegmentWriter, docs))
    bulk = _dump(_write(tmp_path / "bulk", BulkWriter, docs))
    assert len(stock["terms"]) > 5000
    assert {f for f, _ in stock["terms"]} >= {"body", "subject", "person", "org", "topic",
                                              "keyword", "place", "id", "date", "flag"}
    # positions are really there: some term occurs more than once in a body
    assert any(len(gi.make_schema()["body"].format.decode_positions(p[2])) > 1
               for (f, _), v in stock["terms"].items() if f == "body" for p in v[5])
    assert bulk["terms"] == stock["terms"]
    assert bulk["docs"] == stock["docs"]
    assert bulk["lengths"] == stock["lengths"]
    assert bulk["columns"] == stock["columns"]


def test_bulk_writer_spilling_to_the_pool_writes_the_same(kb: store.KB, tmp_path: Path) -> None:
    docs = _documents(kb)
    stock = _dump(_write(tmp_path / "stock", SegmentWriter, docs))
    spilled = _dump(_write(tmp_path / "spilled", BulkWriter, docs, hold=2000))
    assert spilled == stock


def test_parallel_rebuild_equals_one_process_rebuild(kb: store.KB) -> None:
    conn = kb.connect()
    try:
        with kb.writer_lock(wait=True):
            one = gi.rebuild_index(kb, conn, procs=1)
            dump_one = _dump(gi.current_index_dir(kb.path))
            two = gi.rebuild_index(kb, conn, procs=2)
            dump_two = _dump(gi.current_index_dir(kb.path))
            # a small memory limit: a new segment whenever the held postings fill it
            small = gi.rebuild_index(kb, conn, procs=1, limitmb=1)
            dump_small = _dump(gi.current_index_dir(kb.path))
    finally:
        conn.close()
    assert one.documents == two.documents == small.documents > 100
    assert (one.segments, two.segments) == (1, 2)
    assert small.segments > 1
    assert dump_small["docs"] == dump_one["docs"]
    assert {k: v[5] for k, v in dump_small["terms"].items()} == \
        {k: v[5] for k, v in dump_one["terms"].items()}
    assert not list(gi.current_index_dir(kb.path).glob("part-*"))
    assert dump_two["docs"] == dump_one["docs"]
    assert dump_two["lengths"] == dump_one["lengths"]
    assert dump_two["columns"] == dump_one["columns"]
    # per-term statistics are per segment; postings (global doc numbers) are the same
    assert dump_two["terms"].keys() == dump_one["terms"].keys()
    for key, stats in dump_one["terms"].items():
        assert dump_two["terms"][key][1] == stats[1], key
        assert dump_two["terms"][key][5] == stats[5], key


def test_parallel_rebuild_with_a_thread_alive_uses_spawned_workers(kb: store.KB) -> None:
    # another thread alive: no fork; the worker is a fresh interpreter (spawn)
    import threading

    stop = threading.Event()
    t = threading.Thread(target=stop.wait, daemon=True)
    t.start()
    conn = kb.connect()
    try:
        assert gi._mp_context().get_start_method() == "spawn"
        with kb.writer_lock(wait=True):
            two = gi.rebuild_index(kb, conn, procs=2)
        total = conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    finally:
        stop.set()
        t.join()
        conn.close()
    assert two.documents == total and two.segments == 2
    hits = search(kb, "patch", messages=True, limit=5)
    assert hits.total > 0
