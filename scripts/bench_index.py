#!/usr/bin/env python3
"""Benchmark grex's index and search beside notmuch, on 20news-bydate-train.

    python scripts/bench_index.py [--work /tmp/grex-bench] [--scale 10] [--runs 15]

What it measures (everything in one run, so ratios share the machine's load):
  1. indexing: `grex import` of the corpus (11,314 posts, written once as a Maildir with a
     Message-ID and a Date added, since 20news has neither), then the index stage alone
     (`rebuild_index`, procs=2 and procs=1) in messages/s; `notmuch new` on the same files.
  2. scale: the corpus ten times under new ids (~113k documents), built from the parsed
     messages into a KB's index by two processes with grex's BulkWriter, as `grex reindex`
     writes (no 113k files for grex); notmuch gets a Maildir of
     113k small files under --work unless --no-notmuch-scale.
  3. query latency p50/p95/p99 for a fixed mix (terms, phrases, prefixes, dates, boolean,
     facets), in-process (grex.search.search, warm; wall and CPU time) and as a whole
     process (`python -m grex search --json`): cold (GREX_SEARCH_SERVER=0: Python start,
     imports, index open, search) and warm (the KB's search server running), beside
     `notmuch search` and `python -c pass` (the floor of any Python client), wall and CPU
     (user + system) per process, in one loop, at 11k and at the scaled size.
  4. `python -X importtime -m grex search`, without and with the search server: what a
     search process imports, and whether spaCy / scikit-learn are among it.

grex is byte-compiled first (as a pip install does; PYTHONDONTWRITEBYTECODE=1 would make
every process compile grex's sources again).

Results go to stdout (markdown) and --work/bench-results.json. The machine is shared: the
load average before and after each phase is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from grex import pipeline, store  # noqa: E402
from grex.config import load_config  # noqa: E402
from grex.search import index as gi  # noqa: E402
from grex.search.opening import _forget  # noqa: E402
from grex.search.searcher import search  # noqa: E402

CORPUS_CANDIDATES = [os.environ.get("GREX_CORPORA"), REPO.parent / "shared" / "corpora",
                     Path("/work/shared/corpora")]

# (category, grex query, notmuch query, facets)
QUERIES: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("term", "graphics", "graphics", ()),
    ("term", "encryption", "encryption", ()),
    ("term", "hockey", "hockey", ()),
    ("terms", "windows driver", "windows driver", ()),
    ("terms", "car engine oil", "car engine oil", ()),
    ("phrase", '"space shuttle"', '"space shuttle"', ()),
    ("phrase", '"hard drive"', '"hard drive"', ()),
    ("prefix", "encrypt*", "encrypt*", ()),
    ("prefix", "moto*", "moto*", ()),
    ("date", "date:1993-03-01..1993-03-31", "date:1993-03-01..1993-03-31", ()),
    ("date", "israel date:1994-01-01..", "israel date:1994-01-01..", ()),
    ("field", "subject:baseball", "subject:baseball", ()),
    ("boolean", "god NOT jesus", "god NOT jesus", ()),
    ("boolean", "(nasa OR orbit) -moon", "(nasa OR orbit) -moon", ()),
    ("facet", "car", "car", ("from",)),
    ("facet", "gun control", "gun control", ("from",)),
]


def load() -> float:
    return os.getloadavg()[0]


def cpu_seconds() -> float:
    """CPU time of this process and its waited-for children (index workers): less
    sensitive than wall time to other processes on a shared machine."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(ms: list[float]) -> dict[str, float]:
    return {"n": len(ms), "p50": round(pct(ms, 50), 2), "p95": round(pct(ms, 95), 2),
            "p99": round(pct(ms, 99), 2), "mean": round(statistics.fmean(ms), 2)}


def find_corpus() -> Path:
    for c in CORPUS_CANDIDATES:
        if c and (Path(c) / "20news-bydate-train").is_dir():
            return Path(c) / "20news-bydate-train" / "20news-bydate-train"
    sys.exit("20news-bydate-train not found (set GREX_CORPORA)")


def date_for(i: int, n: int) -> datetime:
    return datetime(1993, 1, 1, tzinfo=UTC) + timedelta(seconds=int(i * 2 * 365 * 86400 / n))


