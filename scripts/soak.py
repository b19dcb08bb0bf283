#!/usr/bin/env python3
"""Soak: syncs in a loop (as cron would run them) while a loader keeps changing the server.

    scripts/soak.py [--seconds 180] [--interval 1.0] [--kill-every 7] [--keep DIR]

Starts its own Dovecot (scripts/imap-test-server) and KB in a fresh directory. For
``--seconds`` a loader adds messages (some shared with the ``grex-share`` keyword), shares
and unshares existing ones, and deletes some, while the sync loop runs
``grex --kb KB sync --quiet --log-file KB/logs/sync.log`` back to back, each as its own
process; now and then a second sync is started on top of a running one (it must exit 75
at once), and every ``--kill-every``-th sync is stopped mid-run, alternating SIGTERM (stop
after the batch) and SIGKILL. Then the loader stops, `grex doctor --repair` and one last
sync run, and the KB is compared with the server's chosen messages (INBOX with the
keyword): nothing missing, nothing extra. Prints the counts; exits 1 on a mismatch.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import imapclient

REPO = Path(__file__).resolve().parents[1]
SERVER = REPO / "scripts" / "imap-test-server"
KEYWORD = "grex-share"
WORDS = ["deploy", "rollback", "latency", "cache", "invoice", "contract", "schema",
         "migration", "outage", "budget", "roadmap", "review", "release", "sprint", "vendor",
         "license", "backup", "failover", "index", "quorum"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREX_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def grex(kb: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "grex", "--kb", str(kb), *args],
                          capture_output=True, text=True, timeout=timeout, env=_env())


class Loader(threading.Thread):
    """Adds, shares, unshares and deletes messages on the server until stopped."""

    def __init__(self, connect, seed: int, pace: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pace = pace
        self.connect = connect
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.ops: Counter[str] = Counter()
        self.error: BaseException | None = None
        self.n = 0

    def message(self) -> bytes:
        self.n += 1
        when = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=self.n)
        words = " ".join(self.rng.choice(WORDS) for _ in range(self.rng.randint(40, 600)))
        return (f"From: Loader <loader@soak.test>\r\nTo: team@soak.test\r\n"
                f"Subject: soak {self.n} {self.rng.choice(WORDS)}\r\n"
                f"Date: {format_datetime(when)}\r\nMessage-ID: <soak-{self.n}@soak.test>\r\n"
                f"\r\n{words}\r\n").encode()

    def run(self) -> None:
        try:
            with self.connect() as c:
                c.select_folder("INBOX")
                while not self.stop.is_set():
                    self.step(c)
                    time.sleep(self.rng.uniform(0.0, self.pace))
        except BaseException as e:  # reported by the main thread
            self.error = e

    def step(self, c: imapclient.IMAPClient) -> None:
        r = self.rng.random()
        if r < 0.45:  # add a batch, about half of it shared
            n = self.rng.randint(1, 40)
            for _ in range(n):
                shared = self.rng.random() < 0.5
                c.append("INBOX", self.message(), flags=[KEYWORD] if shared else [])
            self.ops["added"] += n
            return
        uids = c.search("ALL")
        if not uids:
            return
        pick = self.rng.sample(uids, min(len(uids), self.rng.randint(1, 15)))
        if r < 0.65:
            c.add_flags(pick, [KEYWORD])
            self.ops["shared"] += len(pick)
        elif r < 0.85:
            c.remove_flags(pick, [KEYWORD])
            self.ops["unshared"] += len(pick)
        else:
            c.delete_messages(pick)
            c.expunge()
            self.ops["deleted"] += len(pick)


def _wait_running(kb: Path, p: subprocess.Popen[str], timeout: float = 30) -> None:
    """Until the sync holds the KB lock (lock.json names it) or has ended."""
    deadline = time.monotonic() + timeout
    while p.poll() is None and time.monotonic() < deadline:
        try:
            if json.loads((kb / "lock.json").read_text()).get("pid") == p.pid:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.01)


def chosen_on_server(connect) -> tuple[set[str], int]:
    with connect() as c:
        c.select_folder("INBOX", readonly=True)
        total = len(c.search("ALL"))
        uids = c.search(["KEYWORD", KEYWORD])
        ids: set[str] = set()
        for i in range(0, len(uids), 500):
            got = c.fetch(uids[i:i + 500], [b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
            for data in got.values():
                raw = data[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].decode()
                ids.add(raw.split(":", 1)[1].strip().strip("<>"))
    return ids, total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=180.0, help="how long the loader runs")
    ap.add_argument("--interval", type=float, default=1.0, help="pause between syncs (s)")
    ap.add_argument("--kill-every", type=int, default=7,
                    help="stop every Nth sync mid-run, alternating SIGTERM/SIGKILL (0: never)")
    ap.add_argument("--overlap-every", type=int, default=5,
                    help="start a second sync on top of every Nth one (0: never)")
    ap.add_argument("--later", action="store_true",
                    help="run the later stages (extract, index, export) in every sync, as cron "
                    "does (slow: spaCy); without it every sync passes --no-later")
    ap.add_argument("--pace", type=float, default=0.05,
                    help="the loader sleeps up to this long between changes (s)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", type=Path, help="keep the server and KB here (default: removed)")
    args = ap.parse_args(argv)

    base = Path(tempfile.mkdtemp(prefix="gxsoak-", dir="/dev/shm" if os.path.isdir("/dev/shm")
                                 else "/tmp"))
    base.chmod(0o755)  # Dovecot's users must reach the server directory inside it
    sdir, kb = base / "imap", (args.keep or base) / "kb"
    start = subprocess.run([sys.executable, str(SERVER), "start", str(sdir)],
                           capture_output=True, text=True, timeout=60)
    if start.returncode != 0:
        print(start.stderr, file=sys.stderr)
        return 2
    env = dict(line.split("=", 1) for line in start.stdout.splitlines() if "=" in line)
    host, port, cafile = env["GREX_IMAP_HOST"], int(env["GREX_IMAP_PORT"]), env["GREX_IMAP_CAFILE"]
    user, password = env["GREX_IMAP_USER"], env["GREX_IMAP_PASSWORD"]

    def connect() -> imapclient.IMAPClient:
        ctx = ssl.create_default_context(cafile=cafile)
        c = imapclient.IMAPClient(host, port=port, ssl=True, ssl_context=ctx, timeout=60)
        c.login(user, password)
        return c

    results: Counter[str] = Counter()
    durations: list[float] = []
    try:
        assert grex(kb, "init").returncode == 0
        pwfile = base / "pw"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        (kb / "grex.toml").write_text(
            "[[accounts]]\n"
            f'name = "soak"\nhost = "{host}"\nport = {port}\ntls = "imaps"\n'
            f'ca_file = "{cafile}"\nusername = "{user}"\n'
            f'password_command = "cat {pwfile}"\nfolders = ["INBOX"]\n'
            f'share_keyword = "{KEYWORD}"\nwhole_thread = false\non_unshare = "remove"\n')
        loader = Loader(connect, args.seed, args.pace)
        loader.start()
        rng = random.Random(args.seed + 1)
        later = [] if args.later else ["--no-later"]
        deadline = time.monotonic() + args.seconds
        n = 0
        while time.monotonic() < deadline and loader.error is None:
            n += 1
            cmd = [sys.executable, "-m", "grex", "--kb", str(kb), "sync", "--quiet",
                   "--log-file", str(kb / "logs" / "sync.log"), *later]
            t0 = time.monotonic()
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=_env())
            kill = None
            if args.kill_every and n % args.kill_every == 0:
                kill = signal.SIGTERM if (n // args.kill_every) % 2 else signal.SIGKILL
                _wait_running(kb, p)  # a kill during start-up tests nothing interesting
                time.sleep(rng.uniform(0.0, 1.0))
                if p.poll() is None:
                    p.send_signal(kill)
            elif args.overlap_every and n % args.overlap_every == 0:
                time.sleep(0.4)
                second = grex(kb, "sync", "--quiet", *later, timeout=120)
                results[f"overlap exit {second.returncode}"] += 1
            out, err = p.communicate(timeout=600)
            durations.append(time.monotonic() - t0)
            rc = p.returncode
            label = {0: "ok", 75: "locked", 143: "sigterm: interrupted after a batch",
                     -9: "sigkill"}.get(rc, f"exit {rc}")
            results[label] += 1
            if rc == 0 and (out or err):
                results["ok but printed (not quiet!)"] += 1
            if rc not in (0, 75, 143, -9) or (rc == 0 and kill):
                print(f"sync {n} exit {rc}: {err.strip()[:300]}", file=sys.stderr)
            time.sleep(args.interval)
        loader.stop.set()
        loader.join(30)
        if loader.error is not None:
            print(f"loader failed: {loader.error!r}", file=sys.stderr)
        status_before = json.loads(grex(kb, "status", "--json").stdout or "{}")
        doctor = grex(kb, "doctor", "--repair", "--no-server")
        final = grex(kb, "sync", "--quiet", *later, "--log-file", str(kb / "logs" / "sync.log"),
                     timeout=3600)
        chosen, server_total = chosen_on_server(connect)
        import sqlite3

        db = sqlite3.connect(kb / "catalog.sqlite")
        in_kb = {r[0] for r in db.execute("SELECT message_id FROM messages")}
        runs_recorded = dict(db.execute("SELECT result, count(*) FROM runs GROUP BY result"))
        db.close()
        check = grex(kb, "doctor", "--no-server")
        status_after = json.loads(grex(kb, "status", "--json").stdout or "{}")
        missing, extra = chosen - in_kb, in_kb - chosen
        last_before = (status_before.get("last_sync") or {}).get("result")
        report = {
            "seconds": args.seconds,
            "later_stages_in_every_sync": args.later,
            "syncs": n,
            "sync_results": dict(results),
            "sync_seconds_p50": round(sorted(durations)[len(durations) // 2], 2)
            if durations else None,
            "sync_seconds_max": round(max(durations), 2) if durations else None,
            "loader_ops": dict(loader.ops),
            "server_messages": server_total,
            "server_chosen": len(chosen),
            "kb_messages": len(in_kb),
            "missing": len(missing),
            "extra": len(extra),
            "last_sync_before_repair": last_before,
            "doctor_repair": [ln for ln in doctor.stdout.splitlines() if "repaired" in ln],
            "final_sync_exit": final.returncode,
            "doctor_after_exit": check.returncode,
            "index_after": (status_after.get("index") or {}).get("detail"),
            "runs_recorded": runs_recorded,
        }
        print(json.dumps(report, indent=2))
        if missing:
            print("missing:", sorted(missing)[:10], file=sys.stderr)
        if extra:
            print("extra:", sorted(extra)[:10], file=sys.stderr)
        ok = (not missing and not extra and final.returncode == 0 and check.returncode == 0
              and loader.error is None and not results["ok but printed (not quiet!)"])
        return 0 if ok else 1
    finally:
        subprocess.run([sys.executable, str(SERVER), "stop", str(sdir)], capture_output=True,
                       timeout=60)
        shutil.rmtree(sdir, ignore_errors=True)
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
