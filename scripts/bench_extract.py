"""Throughput and memory of grex's extraction pass on 20news-bydate-train.

Prints messages/s and words/s of the stage's NLP pass (grex pipeline: rules + NER +
clean-up, on each post's new text) with 1 and 2 processes, beside a plain ``nlp.pipe`` with
en_core_web_sm's full default pipeline over the same texts (ratio from the same run), and
the process RSS after 1k, 2k, 4k ... documents in one long run (flat = memory zones work).

    python scripts/bench_extract.py [--n 1000] [--memory 1000,2000,4000]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _cpu() -> float:
    """CPU seconds of this process and its finished children (n_process workers)."""
    return sum(_cpu_split())


def _cpu_split() -> tuple[float, float]:
    """(this process, its finished children) CPU seconds."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def load_posts(corpora: Path, n: int) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    from grex.errors import GrexError
    from grex.ingest.parse import parse_message

    root = corpora / "20news-bydate-train"
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.name.isdigit())
    out = []
    for p in paths:
        try:
            m = parse_message(p.read_bytes())
        except GrexError:
            continue
        ps = m.participants
        out.append((m.body.new, tuple(a.name for a in ps if a.name),
                    tuple(a.addr for a in ps if a.addr)))
        if len(out) >= n:
            break
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpora", default=os.environ.get("GREX_CORPORA",
                                                        str(ROOT.parent / "shared" / "corpora")))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--memory", default="1000,2000,4000")
    ap.add_argument("--skip-full", action="store_true")
    args = ap.parse_args()
    corpora = Path(args.corpora)
    if not corpora.is_dir():
        corpora = Path("/work/shared/corpora")

    from grex.extract.analyze import analyze_texts
    from grex.extract.model import load_model
    from grex.extract.records import Seeds

    steps = [int(x) for x in args.memory.split(",") if x]
    posts = load_posts(corpora, max([args.n, *steps]))
    items = [(t, Seeds(names, addrs)) for t, names, addrs in posts[:args.n]]
    words = sum(len(t.split()) for t, _ in items)
    print(f"{len(items)} posts of 20news-bydate-train, {words} words of new text "
          f"({os.cpu_count()} CPUs)")
    nlp, info = load_model()
    print(f"model: {info.describe()}; grex pipeline: {', '.join(info.pipeline)}")
    list(analyze_texts(nlp, items[:50], n_process=1))  # warm up
    results: dict[int, float] = {}
    cpus: dict[int, float] = {}
    for procs in (1, 2):
        own0, kids0 = _cpu_split()
        t = time.perf_counter()
        list(analyze_texts(nlp, items, n_process=procs))
        dt = time.perf_counter() - t
        own1, kids1 = _cpu_split()
        own, kids = own1 - own0, kids1 - kids0
        cpu = own + kids
        results[procs] = dt
        cpus[procs] = cpu
        # with a core per process, the busiest process sets the pace: this process, or the
        # workers sharing the children's CPU time
        bound = max(own, kids / procs) if kids else cpu
        print(f"grex extraction, n_process={procs}: {len(items) / dt:7.1f} msg/s "
              f"{words / dt:9.0f} words/s  ({dt:.1f} s wall, {cpu:.1f} s CPU = {own:.1f} here "
              f"+ {kids:.1f} in workers: {len(items) / cpu:.1f} msg per CPU-second; "
              f"CPU-bound pace with a core per process {len(items) / bound:.1f} msg/s, "
              f"{words / bound:.0f} words/s)")
    print(f"  load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs: on a shared "
          "machine wall figures are low; the CPU-bound pace is the unloaded ceiling")
    # the statistical NER alone (same model, no grex rules / clean-up / phrases): the floor
    import spacy

    ner_only = spacy.load(info.path, exclude=["tok2vec", "tagger", "parser", "attribute_ruler",
                                              "lemmatizer", "senter"])
    texts = [t for t, _ in items]
    c0 = _cpu()
    t = time.perf_counter()
    for _ in ner_only.pipe(texts, batch_size=64):
        pass
    dt_ner = time.perf_counter() - t
    ner_cpu = _cpu() - c0
    print(f"plain nlp.pipe, ner only (spaCy's default ops), 1 process: "
          f"{len(items) / dt_ner:7.1f} msg/s {words / dt_ner:9.0f} words/s  ({dt_ner:.1f} s wall, "
          f"{ner_cpu:.1f} s CPU): grex n_process=1 takes {cpus[1] / ner_cpu:.2f}x its CPU time")
    if not args.skip_full:
        full, _ = load_model(rules=False)
        c0 = _cpu()
        t = time.perf_counter()
        for _ in full.pipe(texts, batch_size=64):
            pass
        dt = time.perf_counter() - t
        full_cpu = _cpu() - c0
        print(f"plain nlp.pipe, full default pipeline, 1 process: {len(items) / dt:7.1f} msg/s "
              f"{words / dt:9.0f} words/s  ({dt:.1f} s wall, {full_cpu:.1f} s CPU)")
        for procs, d in results.items():
            print(f"  ratio grex n_process={procs} / plain full: {dt / d:.2f}x wall, "
                  f"{full_cpu / cpus[procs]:.2f}x per CPU-second")
    # memory: one long single-process run, RSS after each step
    mem_items = [(t, Seeds(n, a)) for t, n, a in posts[:max(steps)]]
    print(f"memory (one process, {len(mem_items)} posts, chunks of 2000 in memory zones):")
    done = 0
    base = rss_mb()
    for step in steps:
        list(analyze_texts(nlp, mem_items[done:step], n_process=1))
        done = step
        print(f"  after {step:5d} docs: RSS {rss_mb():7.1f} MB (start {base:.1f} MB), "
              f"StringStore {len(nlp.vocab.strings)} strings")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak:.1f} MB; of the largest worker: {kids:.1f} MB "
          "(forked: most of it is the model's pages, shared with this process)")


if __name__ == "__main__":
    main()
