"""Scoring extraction against the shared corpora (used by scripts/eval_nlp.py and the tests).

Entities: ``enron-emailcoref-ner-train/mentions.json`` (36 Enron threads, hand-labelled
PER / ORG / LOC / DIG mentions). Gold = the proper-name mentions (``proper_name_heuristic``,
not pronominal) of type PER / ORG / LOC; predictions map PERSON->PER, ORG->ORG,
GPE/LOC/FAC->LOC; a predicted span is correct when it overlaps a gold span of the same type
(precision), a gold span is found when a predicted span of its type overlaps it (recall).
The threads are split in two fixed halves by a hash of their name ("A" and "B") so a score can
be shown on data that nothing was adjusted on.

Topics: NMI of each thread's strongest topic against the newsgroup of a fixed sample of
``20news-bydate-train`` (random.Random(seed).sample over the sorted labels.tsv rows).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

TYPE_MAP = {"PERSON": "PER", "ORG": "ORG", "GPE": "LOC", "LOC": "LOC", "FAC": "LOC"}
TYPES = ("PER", "ORG", "LOC")


@dataclass(frozen=True, slots=True)
class PRF:
    precision: float
    recall: float
    f1: float
    predicted: int
    gold: int


@dataclass(frozen=True, slots=True)
class GoldDoc:
    name: str
    text: str
    spans: tuple[tuple[int, int, str], ...]  # (start, end, PER|ORG|LOC)

    @property
    def half(self) -> str:
        return "A" if hashlib.sha256(self.name.encode()).digest()[0] % 2 == 0 else "B"


def load_enron(corpora: Path) -> list[GoldDoc]:
    data = json.loads((corpora / "enron-emailcoref-ner-train" / "mentions.json").read_text())
    docs = []
    for d in data:
        spans = tuple(
            (m["start_char"], m["end_char"], m["type"]) for m in d["mentions"]
            if m["type"] in TYPES and m["proper_name_heuristic"] and not m["pronominal"]
        )
        docs.append(GoldDoc(d["doc"], d["text"], spans))
    return docs


def score_entities(docs: Iterable[GoldDoc],
                   predict: Callable[[str], Iterable[tuple[int, int, str]]]) -> dict[str, PRF]:
    """``predict(text)`` yields (start, end, spaCy label); returns PRF per PER/ORG/LOC."""
    tp = dict.fromkeys(TYPES, 0)
    found = dict.fromkeys(TYPES, 0)
    npred = dict.fromkeys(TYPES, 0)
    ngold = dict.fromkeys(TYPES, 0)
    for doc in docs:
        pred = [(s, e, TYPE_MAP[lab]) for s, e, lab in predict(doc.text) if lab in TYPE_MAP]
        for s, e, t in pred:
            npred[t] += 1
            if any(gt == t and gs < e and s < ge for gs, ge, gt in doc.spans):
                tp[t] += 1
        for gs, ge, gt in doc.spans:
            ngold[gt] += 1
            if any(t == gt and gs < e and s < ge for s, e, t in pred):
                found[gt] += 1
    out = {}
    for t in TYPES:
        p = tp[t] / npred[t] if npred[t] else 0.0
        r = found[t] / ngold[t] if ngold[t] else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        out[t] = PRF(p, r, f, npred[t], ngold[t])
    return out


def load_20news_sample(corpora: Path, n: int = 2000, seed: int = 42,
                       ) -> list[tuple[str, str, bytes]]:
    """(path, newsgroup, raw bytes) for a fixed random sample of 20news-bydate-train."""
    root = corpora / "20news-bydate-train"
    rows = []
    for line in (root / "labels.tsv").read_text("utf-8").splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) >= 3:
            rows.append((parts[0], parts[2]))
    rows.sort()
    picked = random.Random(seed).sample(rows, min(n, len(rows)))
    return [(p, g, (root / p).read_bytes()) for p, g in picked]
