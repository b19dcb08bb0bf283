"""Background sync against the real Dovecot: two syncs at once, --wait, SIGKILL and SIGTERM
in the middle of a sync, reads during a sync, and the crontab line run the way cron runs it.

Each sync here is a separate `python -m grex` process, as cron starts it. To have a second
process meet a sync that certainly holds the lock, the first one is paused with SIGSTOP
(it keeps its flock) instead of hoping it is still running.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from grex.ops import cron
from tests.fixtures_imap import REPO, ImapUser, grex_cli, kb_state, write_accounts

pytestmark = [pytest.mark.imap, pytest.mark.slow]

SHARE = "grex-share"
N = 1200  # three fetch batches (500 a batch): a sync is caught between them with margin


def _bulk(user: ImapUser, n: int, prefix: str, size: int = 1500) -> set[str]:
    """MULTIAPPEND n shared messages of ~size bytes; returns their Message-IDs."""
    ids = set()
    msgs = []
    filler = ("lorem ipsum dolor sit amet " * (size // 27 + 1))[:size]
    for i in range(n):
        mid = f"{prefix}-{i}@ops.test"
        when = datetime(2024, 5, 1, tzinfo=UTC) + timedelta(minutes=i)
        msgs.append({"msg": (f"From: Ops <ops@example.org>\r\nTo: team@example.org\r\n"
                             f"Subject: {prefix} {i}\r\nDate: {format_datetime(when)}\r\n"
                             f"Message-ID: <{mid}>\r\n\r\n{filler}\r\n").encode(),
                     "flags": [SHARE]})
        ids.add(mid)
    with user.client() as c:
        for i in range(0, n, 200):
            c.multiappend("INBOX", msgs[i:i + 200])
    return ids


def _mids(kb: Path) -> set[str]:
    conn = sqlite3.connect(kb / "catalog.sqlite")
    try:
        return {r[0] for r in conn.execute("SELECT message_id FROM messages")}
    finally:
        conn.close()


def _count(kb: Path) -> int:
    conn = sqlite3.connect(kb / "catalog.sqlite", timeout=30)
    try:
        return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def _popen_sync(kb: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREX_")}
    return subprocess.Popen([sys.executable, "-m", "grex", "--kb", str(kb), "sync", "--quiet",
                             "--no-later", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def _wait_for(pred, timeout: float = 60, every: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(every)


def _stop_midway(kb: Path, proc: subprocess.Popen[str], total: int, before: int = 0) -> int:
    """Pause the sync once its first batch is committed; returns the count at that point."""
    _wait_for(lambda: _count(kb) > before or proc.poll() is not None)
    proc.send_signal(signal.SIGSTOP)
    n = _count(kb)
    assert proc.poll() is None and before < n < total, f"the sync was not midway ({n}/{total})"
    return n


def _consistent(kb: Path) -> None:
    """Every catalog row has its raw file and every raw file its row; no duplicates."""
    state = kb_state(kb)
    rows = {h for _mid, h in state["messages"]}
    assert len(state["messages"]) == len({m for m, _ in state["messages"]})
    assert {r[:40] for r in state["raw"]} == {h[:40] for h in rows}


@pytest.fixture(scope="module")
def loaded(imap_server) -> tuple[ImapUser, set[str]]:
    """One user with N shared messages, shared by the tests below (each has its own KB)."""
    user = imap_server.new_user("ops")
    return user, _bulk(user, N, "bulk")


def test_two_syncs_at_once_one_runs_other_exits_75(loaded, tmp_path: Path) -> None:
    user, ids = loaded
    kb = write_accounts(tmp_path / "kb", [user.account(whole_thread=False)])
    first = _popen_sync(kb)
    _stop_midway(kb, first, N)
    try:
        t0 = time.monotonic()
        second = grex_cli(kb, "sync", "--quiet", "--no-later")
        refused_in = time.monotonic() - t0
        assert second.returncode == 75, second.stderr
        assert second.stdout == ""
        assert f"locked by pid {first.pid} (grex sync" in second.stderr
        assert second.stderr.count("\n") == 1  # one line, no traceback
        assert refused_in < 20  # at once: no waiting for the first sync (generous for CI)
        # reads go on meanwhile and see the last committed state
        st = json.loads(grex_cli(kb, "status", "--json").stdout)
        assert st["lock"]["held"] and st["lock"]["holder"]["pid"] == first.pid
        assert 0 < st["counts"]["messages"] < N and st["last_sync"]["result"] == "running"
        threads = grex_cli(kb, "threads", "--json")
        assert threads.returncode == 0 and 0 < len(json.loads(threads.stdout)) < N
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert out == "" and err == ""  # --quiet: nothing on success
    assert _mids(kb) == ids  # nothing lost
    _consistent(kb)
    st = json.loads(grex_cli(kb, "status", "--json").stdout)
    assert st["last_sync"]["result"] == "ok" and st["last_sync"]["counts"]["new"] == N
    assert not st["lock"]["held"] and st["lock"]["holder"] is None


def test_wait_queues_behind_the_running_sync(loaded, tmp_path: Path) -> None:
    user, ids = loaded
    kb = write_accounts(tmp_path / "kb", [user.account(whole_thread=False)])
    first = _popen_sync(kb)
    _stop_midway(kb, first, N)
    second = _popen_sync(kb, "--wait")
    time.sleep(1.0)
    assert second.poll() is None  # queued, not refused
    first.send_signal(signal.SIGCONT)
    assert first.wait(300) == 0
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0 and out == "" and err == "", err
    first.communicate()
    assert _mids(kb) == ids
    conn = sqlite3.connect(kb / "catalog.sqlite")
    results = [json.loads(c)["new"] for (c,) in
               conn.execute("SELECT counts FROM runs WHERE command = 'grex sync' ORDER BY id")]
    conn.close()
    assert results == [N, 0]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_signal_midway_then_status_doctor_and_next_sync_complete_it(
        loaded, tmp_path: Path, sig: signal.Signals) -> None:
    user, ids = loaded
    kb = write_accounts(tmp_path / "kb", [user.account(whole_thread=False)])
    proc = _popen_sync(kb, "--log-file", str(kb / "logs" / "sync.log"))
    _stop_midway(kb, proc, N)
    proc.send_signal(sig)
    proc.send_signal(signal.SIGCONT)
    _out, err = proc.communicate(timeout=120)
    partial = _count(kb)
    assert 0 < partial < N
    _consistent(kb)  # whatever was committed is whole
    st = json.loads(grex_cli(kb, "status", "--json").stdout)
    log = (kb / "logs" / "sync.log").read_text()
    if sig == signal.SIGTERM:
        assert proc.returncode == 143, err
        assert "stopped by SIGTERM after a completed batch" in err
        assert st["last_sync"]["result"] == "interrupted"
        assert st["last_sync"]["counts"] == {} or st["last_sync"]["counts"].get("new", 0) == 0
        assert not st["lock"]["stale"] and st["lock"]["holder"] is None  # released cleanly
        assert "grex sync interrupted" in log
    else:
        assert proc.returncode == -signal.SIGKILL
        assert st["last_sync"]["result"] == "killed"
        assert st["lock"]["stale"] and not st["lock"]["held"]
        assert any("killed" in w for w in st["warnings"])
        assert "grex sync started" in log and "grex sync ok" not in log
        text = grex_cli(kb, "status").stdout
        assert "Last sync: killed" in text and "stale record" in text
    repair = grex_cli(kb, "doctor", "--no-server", "--repair")
    assert repair.returncode == 0, repair.stdout + repair.stderr
    if sig == signal.SIGKILL:
        assert "record cleared [repaired]" in repair.stdout
        assert "closed as killed [repaired]" in repair.stdout
    again = grex_cli(kb, "sync", "--quiet", "--no-later",
                     "--log-file", str(kb / "logs" / "sync.log"))
    assert again.returncode == 0 and again.stdout == "" and again.stderr == "", again.stderr
    assert _mids(kb) == ids  # completed: nothing missing, nothing twice
    _consistent(kb)
    st = json.loads(grex_cli(kb, "status", "--json").stdout)
    assert st["last_sync"]["result"] == "ok" and st["last_sync"]["counts"]["new"] == N - partial
    assert st["warnings"] == []
    assert grex_cli(kb, "doctor", "--no-server").returncode == 0


def test_quiet_failure_prints_one_line_and_records_it(imap_user, tmp_path: Path) -> None:
    kb = write_accounts(tmp_path / "kb", [imap_user.account(password_command="echo wrong")])
    p = grex_cli(kb, "sync", "--quiet", "--log-file", str(kb / "logs" / "sync.log"))
    assert p.returncode == 77 and p.stdout == ""
    assert p.stderr.startswith("Error: login as") and p.stderr.count("\n") == 1
    st = json.loads(grex_cli(kb, "status", "--json").stdout)
    assert st["last_sync"]["result"] == "failed" and "AuthError" in st["last_sync"]["error"]
    assert "wrong" not in (kb / "logs" / "sync.log").read_text()  # no secret in the log
    d = grex_cli(kb, "doctor")
    assert d.returncode == 1 and "FAIL  server" in d.stdout and "login as" in d.stdout
    assert "wrong" not in d.stdout


def test_doctor_checks_tls_server_and_capabilities(imap_user, tmp_path: Path) -> None:
    kb = write_accounts(tmp_path / "kb", [imap_user.account()])
    d = grex_cli(kb, "doctor", "--json")
    checks = {c["name"]: c for c in json.loads(d.stdout)["checks"]}
    assert d.returncode == 0, d.stdout
    assert checks["credentials"]["level"] == "OK" and "not shown" in checks["credentials"]["detail"]
    server = checks["server"]
    assert server["level"] == "OK" and "TLSv1.3" in server["detail"]
    assert "login ok" in server["detail"] and "all capabilities sync uses" in server["detail"]
    assert imap_user.password not in d.stdout
    # a server whose certificate is not trusted
    kb2 = write_accounts(tmp_path / "kb2", [imap_user.account(ca_file="")])
    d2 = grex_cli(kb2, "doctor")
    assert d2.returncode == 1 and "FAIL  server" in d2.stdout and "certificate" in d2.stdout


def test_crontab_line_runs_like_cron(imap_user, tmp_path: Path) -> None:
    """The installed line, run by /bin/sh in cron's bare environment, syncs quietly and logs."""
    shared = {imap_user.deliver(subject=f"cron {i}", keywords=(SHARE,)) for i in range(3)}
    kb = write_accounts(tmp_path / "kb", [imap_user.account(whole_thread=False)])
    block = cron.render_block(kb, cron.parse_every("15m"), env={
        "PATH": os.environ["PATH"], "GREX_IMAP_PASSWORD": "never-written"})
    line = block.splitlines()[1]
    assert "never-written" not in block
    schedule, command = " ".join(line.split()[:5]), " ".join(line.split()[5:])
    assert schedule == "*/15 * * * *"
    assert shlex.split(command)  # valid shell words
    bare = {"HOME": str(tmp_path), "LOGNAME": "root", "SHELL": "/bin/sh",
            "PATH": "/usr/bin:/bin"}  # what cron gives a job
    p = subprocess.run(["/bin/sh", "-c", command.replace(r"\%", "%")], capture_output=True,
                       text=True, env=bare, cwd="/", timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "" and p.stderr == ""  # cron mails nothing
    assert _mids(kb) == shared
    log = (kb / "logs" / "sync.log").read_text()
    assert "grex sync started" in log and "grex sync ok" in log and '"new": 3' in log


def test_log_file_rotates_by_size(tmp_path: Path) -> None:
    import logging

    from grex.ops import runs as ops

    path = tmp_path / "logs" / "sync.log"
    handler = ops.setup_log_file(path, max_bytes=2000, backups=3)
    try:
        log = logging.getLogger("grex.ops")
        for i in range(200):
            log.info("line %d %s", i, "x" * 40)
    finally:
        logging.getLogger("grex").removeHandler(handler)
        handler.close()
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["sync.log", "sync.log.1", "sync.log.2", "sync.log.3"]
    assert all(p.stat().st_size <= 2200 for p in path.parent.iterdir())
    assert "line 199" in path.read_text()


@pytest.mark.nlp
def test_search_during_a_sync_and_site_refreshed_by_sync(imap_server, tmp_path: Path) -> None:
    """A full sync (extract, index, export with [export] html_dir) then, while a second sync
    holds the lock, `grex search` answers at once from the last committed index."""
    user = imap_server.new_user("srch")
    first = {user.deliver(subject=f"quokka migration {i}", body="the quokka plan\n",
                          keywords=(SHARE,)) for i in range(3)}
    kb = write_accounts(tmp_path / "kb", [user.account(whole_thread=False)])
    with (kb / "grex.toml").open("a") as f:
        f.write('[export]\nhtml_dir = "site-out"\n')
    p = grex_cli(kb, "sync", "--quiet", timeout=600)
    assert p.returncode == 0 and p.stdout == "" and p.stderr == "", p.stderr
    st = json.loads(grex_cli(kb, "status", "--json").stdout)
    assert st["site"]["html_dir"] == str(kb / "site-out") and st["site"]["refreshed_at"]
    assert st["site"]["pages"] and (kb / "site-out" / "index.html").exists()
    assert st["index"]["ok"] and st["index"]["documents"] == 3
    assert st["counts"]["people"] is not None  # extraction ran

    _bulk(user, N, "more")
    busy = _popen_sync(kb)
    _stop_midway(kb, busy, N + 3, before=3)
    try:
        t0 = time.monotonic()
        s = grex_cli(kb, "search", "quokka", "--json")
        assert s.returncode == 0, s.stderr
        assert time.monotonic() - t0 < 30  # never waits for the writer
        hits = json.loads(s.stdout)
        found = {m for h in hits["hits"] for m in h["message_ids"]}
        assert found == first
        st = json.loads(grex_cli(kb, "status", "--json").stdout)
        assert st["lock"]["held"], st
        assert st["index"]["ok"] and st["index"]["pending"] > 0, st["index"]
    finally:
        busy.send_signal(signal.SIGCONT)
    assert busy.wait(300) == 0
    busy.communicate()