def with_headers(raw: bytes, mid: str, date: datetime) -> bytes:
    from email.utils import format_datetime

    head = (f"Message-ID: <{mid}>\nDate: {format_datetime(date)}\n").encode()
    return head + raw


def write_maildir(files: list[Path], dest: Path, copy: int) -> None:
    cur = dest / "cur"
    for sub in ("cur", "new", "tmp"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    n = len(files)
    for i, f in enumerate(files):
        group, num = f.parent.name, f.name
        mid = f"{group}.{num}.c{copy}@20news.bench" if copy else f"{group}.{num}@20news.bench"
        (cur / f"{copy}-{i}.bench:2,S").write_bytes(with_headers(f.read_bytes(), mid,
                                                               date_for(i, n)))


def notmuch_env(work: Path, maildir: Path, name: str) -> dict[str, str]:
    cfg = work / f"notmuch-{name}.config"
    cfg.write_text(f"[database]\npath={maildir}\n[new]\ntags=\nignore=\n"
                   "[search]\nexclude_tags=\n[maildir]\nsynchronize_flags=false\n"
                   "[user]\nname=Bench\nprimary_email=bench@example.com\n")
    return {**os.environ, "NOTMUCH_CONFIG": str(cfg)}


def notmuch_new(env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(["notmuch", "new", "--quiet"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def _scaled_part(kb11_path: str, dest: str, copies: list[int]) -> int:
    """Index ``copies`` of the corpus (new ids per copy) into a new index at ``dest`` with
    grex's BulkWriter (a segment whenever the held postings are near the memory limit)."""
    from whoosh import index as wix

    from grex.search.bulk import BulkWriter

    conn = store.KB.open(Path(kb11_path)).connect(readonly=True)
    tids = dict(conn.execute("SELECT message_id, thread_id FROM messages").fetchall())
    Path(dest).mkdir(parents=True, exist_ok=True)
    ix = wix.create_in(dest, gi.make_schema())
    w = gi._writer(ix, cls=BulkWriter, limitmb=256)
    n = 0
    for copy in copies:
        for msg in store.iter_messages(conn):
            m = replace(msg, message_id=f"{msg.message_id}.x{copy}")
            doc = gi.message_document(m, thread_id=f"{tids.get(msg.message_id)}.x{copy}")
            gi.validate_document(doc)
            w.add_document(**doc)
            n += 1
            if w.full:
                w.commit(merge=False)
                w = gi._writer(ix, cls=BulkWriter, limitmb=256)
    w.commit(merge=False)
    ix.close()
    conn.close()
    return n


def build_scaled(kb11: store.KB, conn: Any, kb_big: Path, scale: int, procs: int) -> dict:
    """The corpus ``scale`` times under new ids, straight into a KB's index: ``procs``
    processes each write their share of the copies with the BulkWriter (as `grex reindex`
    does), then the parts' segments are listed in one table of contents."""
    from concurrent.futures import ProcessPoolExecutor

    from whoosh import index as wix

    big = store.KB.init(kb_big)
    gen = gi._new_generation(big.path)
    shares = [list(range(scale))[i::procs] for i in range(procs)]
    parts = [gen / f"part-{i}" for i in range(1, procs)]
    t = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, procs - 1),
                             mp_context=gi._mp_context()) as pool:
        futures = [pool.submit(_scaled_part, str(kb11.path), str(part), share)
                   for part, share in zip(parts, shares[1:], strict=True)]
        n = _scaled_part(str(kb11.path), str(gen), shares[0])
        n += sum(f.result() for f in futures)
    gi._join_parts(wix, gen, parts)
    secs = time.perf_counter() - t
    ix = wix.open_dir(str(gen))
    count = ix.doc_count()
    assert count == n, f"index holds {count} of {n} documents"
    segments = len(ix._segments())
    ix.close()
    gi._write_meta(gen, documents=n, procs=procs)
    gi.swap_in(big.path, gen)
    return {"documents": n, "seconds": round(secs, 1), "msg_per_s": round(n / secs, 1),
            "segments": segments, "procs": procs}


def inprocess(kb: Any, conn: Any, runs: int, *, messages: bool) -> dict:
    """Warm in-process latency: wall clock, and CPU time of this process (less sensitive
    to other processes on a shared machine)."""
    per_cat: dict[str, list[float]] = {}
    all_ms: list[float] = []
    cpu_ms: list[float] = []
    totals = {}
    for _cat, q, _nq, facets in QUERIES:  # warm: open the index, fill caches
        search(kb, q, messages=messages, facets=facets, conn=conn)
    for _ in range(runs):
        for cat, q, _nq, facets in QUERIES:
            t, c = time.perf_counter(), time.process_time()
            r = search(kb, q, messages=messages, facets=facets, conn=conn)
            ms = (time.perf_counter() - t) * 1000
            cpu_ms.append((time.process_time() - c) * 1000)
            per_cat.setdefault(cat, []).append(ms)
            all_ms.append(ms)
            totals[q] = r.total
    return {"all": summary(all_ms), "cpu": summary(cpu_ms),
            "by_category": {c: summary(v) for c, v in per_cat.items()}, "totals": totals}


def cold_open(kb: Any, conn: Any, runs: int) -> dict:
    ms = []
    for _ in range(runs):
        _forget(kb.path)
        t = time.perf_counter()
        search(kb, "graphics", conn=conn)
        ms.append((time.perf_counter() - t) * 1000)
    return summary(ms)


def _run_timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int, bytes]:
    """(wall ms, CPU ms of the child: user + system, exit code, stderr)."""
    import resource

    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = (time.perf_counter() - t) * 1000
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) * 1000
    return wall, cpu, done.returncode, done.stderr


