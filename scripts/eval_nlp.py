"""Quality of grex's extraction on the shared corpora, printed beside plain baselines.

Entities: PER / ORG / LOC precision, recall, F1 on enron-emailcoref-ner-train (see
grex.extract.evaluation), plain en_core_web_sm (full default pipeline) vs grex's pipeline,
on all 36 threads and on the two fixed halves A and B.

Topics: NMI of each thread's strongest topic vs the newsgroup on a fixed 2,000-post sample
of 20news-bydate-train (seed 42) and on a second sample (seed 43) that nothing was chosen on;
baselines TF-IDF + NMF(20) and TF-IDF + k-means(20) computed in the same run.

    python scripts/eval_nlp.py [--corpora PATH] [--json]
    python scripts/eval_nlp.py --errors A [--type ORG]   # error analysis on one half

Rules are made from the errors of half A only (``--errors A``); half B is the held-out check.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def find_corpora(flag: str | None) -> Path:
    for c in (flag, os.environ.get("GREX_CORPORA"), ROOT.parent / "shared" / "corpora",
              Path("/work/shared/corpora")):
        if c and Path(c).is_dir():
            return Path(c)
    raise SystemExit("shared corpora not found (use --corpora or GREX_CORPORA)")


def entity_scores(corpora: Path) -> dict[str, dict[str, dict[str, float]]]:
    from grex.extract.analyze import analyze_text
    from grex.extract.evaluation import load_enron, score_entities
    from grex.extract.model import load_model

    docs = load_enron(corpora)
    plain, _ = load_model(rules=False)
    nlp, _ = load_model()

    def base(text: str) -> list[tuple[int, int, str]]:
        return [(e.start_char, e.end_char, e.label_) for e in plain(text).ents]

    def grex(text: str) -> list[tuple[int, int, str]]:
        return [(e.start, e.end, e.label) for e in analyze_text(nlp, text).entities]

    out: dict[str, dict[str, dict[str, float]]] = {}
    for split in ("all", "A", "B"):
        part = [d for d in docs if split == "all" or d.half == split]
        for name, fn in (("baseline", base), ("grex", grex)):
            scores = score_entities(part, fn)
            out[f"{name}/{split}"] = {t: {"p": round(s.precision, 3), "r": round(s.recall, 3),
                                          "f1": round(s.f1, 3), "pred": s.predicted,
                                          "gold": s.gold} for t, s in scores.items()}
    return out


def entity_errors(corpora: Path, half: str, want: str) -> tuple[list[str], list[str]]:
    """False positives and false negatives of type ``want`` on one half, most frequent first,
    each with a line of context (for error analysis: use half A, keep B held out)."""
    from collections import Counter

    from grex.extract.analyze import analyze_text
    from grex.extract.evaluation import TYPE_MAP, load_enron
    from grex.extract.model import load_model

    nlp, _ = load_model()
    fp: Counter[tuple[str, str, str]] = Counter()
    fn: Counter[tuple[str, str]] = Counter()
    ctx: dict[object, str] = {}
    for d in load_enron(corpora):
        if d.half != half and half != "all":
            continue
        pred = [(e.start, e.end, TYPE_MAP[e.label], e.label)
                for e in analyze_text(nlp, d.text).entities if e.label in TYPE_MAP]
        for s, e, t, lab in pred:
            if t == want and not any(gt == t and gs < e and s < ge for gs, ge, gt in d.spans):
                other = ",".join(gt for gs, ge, gt in d.spans if gs < e and s < ge) or "-"
                key = (d.text[s:e], lab, other)
                fp[key] += 1
                ctx.setdefault(key, d.text[max(0, s - 50):e + 30])
        for gs, ge, gt in d.spans:
            if gt == want and not any(t == gt and gs < e and s < ge for s, e, t, _ in pred):
                other = ",".join(lab for s, e, _, lab in pred if gs < e and s < ge) or "-"
                fkey = (d.text[gs:ge], other)
                fn[fkey] += 1
                ctx.setdefault(fkey, d.text[max(0, gs - 50):ge + 30])

    def fmt(key: object, n: int) -> str:
        return f"{n:3d} {key!r}  ## {ctx[key]!r}"

    return ([fmt(k, n) for k, n in fp.most_common()], [fmt(k, n) for k, n in fn.most_common()])


def topic_scores(corpora: Path, seeds: tuple[int, ...] = (42, 43)) -> dict[str, float]:
    from sklearn.cluster import KMeans
    from sklearn.decomposition import NMF
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from grex.errors import GrexError
    from grex.extract import topics
    from grex.extract.evaluation import load_20news_sample
    from grex.ingest.parse import parse_message

    out: dict[str, float] = {}
    for seed in seeds:
        rows = load_20news_sample(corpora, 2000, seed)
        labels = [g for _, g, _ in rows]
        raw = [b.decode("latin-1") for _, _, b in rows]
        docs, new_only = [], []
        for _, _, b in rows:
            try:
                m = parse_message(b)
            except GrexError:
                docs.append(b.decode("latin-1"))
                new_only.append(docs[-1])
                continue
            # each post is a thread of one message (20news has no reply headers)
            docs.append(topics.thread_document(m.subject, [(m.message_id, m.body.new,
                                                            m.body.quoted, m.parent_candidates)]))
            new_only.append(f"{m.subject}\n{m.body.new}")
        x = TfidfVectorizer(stop_words="english", max_df=0.95, min_df=2).fit_transform(raw)
        w = NMF(20, init="nndsvd", random_state=0, max_iter=400).fit_transform(x)
        out[f"baseline_nmf20_raw/{seed}"] = round(nmi(labels, w.argmax(1)), 3)
        km = KMeans(20, n_init=5, random_state=0).fit(x)
        out[f"baseline_kmeans20_raw/{seed}"] = round(nmi(labels, km.labels_), 3)
        x2 = TfidfVectorizer(stop_words="english", max_df=0.5, min_df=2, sublinear_tf=True,
                             token_pattern=topics.TOKEN_PATTERN).fit_transform(new_only)
        w2 = NMF(20, init="nndsvda", random_state=0, max_iter=400).fit_transform(x2)
        out[f"baseline_nmf20_newtext/{seed}"] = round(nmi(labels, w2.argmax(1)), 3)
        m_new = topics.fit(new_only, k=20)
        out[f"grex_spectral20_new_text_only/{seed}"] = round(
            nmi(labels, [a[0][0] if a else -1 for a in m_new.assign(new_only)]), 3)
        t = time.time()
        model = topics.fit(docs, k=20)
        strongest = [a[0][0] if a else -1 for a in model.assign(docs)]
        out[f"grex_spectral20/{seed}"] = round(nmi(labels, strongest), 3)
        out[f"grex_fit_seconds/{seed}"] = round(time.time() - t, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpora")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--only", choices=("entities", "topics"))
    ap.add_argument("--errors", choices=("A", "B", "all"),
                    help="list false positives / negatives on this half instead")
    ap.add_argument("--type", default="ORG", choices=("PER", "ORG", "LOC"))
    args = ap.parse_args()
    corpora = find_corpora(args.corpora)
    if args.errors:
        fps, fns = entity_errors(corpora, args.errors, args.type)
        print(f"{args.type} false positives on half {args.errors} (text, label, gold there):")
        print("\n".join(fps))
        print(f"{args.type} false negatives on half {args.errors} (text, predicted there):")
        print("\n".join(fns))
        return
    result: dict[str, object] = {}
    if args.only != "topics":
        result["entities"] = entity_scores(corpora)
    if args.only != "entities":
        result["topics"] = topic_scores(corpora)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    if "entities" in result:
        ents = result["entities"]
        assert isinstance(ents, dict)
        print("Entities on enron-emailcoref-ner-train (P / R / F1); goals PER>=0.92, ORG>=0.60, "
              "LOC>=0.45; lead's baseline PER 0.84 ORG 0.38 LOC 0.24")
        for split in ("all", "A", "B"):
            for t in ("PER", "ORG", "LOC"):
                b, g = ents[f"baseline/{split}"][t], ents[f"grex/{split}"][t]
                print(f"  {split:>3} {t}: baseline {b['p']:.3f} / {b['r']:.3f} / {b['f1']:.3f}"
                      f"   grex {g['p']:.3f} / {g['r']:.3f} / {g['f1']:.3f}  (gold {g['gold']})")
    if "topics" in result:
        tops = result["topics"]
        assert isinstance(tops, dict)
        print("Topics on 20news-bydate-train, 2,000-post samples: NMI of the strongest topic; "
              "goal >= 0.60; lead's baseline NMF(20) ~0.50, k-means ~0.40")
        for k, v in tops.items():
            print(f"  {k}: {v}")


if __name__ == "__main__":
    main()
