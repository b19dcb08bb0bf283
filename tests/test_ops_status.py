"""status and doctor over a real KB: a writer killed while holding the lock, orphan raw
files both ways, the runs table, and the exit-code documentation."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from grex import ingest, store
from grex.errors import KBLocked
from grex.ops import runs as ops

REPO = Path(__file__).resolve().parents[1]


def grex(kb: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("GREX_KB", None)
    return subprocess.run([sys.executable, "-m", "grex", "--kb", str(kb), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def write_mail(folder: Path, n: int, prefix: str = "m") -> list[str]:
    """n small messages as .eml files; returns their Message-IDs."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(n):
        mid = f"{prefix}{i}@status.test"
        when = datetime(2024, 3, 1, tzinfo=UTC) + timedelta(hours=i)
        (folder / f"{prefix}{i}.eml").write_text(
            f"From: Ann <ann@example.org>\nTo: team@example.org\nSubject: note {prefix}{i}\n"
            f"Date: {format_datetime(when)}\nMessage-ID: <{mid}>\n\nbody {i}\n")
        ids.append(mid)
    return ids


@pytest.fixture
def kb(tmp_path: Path) -> store.KB:
    path = tmp_path / "kb"
    write_mail(tmp_path / "mail", 6)
    (tmp_path / "mail" / "broken.eml").write_bytes(b"\x00\x01 not a message at all\n")
    p = grex(path, "import", str(tmp_path / "mail"), "--no-later")
    assert p.returncode == 0, p.stderr
    return store.KB.open(path)


HOLDER = """
import sys, time
from grex import store
from grex.ops import runs as ops
kb = store.KB.open(sys.argv[1])
with ops.writer(kb, wait=False, command="grex sync") as run:
    run.counts["new"] = 1
    print("locked", flush=True)
    time.sleep(60)
"""


def _start_holder(kb: store.KB) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(kb.path)], text=True,
                            stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_status_reports_counts_quarantine_and_last_run(kb: store.KB) -> None:
    conn = kb.connect()
    with ops.writer(kb, wait=False, command="grex sync") as run:
        run.counts.update(new=6, updated=0, removed=0, quarantined=1)
    conn.close()
    p = grex(kb.path, "status", "--json")
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["counts"]["messages"] == 6 and s["counts"]["threads"] == 6
    assert s["quarantined_total"] == 1 and "broken.eml" in s["quarantined"][0]["source"]
    assert s["quarantined"][0]["reason"]
    last = s["last_sync"]
    assert last["result"] == "ok" and last["counts"]["new"] == 6 and last["duration"] >= 0
    assert s["lock"] == {"holder": None, "held": False, "stale": False, "pids": []}
    text = grex(kb.path, "status").stdout
    assert "Last sync: ok" in text and "6 new" in text and "Quarantined: 1" in text


def test_second_writer_refused_then_killed_holder_repaired(kb: store.KB) -> None:
    proc = _start_holder(kb)
    try:
        with pytest.raises(KBLocked, match="grex sync"), ops.writer(kb, wait=False,
                                                                     command="grex sync"):
            pass
        s = json.loads(grex(kb.path, "status", "--json").stdout)
        assert s["lock"]["held"] and s["lock"]["holder"]["pid"] == proc.pid
        assert s["last_sync"]["result"] == "running"
        assert f"Lock: held by `grex sync` pid {proc.pid}" in grex(kb.path, "status").stdout
        # a read never waits for the writer
        t0 = time.monotonic()
        assert grex(kb.path, "threads", "--json").returncode == 0
        assert time.monotonic() - t0 < 30
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    s = json.loads(grex(kb.path, "status", "--json").stdout)
    assert not s["lock"]["held"] and s["lock"]["stale"]
    assert s["last_sync"]["result"] == "killed"
    assert any("killed" in w for w in s["warnings"])
    assert any("stale lock" in w for w in s["warnings"])

    d = grex(kb.path, "doctor", "--no-server")
    assert d.returncode == 0, d.stdout  # WARN, not FAIL
    assert "WARN  lock" in d.stdout and "WARN  runs" in d.stdout
    r = grex(kb.path, "doctor", "--no-server", "--repair")
    assert "record cleared [repaired]" in r.stdout and "closed as killed" in r.stdout
    after = grex(kb.path, "doctor", "--no-server")
    assert "OK    lock         free" in after.stdout and "WARN  runs" not in after.stdout
    s = json.loads(grex(kb.path, "status", "--json").stdout)
    assert s["lock"]["holder"] is None and s["last_sync"]["result"] == "killed"
    # the KB takes a writer again
    with ops.writer(kb, wait=False, command="grex sync"):
        pass


