"""The index stage: incremental updates from the change feed, deletion after unsharing,
atomic rebuilds, the merge policy, and searches while another process writes."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from grex import ingest, pipeline, store
from grex.config import load_config
from grex.errors import IndexError_
from grex.search.index import rebuild_index, run_index
from grex.search.schema import SEGMENT_LIMIT
from grex.search.searcher import index_stats, iter_index_docs, search
from tests.fixtures_search import REPO, grex_process, write_mail


class Mail:
    """A KB plus a Maildir to deliver into, imported and indexed like `grex import` does."""

    def __init__(self, root: Path) -> None:
        self.kb = store.KB.init(root / "kb")
        self.conn = self.kb.connect()
        self.config = load_config(self.kb.path, {})
        self.maildir = root / "Maildir"

    def deliver(self, **kw: Any) -> tuple[str, Path]:
        return write_mail(self.maildir, **kw)

    def sync(self, *paths: Path) -> Any:
        pipeline.import_paths(self.kb, self.conn, self.config, list(paths) or [self.maildir])
        return run_index(self.kb, self.conn, self.config)

    def ids(self, query: str) -> set[str]:
        res = search(self.kb, query, messages=True, limit=1000, conn=self.conn)
        return {h.message_ids[0] for h in res.hits}


@pytest.fixture
def mail(tmp_path: Path) -> Mail:
    m = Mail(tmp_path)
    yield m
    m.conn.close()


def _doc_ids(kb: store.KB) -> Counter[str]:
    return Counter(d["id"] for d in iter_index_docs(kb))


def test_incremental_updates_follow_the_change_feed(mail: Mail) -> None:
    root, _ = mail.deliver(subject="Budget planning", body="The quarterly budget is due.")
    first = mail.sync()
    assert first.rebuilt and first.documents == 1
    assert mail.ids("budget") == {root}
    assert store.get_cursor(mail.conn, "index") == store.last_seq(mail.conn)

    # a reply: a new message, and its thread (which holds the root) changes
    reply, path = mail.deliver(subject="Re: Budget planning", body="Marketing needs more.",
                               in_reply_to=root)
    second = mail.sync(path)
    assert not second.rebuilt and second.indexed >= 1
    assert mail.ids("marketing") == {reply}
    assert mail.ids("budget") == {root, reply}
    # each id once, although the root came both as a thread member and unchanged
    docs = _doc_ids(mail.kb)
    assert set(docs.values()) == {1} and set(docs) == {root, reply}
    thread = store.message_thread_id(mail.conn, root)
    assert mail.ids(f"thread:{thread}") == {root, reply}

    # nothing changed: nothing to do
    third = run_index(mail.kb, mail.conn, mail.config)
    assert (third.indexed, third.deleted) == (0, 0)


def test_unshared_message_leaves_the_index(mail: Mail) -> None:
    keep, _ = mail.deliver(subject="Keep me", body="Falcon project status.")
    gone, _ = mail.deliver(subject="Private", body="Falcon salary details.")
    mail.sync()
    assert mail.ids("falcon") == {keep, gone}
    for loc in store.message_locations(mail.conn, gone):
        ingest.remove_location(mail.kb, mail.conn, gone, loc.source)
    report = run_index(mail.kb, mail.conn, mail.config)
    assert report.deleted == 1
    assert mail.ids("falcon") == {keep}
    assert mail.ids("salary") == set()
    assert mail.ids(f"id:{gone}") == set()
    assert mail.ids("NOT falcon") == set()
    assert set(_doc_ids(mail.kb)) == {keep}
    _same_docsets(mail.kb, ["falcon", "NOT falcon", "falcon -salary", "*", "fal*",
                            "date:2024..", "status OR salary"])


def _same_docsets(kb: store.KB, queries: list[str]) -> None:
    """grex's set-based matching equals Whoosh's own docs_for_query, less deleted documents
    (Whoosh's NOT matches deleted documents until a merge; grex's docset does not)."""
    from grex.search.opening import docset, with_index
    from grex.search.query import parse_query

    def check(opened: Any) -> None:
        s = opened.searcher
        for q in queries:
            pq = parse_query(q)
            r = s.reader()
            live = sorted(d for d in s.docs_for_query(pq.query) if not r.is_deleted(d))
            assert docset(s, pq.query) == live, q

    with_index(kb, check)


def test_attachment_names_and_has_attachment(mail: Mail) -> None:
    with_file, _ = mail.deliver(subject="Slides", body="See attached.",
                                attachment=("roadmap-2024.pdf", "application/pdf", b"%PDF-1.4"))
    without, _ = mail.deliver(subject="No slides", body="Nothing attached.")
    mail.sync()
    assert mail.ids("has:attachment") == {with_file}
    assert mail.ids("tag:attachment") == {with_file}
    assert mail.ids("attachment:roadmap") == {with_file}
    assert mail.ids("roadmap") == {with_file}
    assert mail.ids("mimetype:application/pdf") == {with_file}
    assert mail.ids("NOT has:attachment") == {without}


def test_dates_prefixes_and_people(mail: Mail) -> None:
    old, _ = mail.deliver(subject="Winter", body="Snow report.",
                          date="Tue, 02 Jan 2024 08:00:00 +0000",
                          sender="Ana Lopez <ana@corp.example>")
    new, _ = mail.deliver(subject="Summer", body="Sun report.",
                          date="Sat, 15 Jun 2024 08:00:00 +0000",
                          sender="Bo Chen <bo@lab.example>", to="Ana Lopez <ana@corp.example>")
    mail.sync()
    assert mail.ids("report date:2024-01-01..2024-01-31") == {old}
    assert mail.ids("date:2024-06..") == {new}
    assert mail.ids("date:..2024-05-31") == {old}
    assert mail.ids("date:2024-06-15") == {new}
    assert mail.ids("from:ana") == {old}
    assert mail.ids("to:ana") == {new}
    assert mail.ids("from:corp.example") == {old}
    assert mail.ids("person:ana") == {old, new}
    assert mail.ids("repor*") == {old, new}
    assert mail.ids("report -snow") == {new}
    res = search(mail.kb, "report", messages=True, sort="oldest")
    assert [h.message_ids[0] for h in res.hits] == [old, new]
    res = search(mail.kb, "report", messages=True, sort="newest", limit=1)
    assert [h.message_ids[0] for h in res.hits] == [new] and res.total == 2


def test_many_small_commits_keep_few_segments(mail: Mail) -> None:
    mail.deliver(subject="start", body="first")
    mail.sync()
    for i in range(SEGMENT_LIMIT + 3):
        _, path = mail.deliver(subject=f"round {i}", body=f"round number {i} text")
        mail.sync(path)
        assert index_stats(mail.kb)["segments"] <= SEGMENT_LIMIT
    assert index_stats(mail.kb)["documents"] == SEGMENT_LIMIT + 4
    assert len(mail.ids("round")) == SEGMENT_LIMIT + 3
    _same_docsets(mail.kb, ["round", "round -number", "NOT round", "roun*", "text OR first"])


def test_rebuild_swaps_generations_atomically(mail: Mail) -> None:
    mid, _ = mail.deliver(subject="Swap", body="Generation test.")
    mail.sync()
    link = mail.kb.path / "index"
    gen1 = os.path.realpath(link)
    before = search(mail.kb, "generation", conn=mail.conn)
    rebuild_index(mail.kb, mail.conn)
    gen2 = os.path.realpath(link)
    assert gen1 != gen2 and Path(gen1).is_dir()  # the previous one stays for open readers
    rebuild_index(mail.kb, mail.conn)
    gen3 = os.path.realpath(link)
    assert not Path(gen1).exists() and Path(gen2).is_dir() and gen3 not in (gen1, gen2)
    after = search(mail.kb, "generation", conn=mail.conn)
    assert [h.message_ids for h in after.hits] == [h.message_ids for h in before.hits] == [(mid,)]


def test_a_plain_index_directory_is_replaced(mail: Mail) -> None:
    mail.deliver(subject="Legacy", body="Old layout.")
    pipeline.import_paths(mail.kb, mail.conn, mail.config, [mail.maildir])
    (mail.kb.path / "index").mkdir()
    (mail.kb.path / "index" / "stale").write_text("x")
    with pytest.raises(IndexError_):
        search(mail.kb, "legacy")
    run_index(mail.kb, mail.conn, mail.config)
    assert (mail.kb.path / "index").is_symlink()
    assert len(mail.ids("legacy")) == 1


def test_missing_index_is_a_clear_error(mail: Mail) -> None:
    with pytest.raises(IndexError_, match="no search index"):
        search(mail.kb, "anything")


def _writer(kb_path: str, maildir: str, rounds: int, ready: Any) -> None:
    """Another process importing and indexing, one commit per message (like a sync)."""
    kb = store.KB.open(kb_path)
    conn = kb.connect()
    config = load_config(kb.path, {})
    ready.set()
    for i in range(rounds):
        _, path = write_mail(Path(maildir), subject=f"live {i}", body=f"streaming update {i}")
        with kb.writer_lock(wait=True, timeout=60):
            pipeline.import_paths(kb, conn, config, [path])
            run_index(kb, conn, config)
        if i == rounds // 2:
            with kb.writer_lock(wait=True, timeout=60):
                rebuild_index(kb, conn)
    conn.close()


@pytest.mark.slow
def test_search_while_another_process_writes(mail: Mail) -> None:
    import grex.search.opening as go

    mail.deliver(subject="live seed", body="streaming seed")
    mail.sync()
    rounds = 25
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_writer, args=(str(mail.kb.path), str(mail.maildir), rounds, ready))
    proc.start()
    ready.wait(30)
    seen: list[int] = []
    conn = mail.kb.connect(readonly=True)
    try:
        while proc.is_alive() or not seen:
            go._forget(mail.kb.path)  # a fresh open each time, as a new `grex search` would
            res = search(mail.kb, "streaming", messages=True, limit=5, conn=conn)
            seen.append(res.total)
            thread_view = search(mail.kb, "streaming", limit=3, conn=conn)
            assert thread_view.total >= 1
    finally:
        proc.join(120)
        conn.close()
    assert proc.exitcode == 0
    assert seen == sorted(seen), "a search saw fewer messages than an earlier one"
    assert len(seen) > 5, seen
    final = search(mail.kb, "streaming", messages=True, limit=0)
    assert final.total == rounds + 1
    assert set(_doc_ids(mail.kb).values()) == {1}


def test_index_is_derived_and_readable_without_the_catalog_lock(mail: Mail) -> None:
    mid, _ = mail.deliver(subject="Read only", body="Catalog opened read-only.")
    mail.sync()
    ro = mail.kb.connect(readonly=True)
    try:
        with mail.kb.writer_lock():
            res = search(mail.kb, "catalog", conn=ro)
        assert res.hits[0].message_ids == (mid,)
        assert res.hits[0].total_messages == 1
    finally:
        ro.close()
    _ = sqlite3


def test_merge_policy_merges_small_and_mostly_deleted_segments_only(tmp_path: Path) -> None:
    """Past SEGMENT_LIMIT the smallest segments are merged, never the large ones (Whoosh
    merges in Python: merging a 100k index would take minutes); a segment that is mostly
    deleted documents is rewritten."""
    from datetime import datetime

    from whoosh import index as wix

    from grex.search.bulk import BulkWriter
    from grex.search.index import _merge_policy
    from grex.search.schema import make_schema

    ix = wix.create_in(str(tmp_path), make_schema())
    n = 0

    def commit(count: int, **kw: Any) -> list[Any]:
        nonlocal n
        merged: list[Any] = []
        w = BulkWriter(ix)
        for _ in range(count):
            w.add_document(id=f"m{n}", thread_id=f"t{n}", body=f"word{n % 7} text",
                           date=datetime(2024, 1, 1))
            n += 1
        w.commit(mergetype=_merge_policy(merged), **kw)
        return merged

    for size in (400, 300, 200, 150, 120, 100, 90, 80):  # large enough for MERGE_SMALL
        w = BulkWriter(ix)
        for _ in range(size):
            w.add_document(id=f"m{n}", thread_id=f"t{n}", body="text",
                           date=datetime(2024, 1, 1))
            n += 1
        w.commit(merge=False)
    big = {seg.segid for seg in ix._segments() if seg.doc_count() >= 150}
    merged = commit(1)
    segs = ix._segments()
    assert len(segs) <= SEGMENT_LIMIT
    assert merged and all(seg.doc_count_all() < 150 for seg in merged)
    assert big <= {seg.segid for seg in segs}  # the large ones untouched
    assert sum(seg.doc_count() for seg in segs) == n
    # delete most of the largest segment: the next commit rewrites it
    largest = max(segs, key=lambda seg: seg.doc_count())
    offset = sum(seg.doc_count_all() for seg in segs[:segs.index(largest)])
    w = BulkWriter(ix)
    for d in range(offset, offset + largest.doc_count_all() * 2 // 3):
        w.delete_document(d)
    w.commit(merge=False)
    merged = commit(1)
    assert largest.segid in {seg.segid for seg in merged}
    with ix.searcher() as s:
        assert s.doc_count() == n - largest.doc_count_all() * 2 // 3


# an index written by grex before the one-package-per-stage layout: its TOC pickles the
# tokenizer and the codec under the old module paths
_OLD_LAYOUT = (
    "import sys; import grex.search.schema as s, grex.search.codec as c; "
    "sys.modules['grex.index'] = s; sys.modules['grex.codec'] = c; "
    "s.WordTokenizer.__module__ = 'grex.index'; c.GrexCodec.__module__ = 'grex.codec'; "
    "sys.argv.pop(0); from grex.launch import main; main()")


def test_an_index_written_before_the_layout_move_opens(tmp_path: Path) -> None:
    write_mail(tmp_path / "mail", subject="Zeppelin hangar", body="The zeppelin landed.")
    kb = tmp_path / "kb"
    env = {**os.environ, "PYTHONPATH": str(REPO), "GREX_SEARCH_SERVER": "0"}
    done = subprocess.run([sys.executable, "-c", _OLD_LAYOUT, "x", "--kb", str(kb), "-q",
                           "import", str(tmp_path / "mail")], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    toc = b"".join(p.read_bytes() for p in (kb / "index").resolve().glob("*.toc"))
    assert b"grex.index" in toc and b"grex.codec" in toc  # written as the old layout did
    for args in (["search", "--json", "zeppelin"], ["doctor"], ["status"]):
        done = grex_process("--kb", str(kb), *args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    assert '"total": 1' in grex_process("--kb", str(kb), "search", "--json", "zeppelin").stdout
