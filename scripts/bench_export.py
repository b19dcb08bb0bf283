#!/usr/bin/env python
"""Benchmark the HTML export on the 20news-bydate-train KB (11,314 posts).

Measures: export time (cold, then unchanged, then after one new message), site size and
file count, the search index size, and in a real browser (Debian chromium, headless) the
time from opening ``search.html?q=...`` to the first result on screen, plus the search
itself (in-page, index already loaded).

    python scripts/bench_export.py [--kb indexes/bench-20news] [--out DIR] [--runs 5]

The KB is imported once (grex's importer) and reused; the site is written to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from grex import pipeline, store  # noqa: E402
from grex.config import load_config  # noqa: E402
from grex.export import ExportOptions, export_html  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
QUERIES = ["hockey", "encryption clipper", "from:gld", "space shuttle", "windows -dos",
           "subject:israel", "graphics"]


def corpora() -> Path:
    for c in (os.environ.get("GREX_CORPORA", ""), str(REPO.parent / "shared" / "corpora"),
              "/work/shared/corpora"):
        if c and Path(c).is_dir():
            return Path(c)
    sys.exit("corpora not found: set GREX_CORPORA")


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def tree_size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def ensure_kb(path: Path) -> store.KB:
    kb = store.KB.init(path)
    conn = kb.connect()
    n = conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    if n < 11000:
        src = corpora() / "20news-bydate-train" / "20news-bydate-train"
        t0 = time.perf_counter()
        with kb.writer_lock(wait=True, timeout=600):
            report = pipeline.import_paths(kb, conn, load_config(kb.path, {}), [src])
        print(f"import: {report.added} messages in {time.perf_counter() - t0:.1f} s "
              f"({report.quarantined and len(report.quarantined)} quarantined)")
    conn.close()
    return kb


def export(kb: store.KB, out: Path) -> tuple[float, object]:
    conn = kb.connect(readonly=True)
    t0 = time.perf_counter()
    report = export_html(kb, conn, ExportOptions(out_dir=out))
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed, report


def pipeline_stage(kb: store.KB, out: Path) -> tuple[float, float]:
    """The sync pipeline's export stage (run_export): once to record what the site was
    built from, then again with nothing new (a quiet cron run)."""
    from grex.export import run_export

    conn = kb.connect()
    config = load_config(kb.path, {})
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        run_export(kb, conn, config, out_dir=out)
        times.append(time.perf_counter() - t0)
    conn.close()
    return times[0], times[1]


def add_one(kb: store.KB, tmp: Path) -> None:
    msg = EmailMessage()
    msg["From"] = "Bench <bench@example.org>"
    msg["Subject"] = "bench: one more post about hockey"
    msg["Date"] = formatdate(usegmt=True)  # new mail is the newest
    msg["Message-ID"] = f"<bench-{time.time_ns()}@example.org>"
    msg.set_content("A new post, to measure an incremental export.")
    f = tmp / "one.eml"
    f.write_bytes(msg.as_bytes())
    conn = kb.connect()
    with kb.writer_lock(wait=True, timeout=600):
        pipeline.import_paths(kb, conn, load_config(kb.path, {}), [f])
    conn.close()


def browser_times(site: Path, runs: int, queries: list[str] = QUERIES) -> dict[str, object]:
    from urllib.parse import quote, unquote, urlparse

    from playwright.sync_api import sync_playwright

    first: list[float] = []
    loaded_kb: list[float] = []
    inpage: dict[str, float] = {}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for _ in range(runs):
            for q in queries:
                ctx = b.new_context()  # a fresh context: nothing cached
                pg = ctx.new_page()
                files: list[str] = []
                pg.on("request", lambda r, files=files: files.append(r.url))
                url = (site / "search.html").as_uri() + "?q=" + quote(q)
                t0 = time.perf_counter()
                pg.goto(url, wait_until="commit")
                pg.wait_for_selector("#search-results li", timeout=60_000)
                first.append((time.perf_counter() - t0) * 1000)
                loaded_kb.append(sum(Path(unquote(urlparse(u).path)).stat().st_size
                                     for u in files) / 1e3)
                ctx.close()
        pg = b.new_page()
        pg.goto((site / "search.html").as_uri())
        pg.wait_for_selector("#search-status:not(:empty)")
        for q in queries:
            ms = pg.evaluate("""async q => {
                const G = window.GrexSearch, s = new G.Searcher(window.GREX_SEARCH);
                const plan = s.plan(q);
                await Promise.all(plan.needs.map(n => G.load(n[0] + ":" + n[1],
                                                             G.shardFile(n[0], n[1]))));
                const t0 = performance.now(); let n = 0;
                for (let i = 0; i < 20; i++) n = s.run(s.plan(q)).hits.length;
                return [(performance.now() - t0) / 20, n]; }""", q)
            inpage[q] = ms
        b.close()
    return {
        "first_result_ms": {"p50": round(pct(first, 50), 1), "p95": round(pct(first, 95), 1),
                            "p99": round(pct(first, 99), 1), "n": len(first)},
        "bytes_loaded_kb": {"p50": round(pct(loaded_kb, 50)), "max": round(max(loaded_kb))},
        "search_only_ms": {q: {"ms": round(v[0], 2), "hits": v[1]} for q, v in inpage.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kb", type=Path, default=REPO / "indexes" / "bench-20news")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    kb = ensure_kb(args.kb)
    with tempfile.TemporaryDirectory(prefix="grex-bench-export-") as tmp:
        out = args.out or Path(tmp) / "site"
        cold, r1 = export(kb, out)
        files, size = tree_size(out.resolve())
        shards = [f.stat().st_size for f in (out / "assets" / "search").iterdir()]
        index_size, largest = sum(shards), max(shards)
        again, r2 = export(kb, out)
        add_one(kb, Path(tmp))
        incr, r3 = export(kb, out)
        stage_full, stage_quiet = pipeline_stage(kb, out)
        result = {
            "threads": r1.threads, "messages": r1.messages, "people": r1.people,
            "topics": r1.topics, "orgs": r1.orgs,
            "load_average": round(os.getloadavg()[0], 1),
            "export_cold_s": round(cold, 2), "threads_per_s": round(r1.threads / cold, 1),
            "export_unchanged_s": round(again, 2), "unchanged_written": r2.written,
            "export_after_one_message_s": round(incr, 2), "files_rewritten": r3.written,
            "pipeline_stage_first_s": round(stage_full, 2),
            "pipeline_stage_nothing_new_s": round(stage_quiet, 3),
            "files": files, "site_mb": round(size / 1e6, 1),
            "search_index_mb": round(index_size / 1e6, 2), "search_files": len(shards),
            "largest_search_file_kb": round(largest / 1e3),
        }
        result.update(browser_times(out, args.runs))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for k, v in result.items():
        print(f"{k:28} {v}")


if __name__ == "__main__":
    main()