def test_sigterm_marks_run_interrupted(kb: store.KB) -> None:
    script = """
import sys, time
from grex import store
from grex.ops import runs as ops
kb = store.KB.open(sys.argv[1])
with ops.writer(kb, wait=False, command="grex sync") as run:
    print("locked", flush=True)
    for batch in range(600):      # the 'batches' of a long run
        time.sleep(0.05)
        run.counts["batches"] = batch + 1
        run.check()
"""
    proc = subprocess.Popen([sys.executable, "-c", script, str(kb.path)], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    assert "Interrupted" in err
    conn = kb.connect()
    run = ops.recent_runs(conn, "grex sync", 1)[0]
    conn.close()
    assert run.result == "interrupted" and 0 < run.counts["batches"] < 600
    assert kb.lock_holder() is None  # released cleanly, no stale record


def test_orphan_raw_files_both_ways(kb: store.KB, tmp_path: Path) -> None:
    conn = kb.connect()
    # 1. a message removed from the catalog whose raw file stayed (crash before the unlink)
    row = conn.execute("SELECT message_id, raw_path, content_hash FROM messages "
                       "WHERE message_id = 'm0@status.test'").fetchone()
    kept = (kb.raw_dir / row["raw_path"]).read_bytes()
    src = conn.execute("SELECT source FROM locations WHERE message_id = ?",
                       (row["message_id"],)).fetchone()[0]
    ingest.remove_location(kb, conn, row["message_id"], src)
    store.write_raw(kb, kept, row["content_hash"])
    # 2. a raw file written but never recorded (crash before the commit)
    new = write_mail(tmp_path / "late", 1, prefix="late")[0]
    data = (tmp_path / "late" / "late0.eml").read_bytes()
    import hashlib

    store.write_raw(kb, data, hashlib.sha256(data).hexdigest())
    # 3. a catalog row whose raw file is gone
    gone = conn.execute("SELECT raw_path FROM messages WHERE message_id = 'm1@status.test'"
                        ).fetchone()[0]
    (kb.raw_dir / gone).unlink()
    conn.close()

    d = grex(kb.path, "doctor", "--no-server")
    assert d.returncode == 1  # a row without its bytes is a FAIL
    assert "FAIL  raw files    1 catalog row(s) without their raw file" in d.stdout
    assert "2 raw file(s) without a catalog row (1 of removed messages, 1 never recorded)" \
        in d.stdout
    r = grex(kb.path, "doctor", "--no-server", "--repair", "--json")
    checks = json.loads(r.stdout)["checks"]
    raw = [c for c in checks if c["name"] == "raw files"]
    assert any(c["repaired"] and "dropped 1, re-imported 1" in c["detail"] for c in raw)
    conn = kb.connect()
    ids = {r[0] for r in conn.execute("SELECT message_id FROM messages")}
    conn.close()
    assert new in ids and "m0@status.test" not in ids  # adopted; the removed one stays gone


def test_exit_code_doc_matches_errors() -> None:
    doc = (REPO / "docs" / "exit-codes.md").read_text()
    assert doc == ops.exit_codes_markdown(), (
        "docs/exit-codes.md is stale: python -m grex.ops.runs exit-codes > docs/exit-codes.md")
    for code, name, _ in ops.exit_code_table():
        assert f"| {code} |" in doc and (name == "-" or f"`{name}`" in doc)


def test_forked_worker_of_a_killed_writer_does_not_keep_the_lock(kb: store.KB) -> None:
    """Worker pools fork during a sync; after SIGKILL of the sync its orphaned workers must
    not hold the KB lock (they'd share the flock'd file), and SIGTERM must still end them."""
    script = """
import os, sys, time
from grex import store
from grex.ops import runs as ops
kb = store.KB.open(sys.argv[1])
with ops.writer(kb, wait=False, command="grex sync"):
    child = os.fork()
    if child == 0:
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # don't keep the test's pipe open
        time.sleep(60)
        os._exit(0)
    print(child, flush=True)
    time.sleep(60)
"""
    proc = subprocess.Popen([sys.executable, "-c", script, str(kb.path)], text=True,
                            stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    try:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        assert ops.pid_alive(child)
        state = ops.lock_state(kb)
        assert not state.held and state.stale
        with ops.writer(kb, wait=False, command="grex sync"):  # the next sync gets the lock
            pass
        os.kill(child, signal.SIGTERM)  # the inherited SIGTERM handler must not swallow it
        _wait_gone(child)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def _wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while ops.pid_alive(pid):
        assert time.monotonic() < deadline, f"pid {pid} still alive"
        time.sleep(0.05)


def test_sigterm_while_queued_for_the_lock_stops_at_once(kb: store.KB) -> None:
    holder = _start_holder(kb)
    try:
        waiter = subprocess.Popen(
            [sys.executable, "-m", "grex", "--kb", str(kb.path), "sync", "--wait",
             "--no-later"], text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
        deadline = time.monotonic() + 60
        while not any(p != holder.pid for p in _lock_waiters(kb)):
            assert time.monotonic() < deadline and waiter.poll() is None, waiter.stderr
            time.sleep(0.05)
        waiter.send_signal(signal.SIGTERM)
        _out, err = waiter.communicate(timeout=30)
        assert waiter.returncode == 143 and "before the run started" in err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate()
    conn = kb.connect()
    assert [r.command for r in ops.recent_runs(conn)] == ["grex sync"]  # the holder's only
    conn.close()


def _lock_waiters(kb: store.KB) -> set[int]:
    """Pids that have the KB's lock file open (the holder and anyone queueing for it)."""
    pids = set()
    want = kb.lock_path.stat().st_ino
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (d / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if fd.stat().st_ino == want:
                        pids.add(int(d.name))
    return pids
