"""The KB on disk: durable, idempotent, consistent after a kill, readable by notmuch."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grex import ingest, store
from grex.errors import KBLocked
from grex.ingest import importer
from grex.ingest.parse import parse_message
from grex.models import Location, RawMessage
from tests.corpora import corpus
from tests.fixtures_core import Mailbox, build_mail


def test_raw_store_is_a_maildir_of_content_named_files(kb, conn, mailbox: Mailbox) -> None:  # type: ignore[no-untyped-def]
    mid = mailbox.deliver(subject="hello")
    importer.import_messages(kb, conn, importer.scan([mailbox.path]))
    files = list((kb.raw_dir / "cur").iterdir())
    assert len(files) == 1 and files[0].name.endswith(":2,")
    assert parse_message(files[0].read_bytes()).message_id == mid
    assert not list((kb.raw_dir / "tmp").iterdir())


def test_duplicate_copies_are_one_message_with_every_location(kb, conn, mailbox: Mailbox) -> None:  # type: ignore[no-untyped-def]
    _, data = build_mail(subject="dup", message_id="dup@test.example")
    mailbox.deliver_raw(data, "a:2,")
    mailbox.deliver_raw(data + b"\nextra trailer\n", "b:2,")  # same id, other bytes
    report = importer.import_messages(kb, conn, importer.scan([mailbox.path]))
    assert (report.added, report.duplicates) == (1, 1)
    assert len(store.message_locations(conn, "dup@test.example")) == 2
    assert len(list((kb.raw_dir / "cur").iterdir())) == 1


def test_removing_the_last_location_removes_the_message(kb, conn, mailbox: Mailbox) -> None:  # type: ignore[no-untyped-def]
    root = mailbox.deliver(subject="root")
    reply = mailbox.deliver(subject="Re: root", in_reply_to=root, references=[root])
    importer.import_messages(kb, conn, importer.scan([mailbox.path]))
    tid = store.message_thread_id(conn, root)
    locs = store.message_locations(conn, reply)
    seq = store.last_seq(conn)
    assert ingest.remove_location(kb, conn, reply, locs[0].source)
    assert store.get_message(conn, reply) is None
    t = store.get_thread(conn, tid)
    assert t is not None and t.message_ids == (root,)
    changes, _ = store.changes_since(conn, "test")
    assert any(c.key == reply and c.op == "delete" for c in changes if c.seq > seq)
    assert len(list((kb.raw_dir / "cur").iterdir())) == 1


def test_change_feed_and_cursors(kb, conn, mailbox: Mailbox) -> None:  # type: ignore[no-untyped-def]
    mailbox.deliver(subject="one")
    importer.import_messages(kb, conn, importer.scan([mailbox.path]))
    changes, end = store.changes_since(conn, "index")
    assert {c.kind for c in changes} == {"message", "thread"}
    store.set_cursor(conn, "index", end)
    assert store.changes_since(conn, "index")[0] == []
    mailbox.deliver(subject="two")
    importer.import_messages(kb, conn, importer.scan([mailbox.path]))
    assert len([c for c in store.changes_since(conn, "index")[0] if c.kind == "message"]) == 1


def test_pruned_feed_keeps_what_a_stage_has_not_seen(kb, conn, mailbox: Mailbox) -> None:  # type: ignore[no-untyped-def]
    assert store.prune_changes(conn) == 0  # no stage ever ran: keep everything
    mailbox.deliver(subject="one")
    mailbox.deliver(subject="two")
    importer.import_messages(kb, conn, importer.scan([mailbox.path]))
    end = store.last_seq(conn)
    assert end >= 4
    store.set_cursor(conn, "index", end)
    store.set_cursor(conn, "export", end - 1)  # one change behind
    assert store.prune_changes(conn) == end - 1
    behind, _ = store.changes_since(conn, "export")
    assert [c.seq for c in behind] == [end]
    store.set_cursor(conn, "export", end)
    assert store.prune_changes(conn) == 1
    assert conn.execute("SELECT COUNT(*) FROM changes").fetchone()[0] == 0
    assert store.last_seq(conn) == end  # never goes back: cursors stay meaningful
    mailbox.deliver(subject="three")
    importer.import_messages(kb, conn, importer.scan([mailbox.path]))
    new = [c for c in store.changes_since(conn, "index")[0] if c.kind == "message"]
    assert len(new) == 1 and new[0].seq > end
    assert not store.has_cursor(conn, "extract") and store.has_cursor(conn, "index")
    # a removed message keeps its last 'delete' (doctor tells its leftover raw file from
    # a never-recorded one by it); everything else consumed goes
    gone = new[0].key
    loc = store.message_locations(conn, gone)[0]
    assert ingest.remove_location(kb, conn, gone, loc.source)
    for name in ("index", "export"):
        store.set_cursor(conn, name, store.last_seq(conn))
    assert store.prune_changes(conn) > 0
    left = conn.execute("SELECT kind, key, op FROM changes").fetchall()
    assert [tuple(r) for r in left] == [("message", gone, "delete")]
    assert store.prune_changes(conn) == 0


def test_broken_message_is_quarantined_not_fatal(kb, conn, mailbox: Mailbox) -> None:  # type: ignore[no-untyped-def]
    mailbox.deliver(subject="good")
    mailbox.deliver_raw(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 64, "outlook.msg")
    mailbox.deliver_raw(b"", "empty:2,")
    report = importer.import_messages(kb, conn, importer.scan([mailbox.path]))
    assert report.added == 1 and len(report.quarantined) == 2
    assert {q.reason for q in store.list_quarantine(conn)} == {
        "empty message", "an Outlook .msg (OLE2) file, not an RFC 5322 message"}
    assert len(list(kb.quarantine_dir.iterdir())) == 2


def test_writer_lock_is_exclusive(kb) -> None:  # type: ignore[no-untyped-def]
    with kb.writer_lock(command="test"):
        assert kb.is_locked()
        assert kb.lock_holder()["pid"] == os.getpid()
        code = subprocess.run(
            [sys.executable, "-c", "import sys; from grex import store; "
             f"kb = store.KB.open({str(kb.path)!r})\n"
             "try:\n    kb.writer_lock().__enter__()\nexcept Exception as e:\n"
             "    print(type(e).__name__); sys.exit(e.exit_code)"],
            capture_output=True, text=True, timeout=60)
        assert code.returncode == KBLocked.exit_code and "KBLocked" in code.stdout
    assert not kb.is_locked() and kb.lock_holder() is None


def test_orphan_raw_file_from_a_crash_is_adopted(kb, conn, mailbox: Mailbox) -> None:  # type: ignore[no-untyped-def]
    # the crash window: raw file durable, catalog row never committed
    mid, data = build_mail(subject="orphan")
    m = parse_message(data)
    store.write_raw(kb, data, m.content_hash)
    mailbox.deliver_raw(data)
    report = importer.import_messages(kb, conn, importer.scan([mailbox.path]))
    assert report.added == 1 and store.get_message(conn, mid) is not None
    assert len(list((kb.raw_dir / "cur").iterdir())) == 1


def test_add_messages_is_atomic_per_batch(kb, conn) -> None:  # type: ignore[no-untyped-def]
    mid, data = build_mail(subject="x")
    raw = RawMessage(data, Location("file:/x"))
    ingest.add_messages(kb, conn, [(raw, parse_message(data))])
    res = ingest.add_messages(kb, conn, [(raw, parse_message(data))])
    assert res.added == () and res.unchanged == 1
    assert store.counts(conn)["messages"] == 1


@pytest.mark.corpus
@pytest.mark.slow
def test_sigkill_during_import_then_rerun_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    src = corpus("20news-bydate-train", "20news-bydate-train", "sci.space")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    reference = tmp_path / "ref"
    subprocess.run([sys.executable, "-m", "grex", "--kb", str(reference), "import", "--no-later",
                    str(src)], check=True, capture_output=True, timeout=600, env=env)
    killed = tmp_path / "killed"
    interrupted = 0
    for at_least in (100, 300):  # kill once early and once later in the import
        p = subprocess.Popen([sys.executable, "-m", "grex", "--kb", str(killed), "import",
                              "--no-later", str(src)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=env)
        raw = killed / "raw" / "cur"
        deadline = time.monotonic() + 120
        while p.poll() is None and time.monotonic() < deadline:
            if raw.is_dir() and sum(1 for _ in raw.iterdir()) >= at_least:
                break
            time.sleep(0.005)
        p.send_signal(signal.SIGKILL)
        interrupted += p.wait() == -signal.SIGKILL
    assert interrupted >= 1, "the import finished before it could be killed"
    subprocess.run([sys.executable, "-m", "grex", "--kb", str(killed), "import", "--no-later",
                    str(src)], check=True, capture_output=True, timeout=600, env=env)

    def snapshot(path: Path) -> tuple[set[str], set[tuple[str, ...]], int, int]:
        k = store.KB.open(path)
        c = k.connect(readonly=True)
        ids = {r[0] for r in c.execute("SELECT message_id FROM messages")}
        threads = {tuple(sorted(t.message_ids)) for t in store.iter_threads(c)}
        n_loc = c.execute("SELECT COUNT(*) FROM locations").fetchone()[0]
        files = len(list((k.raw_dir / "cur").iterdir()))
        c.close()
        return ids, threads, n_loc, files

    assert snapshot(killed) == snapshot(reference)


@pytest.mark.corpus
def test_raw_store_is_readable_by_notmuch(kb, conn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    if not shutil.which("notmuch"):
        pytest.skip("notmuch is not installed (Debian package notmuch)")
    importer.import_messages(kb, conn, importer.scan([corpus("notmuch-default", "maildir")]))
    cfg = tmp_path / "notmuch-config"
    cfg.write_text(f"[database]\npath={kb.raw_dir}\n[new]\ntags=new\n"
                   "[maildir]\nsynchronize_flags=false\n")
    env = {**os.environ, "NOTMUCH_CONFIG": str(cfg)}
    subprocess.run(["notmuch", "new", "--quiet"], env=env, check=True, capture_output=True)
    count = subprocess.run(["notmuch", "count", "--output=threads", "*"], env=env,
                           capture_output=True, text=True, check=True)
    assert int(count.stdout) == 24
