#!/usr/bin/env python3
"""Benchmark: grex sync vs mbsync pulling the same IMAP folder, in the same run.

    python scripts/bench_sync.py [--limit N] [--keep]

1. starts a private Dovecot (scripts/imap-test-server) in a fresh directory;
2. loads 20news-bydate-train (11,314 posts; Message-ID and Date added by scripts/load-mail)
   into one folder with MULTIAPPEND;
3. times, each as a whole process, in a fresh directory on the same disk:
     grex first sync   (`grex sync --no-later`: fetch, parse, thread, raw Maildir + catalog;
                        then again with GREX_SYNC_WORKERS=2 parse worker processes)
     grex re-sync      (nothing changed)
     mbsync first pull (Debian isync, default FSync yes; then FSync no for context)
     mbsync re-run     (nothing changed)
   plus the no-change re-sync inside one Python process (what a long-running caller pays);
4. prints msg/s, MB/s, peak RSS of each process (getrusage of the waited child) and the
   grex/mbsync ratios.

Timings vary with the machine's load: the figures are only comparable within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SERVER = REPO / "scripts" / "imap-test-server"
FOLDER = "News"

_MEASURE = textwrap.dedent("""
    import json, resource, subprocess, sys, time
    t = time.perf_counter()
    r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"rc": r.returncode, "wall": wall, "maxrss_kb": ru.ru_maxrss,
                      "cpu": ru.ru_utime + ru.ru_stime,
                      "out": r.stdout.decode(errors="replace")[-400:],
                      "err": r.stderr.decode(errors="replace")[-800:]}))
""")


def measure(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    """Run ``cmd`` under a small wrapper so its peak RSS is its own."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True,
                         text=True, env=env, check=True)
    res = json.loads(out.stdout)
    if res["rc"] != 0:
        raise SystemExit(f"{cmd[0]} failed ({res['rc']}): {res['err']}")
    return res


def corpora() -> Path:
    for c in (os.environ.get("GREX_CORPORA"), REPO.parent / "shared" / "corpora",
              Path("/work/shared/corpora")):
        if c and (Path(c) / "20news-bydate-train").is_dir():
            return Path(c)
    raise SystemExit("20news-bydate-train not found (set GREX_CORPORA)")


def mbsyncrc(path: Path, env: dict[str, str], maildir: Path, fsync: bool) -> None:
    maildir.mkdir(parents=True)
    path.write_text(textwrap.dedent(f"""\
        FSync {"yes" if fsync else "no"}

        IMAPAccount bench
        Host localhost
        Port {env["GREX_IMAP_PORT"]}
        User {env["GREX_IMAP_USER"]}
        Pass {env["GREX_IMAP_PASSWORD"]}
        SSLType IMAPS
        CertificateFile {env["GREX_IMAP_CAFILE"]}

        IMAPStore remote
        Account bench

        MaildirStore local
        Path {maildir}/
        Inbox {maildir}/INBOX
        SubFolders Verbatim

        Channel pull
        Far :remote:{FOLDER}
        Near :local:{FOLDER}
        Sync Pull
        Create Near
        Expunge None
        SyncState *
        """))