def grex_command() -> list[str]:
    """The `grex` console script installed beside this Python (what a user types), else
    `python -m grex`."""
    script = Path(sys.executable).parent / "grex"
    return [str(script)] if os.access(script, os.X_OK) else [sys.executable, "-m", "grex"]


def _start_server(kb_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    sock = kb_path / "run" / "search.sock"
    proc = subprocess.Popen([sys.executable, "-m", "grex.search.server", str(kb_path)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not sock.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if not sock.exists():
        raise SystemExit("the search server did not start")
    return proc


def processes(kb_path: Path, nm_env: dict[str, str] | None, runs: int) -> dict:
    """Whole `grex search` processes, as a user runs them (the installed `grex` command, else
    `python -m grex`; `search --json`):
    cold (GREX_SEARCH_SERVER=0: Python start, imports, index open, search) and warm (the
    KB's search server running: Python start and the client), beside `notmuch search` and
    an empty Python process (`python -c pass`: the floor any Python client pays), in the
    same loop so they share the machine's load. Wall and CPU (user + system) per process."""
    base = {**os.environ, "PYTHONPATH": str(REPO)}
    base.pop("GREX_KB", None)
    modes = {"cold": {**base, "GREX_SEARCH_SERVER": "0"},
             "warm": {**base, "GREX_SEARCH_SERVER": "1"}}
    keys = ("cold", "warm", "notmuch", "python", "python_nosite")
    wall: dict[str, list[float]] = {k: [] for k in keys}
    cpu: dict[str, list[float]] = {k: [] for k in wall}
    server = _start_server(kb_path, modes["warm"])
    try:
        for _ in range(runs):
            for _cat, q, nq, facets in QUERIES:
                cmd = [*grex_command(), "--kb", str(kb_path), "search", "--json",
                       "--limit", "20", q]
                for f in facets:
                    cmd += ["--facet", f]
                for mode, env in modes.items():
                    w, c, rc, err = _run_timed(cmd, env)
                    if rc != 0:
                        raise SystemExit(f"grex search ({mode}) failed: {err.decode()[:500]}")
                    wall[mode].append(w)
                    cpu[mode].append(c)
                w, c, _rc, _err = _run_timed([sys.executable, "-c", "pass"], base)
                wall["python"].append(w)
                cpu["python"].append(c)
                w, c, _rc, _err = _run_timed([sys.executable, "-S", "-c", "pass"], base)
                wall["python_nosite"].append(w)  # the floor without site (.pth hooks)
                cpu["python_nosite"].append(c)
                if nm_env is not None:
                    w, c, rc, err = _run_timed(["notmuch", "search", "--limit=20", nq], nm_env)
                    if rc != 0:
                        raise SystemExit(f"notmuch search failed: {err.decode()[:500]}")
                    wall["notmuch"].append(w)
                    cpu["notmuch"].append(c)
    finally:
        server.terminate()
        server.wait(60)
    out: dict[str, Any] = {k: {"wall": summary(wall[k]), "cpu": summary(cpu[k])}
                           for k in wall if wall[k]}
    out["command"] = " ".join(grex_command())
    if wall["notmuch"]:
        for mode in ("cold", "warm", "python", "python_nosite"):
            out[f"ratio_{mode}"] = {
                "wall_p50": round(out[mode]["wall"]["p50"] / out["notmuch"]["wall"]["p50"], 2),
                "wall_p95": round(out[mode]["wall"]["p95"] / out["notmuch"]["wall"]["p95"], 2),
                "cpu_p50": round(out[mode]["cpu"]["p50"] / max(out["notmuch"]["cpu"]["p50"],
                                                               0.1), 2)}
    return out


def _compile() -> None:
    """Byte-compile grex (a pip install does; PYTHONDONTWRITEBYTECODE=1 would otherwise make
    every process compile grex's sources again)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "grex")], check=True,
                   stdout=subprocess.DEVNULL)


def importtime(kb_path: Path) -> dict:
    """What `grex search` imports: in-process (no server) and through the search server."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = {"cold": _importtime(kb_path, {**env, "GREX_SEARCH_SERVER": "0"})}
    server = _start_server(kb_path, env)
    try:
        out["warm"] = _importtime(kb_path, {**env, "GREX_SEARCH_SERVER": "1"})
    finally:
        server.terminate()
        server.wait(60)
    return out


def _importtime(kb_path: Path, env: dict[str, str]) -> dict:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "grex", "--kb",
                           str(kb_path), "search", "graphics"], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    top: dict[str, int] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = [p.strip() for p in line[len("import time:"):].split("|")]
        try:
            cumulative = int(parts[1])
        except ValueError:
            continue
        name = parts[2].strip()
        if not name.startswith(" ") and "." not in name:
            top[name] = max(top.get(name, 0), cumulative)
    total_ms = sum(top.values()) / 1000
    heavy = sorted(k for k in top if k in ("spacy", "sklearn", "thinc", "torch", "numpy"))
    biggest = sorted(top.items(), key=lambda kv: -kv[1])[:8]
    return {"total_ms": round(total_ms, 1), "heavy_imports": heavy,
            "top_ms": {k: round(v / 1000, 1) for k, v in biggest}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/grex-bench"))
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--runs", type=int, default=15, help="in-process repetitions of the mix")
    ap.add_argument("--process-runs", type=int, default=2, help="process repetitions")
    ap.add_argument("--no-notmuch-scale", action="store_true",
                    help="skip notmuch at the scaled size (it needs scale x 11k files)")
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--reuse", action="store_true", help="reuse KBs / maildirs in --work")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N posts (smoke)")
    ap.add_argument("--queries-only", action="store_true",
                    help="reuse the built KBs; skip the index timings (with --reuse)")
    ap.add_argument("--build-only", action="store_true",
                    help="only import and build the scaled index / notmuch databases")
    args = ap.parse_args()
    work: Path = args.work
    if work.exists() and not args.reuse:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    _compile()
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                                           "started": datetime.now(UTC).isoformat()}}
    files = sorted(p for p in find_corpus().glob("*/*") if p.is_file())
    if args.limit:
        files = files[:: max(1, len(files) // args.limit)][: args.limit]

    # 1. the corpus as a Maildir (Message-ID + Date added), imported by grex and notmuch
    md1 = work / "maildir-1"
    if not (md1 / "cur").exists():
        write_maildir(files, md1, 0)
    kb_path = work / "kb-11k"
    fresh = not (kb_path / store.CATALOG).exists()
    kb = store.KB.init(kb_path)
    conn = kb.connect()
    config = load_config(kb.path, {})
    if fresh:
        la = load()
        t = time.perf_counter()
        rep = pipeline.import_paths(kb, conn, config, [md1])
        secs = time.perf_counter() - t
        results["import"] = {"messages": rep.added, "seconds": round(secs, 1),
                             "msg_per_s": round(rep.added / secs, 1), "load": [la, load()]}
        print(f"grex import: {rep.added} messages in {secs:.1f} s", flush=True)
    results["index"] = {}
    skip_builds = args.build_only or args.queries_only
    # the whole stage from the catalog (read, documents, MIME flags, index, fsync, swap);
    # the procs=2 build is the one searched
    for procs in (() if skip_builds else (1, 2)):
        la = load()
        c = cpu_seconds()
        with kb.writer_lock(wait=True):
            r = gi.rebuild_index(kb, conn, procs=procs)
        cpu = cpu_seconds() - c
        results["index"][f"procs{procs}"] = {
            "documents": r.documents, "seconds": round(r.seconds, 1),
            "msg_per_s": round(r.documents / r.seconds, 1), "cpu_seconds": round(cpu, 1),
            "msg_per_cpu_s": round(r.documents / cpu, 1), "segments": r.segments,
            "load": [la, load()]}
        print(f"index procs={procs}: {r.documents} docs {r.seconds:.1f} s "
              f"({r.documents / r.seconds:.0f}/s), {cpu:.1f} CPU-s "
              f"({r.documents / cpu:.0f}/CPU-s)", flush=True)
    if gi.current_index_dir(kb.path) is None:
        gi.rebuild_index(kb, conn, procs=2)
    nm1 = notmuch_env(work, md1, "11k")
    if not (md1 / ".notmuch").exists():
        la = load()
        secs = notmuch_new(nm1)
        results["notmuch_new_11k"] = {"seconds": round(secs, 1),
                                      "msg_per_s": round(len(files) / secs, 1),
                                      "load": [la, load()]}
        print(f"notmuch new: {secs:.1f} s", flush=True)

    # 2. queries at 11k
    la = load()
    results["query_11k"] = {} if args.build_only else {
        "threads_inprocess": inprocess(kb, conn, args.runs, messages=False),
        "messages_inprocess": inprocess(kb, conn, args.runs, messages=True),
        "cold_open_inprocess": cold_open(kb, conn, 5),
        "process": processes(kb_path, nm1, args.process_runs),
        "load": [la, load()],
    }
    if not args.build_only:
        print(json.dumps(results["query_11k"]["threads_inprocess"]["all"]),
              json.dumps(results["query_11k"]["threads_inprocess"]["cpu"]),
              json.dumps(results["query_11k"]["process"]), flush=True)
        results["importtime"] = importtime(kb_path)

    # 3. the scaled corpus
    if not args.skip_scale:
        big_path = work / f"kb-{args.scale}x"
        if not (big_path / "index").exists():
            la = load()
            results["index_scaled"] = build_scaled(kb, conn, big_path, args.scale, procs=2)
            results["index_scaled"]["load"] = [la, load()]
            print(f"scaled index: {results['index_scaled']}", flush=True)
        big = store.KB.open(big_path)
        big_conn = big.connect(readonly=True)
        nm_big = None
        md_big = work / f"maildir-{args.scale}x"
        if not args.no_notmuch_scale:
            if not (md_big / ".notmuch").exists():
                for copy in range(args.scale):
                    write_maildir(files, md_big, copy + 1)
                nm_big = notmuch_env(work, md_big, "big")
                la = load()
                secs = notmuch_new(nm_big)
                results["notmuch_new_scaled"] = {
                    "seconds": round(secs, 1),
                    "msg_per_s": round(len(files) * args.scale / secs, 1),
                    "load": [la, load()]}
                print(f"notmuch new (scaled): {secs:.1f} s", flush=True)
            nm_big = notmuch_env(work, md_big, "big")
        la = load()
        results["query_scaled"] = {} if args.build_only else {
            "threads_inprocess": inprocess(big, big_conn, args.runs, messages=False),
            "messages_inprocess": inprocess(big, big_conn, args.runs, messages=True),
            "cold_open_inprocess": cold_open(big, big_conn, 5),
            "process": processes(big_path, nm_big, args.process_runs),
            "load": [la, load()],
        }
        if not args.build_only:
            print(json.dumps(results["query_scaled"]["threads_inprocess"]["all"]),
                  json.dumps(results["query_scaled"]["threads_inprocess"]["cpu"]),
                  json.dumps(results["query_scaled"]["process"]), flush=True)
    results["machine"]["finished"] = datetime.now(UTC).isoformat()
    name = "bench-build.json" if args.build_only else "bench-results.json"
    (work / name).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
