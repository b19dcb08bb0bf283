#!/usr/bin/env python3
"""Import benchmark: grex import (parse + thread + store) beside `notmuch new`, same files.

    python scripts/bench_import.py [--runs 3] [--corpus 20news|lkml|all]

Both tools index the same files from ../shared/corpora, each into a fresh store per run,
as whole processes; runs alternate between the tools so machine noise hits both. Prints
messages/s (median and range), peak RSS and the grex/notmuch ratio. notmuch keeps its
database outside the (read-only) corpus via database.path + database.mail_root.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.corpora import CORPORA  # noqa: E402

SETS = {
    "20news": ("20news-bydate-train/20news-bydate-train", 11314),
    "lkml": ("notmuch-lkml/maildir", 210),
}


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (MiB) of one whole process (and the children it waited)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[0]} failed: {p.stderr.read().decode() if p.stderr else ''}")
    return wall, usage.ru_maxrss // 1024


def run_grex(src: Path, work: Path, workers: int | None) -> tuple[float, int]:
    kb = work / f"kb-{time.monotonic_ns()}"
    env = {**os.environ}
    cmd = [sys.executable, "-m", "grex", "--kb", str(kb), "--quiet", "import", "--no-later",
           str(src)]
    if workers is not None:
        env["GREX_IMPORT_WORKERS"] = str(workers)
    res = timed(cmd, env)
    shutil.rmtree(kb, ignore_errors=True)
    return res


def run_notmuch(src: Path, work: Path) -> tuple[float, int]:
    db = work / f"nm-{time.monotonic_ns()}"
    db.mkdir()
    (db / "db").mkdir(parents=True)
    cfg = db / "config"
    cfg.write_text(f"[database]\npath={db}/db\nmail_root={src}\n[new]\ntags=new\n"
                   "[maildir]\nsynchronize_flags=false\n[search]\nexclude_tags=\n")
    env = {**os.environ, "NOTMUCH_CONFIG": str(cfg)}
    res = timed(["notmuch", "new", "--quiet"], env)
    shutil.rmtree(db, ignore_errors=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--corpus", choices=[*SETS, "all"], default="all")
    args = ap.parse_args()
    if CORPORA is None:
        raise SystemExit("../shared/corpora is absent")
    have_notmuch = shutil.which("notmuch") is not None
    names = list(SETS) if args.corpus == "all" else [args.corpus]
    print(f"{'corpus':8} {'tool':16} {'msgs':>6} {'msg/s median':>12} {'range':>15} "
          f"{'peak MiB':>8}  ratio")
    with tempfile.TemporaryDirectory(prefix="grex-bench-") as tmp:
        work = Path(tmp)
        for name in names:
            rel, n = SETS[name]
            src = CORPORA / rel
            results: dict[str, list[tuple[float, int]]] = {"grex": [], "grex (1 proc)": [],
                                                           "notmuch new": []}
            for _ in range(args.runs):
                results["grex"].append(run_grex(src, work, None))
                results["grex (1 proc)"].append(run_grex(src, work, 1))
                if have_notmuch:
                    results["notmuch new"].append(run_notmuch(src, work))
            nm_rate = (statistics.median(n / w for w, _ in results["notmuch new"])
                       if results["notmuch new"] else None)
            for tool, rows in results.items():
                if not rows:
                    print(f"{name:8} {tool:16} (not installed: apt-get install notmuch)")
                    continue
                rates = [n / w for w, _ in rows]
                med = statistics.median(rates)
                ratio = f"{med / nm_rate:.2f}x notmuch" if nm_rate and tool != "notmuch new" \
                    else ""
                print(f"{name:8} {tool:16} {n:6d} {med:12.0f} {min(rates):7.0f}-{max(rates):<7.0f}"
                      f" {max(m for _, m in rows):8d}  {ratio}")


if __name__ == "__main__":
    main()