def row(name: str, res: dict, n: int, mb: float) -> str:
    rate = n / res["wall"] if res["wall"] else 0.0
    return (f"{name:<34} {res['wall']:8.2f} s {rate:9.0f} msg/s {mb / res['wall']:7.1f} MB/s "
            f"{res['maxrss_kb'] / 1024:7.1f} MB peak RSS {res['cpu']:7.2f} s CPU")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--limit", type=int, default=None, help="load at most N posts")
    p.add_argument("--keep", action="store_true", help="keep the work directories")
    p.add_argument("--workdir", default="/tmp", help="where the KB and Maildirs go (disk)")
    args = p.parse_args()
    if not shutil.which("mbsync"):
        raise SystemExit("mbsync is not installed (apt-get install isync)")
    news = corpora() / "20news-bydate-train" / "20news-bydate-train"

    sdir = Path(tempfile.mkdtemp(prefix="gxb-", dir="/dev/shm" if Path("/dev/shm").is_dir()
                                 else "/tmp"))
    work = Path(tempfile.mkdtemp(prefix="grex-bench-sync-", dir=args.workdir))
    r = subprocess.run([sys.executable, str(SERVER), "start", str(sdir)], capture_output=True,
                       text=True, check=True)
    env_lines = dict(ln.split("=", 1) for ln in r.stdout.splitlines() if "=" in ln)
    try:
        # 1. load
        sys.path.insert(0, str(REPO))
        import importlib.machinery
        import importlib.util

        loader = importlib.machinery.SourceFileLoader("load_mail", str(REPO / "scripts" /
                                                                       "load-mail"))
        spec = importlib.util.spec_from_loader("load_mail", loader)
        assert spec is not None
        load_mail = importlib.util.module_from_spec(spec)
        loader.exec_module(load_mail)
        t = time.perf_counter()
        with load_mail.connect(env_lines["GREX_IMAP_HOST"], int(env_lines["GREX_IMAP_PORT"]),
                               env_lines["GREX_IMAP_USER"], env_lines["GREX_IMAP_PASSWORD"],
                               env_lines["GREX_IMAP_CAFILE"]) as c:
            n = load_mail.append_all(c, FOLDER, load_mail.prepare(news, args.limit),
                                     batch=100)
            size = c.folder_status(FOLDER, [b"SIZE"]).get(b"SIZE") if c.has_capability(
                "STATUS=SIZE") else None
        load_s = time.perf_counter() - t
        mb = (size or 0) / 1e6
        print(f"loaded {n} messages ({mb:.1f} MB) into {FOLDER} in {load_s:.1f} s "
              f"({n / load_s:.0f} msg/s, MULTIAPPEND 100)")

        base_env = {k: v for k, v in os.environ.items() if not k.startswith("GREX_")}
        # 2. grex
        kb = work / "kb"
        kb.mkdir()
        (kb / "grex.toml").write_text(textwrap.dedent(f"""\
            [[accounts]]
            name = "bench"
            host = "{env_lines["GREX_IMAP_HOST"]}"
            port = {env_lines["GREX_IMAP_PORT"]}
            ca_file = "{env_lines["GREX_IMAP_CAFILE"]}"
            username = "{env_lines["GREX_IMAP_USER"]}"
            folders = ["{FOLDER}"]
            share_keyword = ""
            """))
        genv = {**base_env, "GREX_IMAP_PASSWORD": env_lines["GREX_IMAP_PASSWORD"]}
        grex = [sys.executable, "-m", "grex", "--kb", str(kb), "--quiet", "sync", "--no-later",
                "--json"]
        g1 = measure(grex, genv)
        got = json.loads(g1["out"][g1["out"].index("{"):]) if "{" in g1["out"] else {}
        g2 = measure(grex, genv)
        # the same first sync with 2 parse worker processes (opt-in: GREX_SYNC_WORKERS; their
        # CPU escapes getrusage, they are not waited for)
        kb1 = work / "kb-workers"
        kb1.mkdir()
        shutil.copy(kb / "grex.toml", kb1 / "grex.toml")
        g1_w = measure([*grex[:4], str(kb1), *grex[5:]], {**genv, "GREX_SYNC_WORKERS": "2"})
        inproc = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            import time
            from grex import store
            from grex.ingest import imap as sync
            from grex.config import load_config
            kb = store.KB.open({str(kb)!r}); conn = kb.connect()
            config = load_config(kb.path)
            best = 1e9
            for _ in range(3):
                t = time.perf_counter(); r = sync.sync(kb, conn, config)
                best = min(best, time.perf_counter() - t)
                assert r.total("fetched") == 0
            print(best)
            """)], capture_output=True, text=True, env=genv, cwd=REPO, check=True)
        g_inproc = float(inproc.stdout.strip())
        # what any Python command pays here, for scale (the machine may be shared)
        py_bare = measure([sys.executable, "-c", "pass"], base_env)
        py_cli = measure([sys.executable, "-c", "import grex.cli"], {**base_env,
                                                                    "PYTHONPATH": str(REPO)})
        # 3. mbsync
        m_res = {}
        for fsync in (True, False):
            rc = work / f"mbsyncrc-{fsync}"
            mbsyncrc(rc, env_lines, work / f"maildir-{fsync}", fsync)
            m_res[fsync] = measure(["mbsync", "-c", str(rc), "-q", "pull"], base_env)
        m2 = measure(["mbsync", "-c", str(work / "mbsyncrc-True"), "-q", "pull"], base_env)
        m_files = sum(1 for _ in (work / "maildir-True" / FOLDER / "cur").iterdir()) + sum(
            1 for _ in (work / "maildir-True" / FOLDER / "new").iterdir())

        print()
        print(f"{'':34} {'wall':>10} {'rate':>15} {'throughput':>12} {'memory':>19}")
        print(row("grex first sync", g1, n, mb))
        print(row("grex first sync (2 parse workers)", g1_w, n, mb))
        print(row("mbsync first pull (FSync yes)", m_res[True], n, mb))
        print(row("mbsync first pull (FSync no)", m_res[False], n, mb))
        print(row("grex no-change re-sync (process)", g2, n, mb))
        print(row("mbsync no-change re-run", m2, n, mb))
        print(f"{'grex no-change re-sync (in-process)':<34} {g_inproc:8.3f} s")
        print(f"{'python -c pass (start-up, for scale)':<34} {py_bare['wall']:8.3f} s")
        print(f"{'python -c import grex.cli':<34} {py_cli['wall']:8.3f} s")
        print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print()
        print(f"grex stored {got.get('new')} new messages; mbsync wrote {m_files} files")
        print(f"first sync, grex msg/s / mbsync (FSync yes) msg/s: "
              f"{m_res[True]['wall'] / g1['wall']:.2f}")
        print(f"first sync, grex msg/s / mbsync (FSync no) msg/s:  "
              f"{m_res[False]['wall'] / g1['wall']:.2f}")
        print(f"no-change re-sync, grex time / mbsync time:        {g2['wall'] / m2['wall']:.2f}")
        print(f"peak RSS, grex / mbsync:                           "
              f"{g1['maxrss_kb'] / max(m_res[True]['maxrss_kb'], 1):.1f}")
    finally:
        subprocess.run([sys.executable, str(SERVER), "stop", str(sdir)], capture_output=True)
        if not args.keep:
            shutil.rmtree(sdir, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {sdir} and {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
