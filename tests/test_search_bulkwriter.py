"""grex's bulk index writer writes the index Whoosh's own writer writes, and a parallel
rebuild writes the index a one-process rebuild writes (same terms, postings, positions,
weights, block statistics, stored values and field lengths)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from whoosh import index as wix
from whoosh.writing import SegmentWriter

from grex import pipeline, store
from grex.config import load_config
from grex.search import index as gi
from grex.search.bulk import BulkWriter
from grex.search.codec import GrexCodec
from grex.search.query import parse_query
from grex.search.searcher import search
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


# ------------------------------------------------------ grex's codec (grex.search.codec)

def _write_with(path: Path, cls: Any, docs: list[dict[str, Any]], codec: Any,
                commits: int = 1) -> Path:
    """An index of ``docs`` in ``commits`` segments written by ``cls`` with ``codec``."""
    path.mkdir()
    ix = wix.create_in(str(path), gi.make_schema())
    size = -(-len(docs) // commits)
    for i in range(0, len(docs), size):
        w = cls(ix, limitmb=64, codec=codec)
        for doc in docs[i:i + size]:
            w.add_document(**doc)
        w.commit(merge=False)
    return path


def test_grex_codec_reads_back_what_w3_stores(kb: store.KB, tmp_path: Path) -> None:
    """Whoosh's own writer with grex's codec (its postings writer; blocks of 8 postings,
    so lists span many blocks) and the bulk writer with it: Whoosh's matchers read the
    ids, weights and value bytes W3 stores (positions re-encoded byte for byte)."""
    docs = _documents(kb)
    stock = _dump(_write(tmp_path / "w3", SegmentWriter, docs))
    for cls in (SegmentWriter, BulkWriter):
        path = _write_with(tmp_path / cls.__name__, cls, docs, GrexCodec(blocklimit=8))
        ix = wix.open_dir(str(path))
        assert all(isinstance(seg.codec(), GrexCodec) for seg in ix._segments())
        ix.close()
        assert _dump(path) == stock, cls.__name__
    assert max(len(v[5]) for v in stock["terms"].values()) > 8  # multi-block lists


def test_posting_arrays_are_what_the_matchers_read(kb: store.KB, tmp_path: Path) -> None:
    """grex.search.postings reads every posting list (W3 blocks and grex blocks) into the ids,
    weights, values and positions Whoosh's matcher walks one posting at a time."""
    from grex.search.postings import Segment, _LazyValues

    docs = _documents(kb)
    paths = [_write(tmp_path / "w3", SegmentWriter, docs),
             _write_with(tmp_path / "grex", BulkWriter, docs, GrexCodec(blocklimit=8))]
    for path in paths:
        ix = wix.open_dir(str(path))
        with ix.reader() as r:
            seg = Segment(r, 0)
            fmt = r.schema["body"].format
            checked = 0
            for fieldname, tbytes in r.all_terms():
                if fieldname not in ("body", "subject", "id", "flag", "date"):
                    continue
                got = seg.postings(fieldname, tbytes, {})
                assert got is not None
                m = r.postings(fieldname, tbytes)
                want = []
                while m.is_active():
                    want.append((m.id(), m.weight(), m.value()))
                    m.next()
                assert got.ids.tolist() == [w[0] for w in want], (fieldname, tbytes)
                assert got.weights.tolist() == [w[1] for w in want], (fieldname, tbytes)
                if fieldname in ("body", "subject"):
                    assert [got.values[i] for i in range(len(want))] == [w[2] for w in want]
                    if isinstance(got.values, _LazyValues):
                        which, places = got.values.positions()
                        assert list(zip(which.tolist(), places.tolist(), strict=True)) == [
                            (i, p) for i, w in enumerate(want)
                            for p in fmt.decode_positions(w[2])]
                checked += 1
        ix.close()
        assert checked > 3000


def test_segments_of_both_codecs_and_a_merge(kb: store.KB, tmp_path: Path) -> None:
    """An index holding W3 segments and grex segments is searched like Whoosh searches it;
    merging them all (optimize) writes grex blocks and the same postings."""
    from grex.search.opening import docset
    from grex.search.searcher import _ranked

    docs = _documents(kb)
    path = tmp_path / "mixed"
    path.mkdir()
    ix = wix.create_in(str(path), gi.make_schema())
    half = len(docs) // 2
    w = SegmentWriter(ix)
    for doc in docs[:half]:
        w.add_document(**doc)
    w.commit(merge=False)
    w = BulkWriter(ix, codec=GrexCodec(blocklimit=8))
    for doc in docs[half:]:
        w.add_document(**doc)
    w.commit(merge=False)
    before = _dump(path)
    queries = ["patch", "kernel driver", '"the message"', "patch -kernel", "fix*",
               "subject:patch OR from:joe"]

    def same_as_whoosh() -> None:
        ix = wix.open_dir(str(path))
        with ix.searcher() as s:
            for text in queries:
                pq = parse_query(text)
                assert docset(s, pq.query) == sorted(s.docs_for_query(pq.query)), text
                if pq.scoring is not None:
                    want = [h.docnum for h in s.search(pq.scoring, limit=None,
                                                       filter=set(docset(s, pq.query)))]
                    got = [d for d, _v in _ranked(s, pq.scoring, docset(s, pq.query),
                                                  len(want))]
                    assert sorted(got) == sorted(want), text
        ix.close()

    same_as_whoosh()
    ix = wix.open_dir(str(path))
    w = BulkWriter(ix, codec=GrexCodec(blocklimit=8))
    w.commit(optimize=True)
    ix = wix.open_dir(str(path))
    assert len(ix._segments()) == 1 and isinstance(ix._segments()[0].codec(), GrexCodec)
    ix.close()
    after = _dump(path)
    # (a merge re-adds field lengths from the length bytes, as Whoosh always does)
    assert {k: v for k, v in after.items() if k != "lengths"} == \
        {k: v for k, v in before.items() if k != "lengths"}
    same_as_whoosh()
