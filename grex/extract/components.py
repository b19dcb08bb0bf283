"""grex's spaCy components: rules before the statistical NER, clean-up after it.

``grex_rules`` (before ``ner``) marks what rules know better than the model, so that NER
predicts around it: email addresses, URLs, phone numbers and ticket ids (regular
expressions), the people of the thread (their display names, first or last name alone when
only one person in the thread has it, names read from header lines in the text), the
organisations behind the thread's mail domains, and a shipped gazetteer of well-known places
and organisations. Per-text seeds travel in ``doc.user_data["grex_seeds"]`` (plain lists,
so they survive ``n_process`` workers).

``grex_post`` (after ``ner``) cuts entities at line breaks, strips greetings and sign-offs,
and drops weekday names, mail header words and lowercase junk.

This module imports spaCy: import it only from inside the extraction functions.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

from spacy.language import Language
from spacy.matcher import PhraseMatcher
from spacy.tokens import Doc, Span

from grex.extract.names import (
    EMAIL_RE,
    NOT_NAMES,
    RELATIVE_DAYS,
    WEEKDAYS,
    domain_orgs,
    header_names,
    name_from_address,
    name_variants,
    normalise_email,
)

SEEDS_KEY = "grex_seeds"
RULED_KEY = "grex_ruled"  # (start, end) token spans set by the rules, not by NER
RULE_LABELS = ("EMAIL", "URL", "PHONE", "TICKET")
_URL_RE = re.compile(r"\b(?:https?://|ftp://|www\.)[^\s<>\"')\]]+", re.IGNORECASE)
_PHONE_RE = re.compile(
    r"(?<![\w.])(?:\+\d{1,3}[ .-]*)?(?:\(\s*\d{3}\s*\)|\d{3})"
    r"\s*[-. ]?\s*\d{3}\s*[-. ]\s*\d{4}(?![\w])"
)
_TICKET_RE = re.compile(r"\b[A-Z]{2,}[A-Z0-9]*-\d{1,7}\b")
_PRIORITY = {"rule": 0, "seed": 1, "gazetteer": 2}


def _load_gazetteer() -> dict[str, list[str]]:
    text = resources.files("grex.extract").joinpath("data/gazetteer.json").read_text("utf-8")
    data = json.loads(text)
    return {k: v for k, v in data.items() if not k.startswith("_")}


@Language.factory("grex_rules", default_config={"gazetteer": True})
def make_rules(nlp: Language, name: str, gazetteer: bool) -> GrexRules:
    return GrexRules(nlp, gazetteer=gazetteer)


@Language.factory("grex_post")
def make_post(nlp: Language, name: str) -> GrexPost:
    return GrexPost()


class GrexRules:
    def __init__(self, nlp: Language, *, gazetteer: bool = True) -> None:
        self.tokenizer = nlp.tokenizer
        self.gazetteer: PhraseMatcher | None = None
        if gazetteer:
            self.gazetteer = PhraseMatcher(nlp.vocab, attr="ORTH")
            for label, names in _load_gazetteer().items():
                forms = {n for n in names} | {n.upper() for n in names if len(n) > 3}
                self.gazetteer.add(label, [nlp.make_doc(f) for f in sorted(forms)])

    # -- spans from the three sources -------------------------------------------------
    def _regex_spans(self, doc: Doc) -> list[Span]:
        out: list[Span] = []
        text = doc.text
        for label, rx in (("EMAIL", EMAIL_RE), ("URL", _URL_RE), ("PHONE", _PHONE_RE),
                          ("TICKET", _TICKET_RE)):
            for m in rx.finditer(text):
                end = m.end()
                if label == "URL":
                    end -= len(m.group(0)) - len(m.group(0).rstrip(".,;:!?"))
                span = doc.char_span(m.start(), end, label=label, alignment_mode="expand")
                if span is not None:
                    out.append(span)
        return out

    def _seed_spans(self, doc: Doc) -> list[tuple[str, Span]]:
        raw: dict[str, Any] = doc.user_data.get(SEEDS_KEY) or {}
        names = list(raw.get("names") or ())
        addrs = [normalise_email(a) for a in raw.get("addresses") or ()]
        hn, ha = header_names(doc.text)
        names += hn
        addrs += ha
        addrs += [normalise_email(a) for a in EMAIL_RE.findall(doc.text)]
        names += [n for n in (name_from_address(a) for a in addrs) if n]

        seqs: dict[tuple[str, ...], str] = {}
        firsts: dict[str, set[str]] = {}
        lasts: dict[str, set[str]] = {}
        for name in dict.fromkeys(names):
            variants, first, last = name_variants(name)
            if not variants and not first:
                continue
            person = f"{first} {last}".strip()
            for v in variants:
                seqs[v] = "PERSON"
            if first:
                firsts.setdefault(first, set()).add(person)
            if last:
                lasts.setdefault(last, set()).add(person)
        singles: dict[str, str] = {}
        for table in (firsts, lasts):
            for w, people in table.items():
                # one word names one person only when a single person of the thread has it
                full = {p for p in people if " " in p} or people
                if len(full) == 1 and w not in NOT_NAMES and len(w) > 1 and w.isalpha():
                    singles[w] = "PERSON"
        orgs = {o: "ORG" for o in domain_orgs(addrs)}

        by_first: dict[str, list[tuple[str, ...]]] = {}
        for seq in seqs:
            by_first.setdefault(seq[0], []).append(seq)
        for lst in by_first.values():
            lst.sort(key=len, reverse=True)
        out: list[tuple[str, Span]] = []
        n = len(doc)
        for i, tok in enumerate(doc):
            low = tok.lower_
            matched = False
            for seq in by_first.get(low, ()):
                j = i
                k = 0
                while k < len(seq) and j < n:
                    t = doc[j]
                    if t.is_space:
                        if "\n" in t.text:
                            break
                        j += 1
                        continue
                    if t.lower_ != seq[k]:
                        break
                    j += 1
                    k += 1
                if k == len(seq) and any(c.isupper() for c in doc[i:j].text):
                    out.append(("seed", Span(doc, i, j, label=seqs[seq])))
                    matched = True
                    break
            if matched:
                continue
            if (tok.is_title or tok.is_upper) and len(tok) > 1:
                if low in singles:
                    out.append(("seed", Span(doc, i, i + 1, label=singles[low])))
                elif low in orgs:
                    out.append(("seed", Span(doc, i, i + 1, label="ORG")))
            elif low in orgs and not tok.is_lower and not tok.like_email:
                out.append(("seed", Span(doc, i, i + 1, label="ORG")))
        return out

    def _gazetteer_spans(self, doc: Doc) -> list[Span]:
        if self.gazetteer is None:
            return []
        out: list[Span] = []
        for span in self.gazetteer(doc, as_spans=True):
            # "Paris Hilton", "Downtown Houston Partners": a capitalised neighbour that the
            # gazetteer doesn't know means the name is part of something longer: let NER decide.
            before = doc[span.start - 1] if span.start > 0 else None
            after = doc[span.end] if span.end < len(doc) else None
            if after is not None and after.is_title and not after.is_sent_start and after.is_alpha:
                continue
            if (before is not None and before.is_title and before.is_alpha
                    and before.i > 0 and not doc[before.i - 1].is_punct
                    and "\n" not in doc[before.i - 1].text_with_ws):
                continue
            out.append(span)
        return out

    def __call__(self, doc: Doc) -> Doc:
        cands: list[tuple[int, int, Span]] = []
        for span in self._regex_spans(doc):
            cands.append((_PRIORITY["rule"], -len(span), span))
        for kind, span in self._seed_spans(doc):
            cands.append((_PRIORITY[kind], -len(span), span))
        for span in self._gazetteer_spans(doc):
            cands.append((_PRIORITY["gazetteer"], -len(span), span))
        cands.sort(key=lambda c: (c[0], c[1], c[2].start))
        taken: set[int] = set()
        chosen: list[Span] = []
        for _, _, span in cands:
            idx = range(span.start, span.end)
            if any(i in taken for i in idx):
                continue
            taken.update(idx)
            chosen.append(span)
        doc.set_ents(sorted(chosen, key=lambda s: s.start), default="unmodified")
        doc.user_data[RULED_KEY] = [[s.start, s.end] for s in chosen]
        return doc


_DROP_LABELS = frozenset({"CARDINAL", "ORDINAL", "QUANTITY", "PERCENT", "TIME", "LANGUAGE",
                          "NORP"})
_NAME_LABELS = frozenset({"PERSON", "ORG", "GPE", "LOC", "FAC", "NORP", "PRODUCT", "EVENT",
                          "WORK_OF_ART", "LAW"})


class GrexPost:
    def _clean(self, span: Span) -> Span | None:
        doc = span.doc
        label = span.label_
        if label in RULE_LABELS:
            return span
        start, end = span.start, span.end
        # a name never runs over a line break: keep the first line
        for i in range(start, end):
            if "\n" in doc[i].text_with_ws and i + 1 < end:
                end = i + 1
                break
        while start < end and (doc[start].is_punct or doc[start].is_space
                               or doc[start].lower_ in NOT_NAMES and label in _NAME_LABELS):
            start += 1
        while end > start and (doc[end - 1].is_punct and doc[end - 1].text not in (".",)
                               or doc[end - 1].is_space):
            end -= 1
        if end <= start:
            return None
        toks = doc[start:end]
        words = [t.lower_.strip(".") for t in toks if t.is_alpha or t.text.rstrip(".").isalpha()]
        if label == "DATE":
            if words and all(w in WEEKDAYS or w in RELATIVE_DAYS for w in words):
                return None
        elif label in _NAME_LABELS:
            if not words or all(w in NOT_NAMES for w in words):
                return None
            if not any(c.isupper() for c in toks.text):
                return None
            if any(t.like_email or t.like_url for t in toks):
                return None
        if (start, end) == (span.start, span.end):
            return span
        return Span(doc, start, end, label=label)

    @staticmethod
    def _propagate(doc: Doc, spans: list[Span]) -> list[Span]:
        """One sense per text: a name tagged ORG/GPE/... once is tagged so wherever else it
        appears untagged in the same text (NER misses repeats in odd contexts)."""
        names: dict[tuple[str, ...], str] = {}
        for sp in spans:
            if sp.label_ in ("ORG", "GPE", "LOC", "FAC", "PRODUCT", "PERSON") and len(sp) <= 4:
                key = tuple(t.text for t in sp)
                if (any(c.isupper() for c in sp.text) and len(sp.text) > 2
                        and not (len(sp) == 1 and (sp[0].is_stop or sp[0].lower_ in NOT_NAMES))):
                    names.setdefault(key, sp.label_)
        if not names:
            return spans
        taken = [False] * len(doc)
        for sp in spans:
            for i in range(sp.start, sp.end):
                taken[i] = True
        by_first: dict[str, list[tuple[str, ...]]] = {}
        for key in sorted(names, key=len, reverse=True):
            by_first.setdefault(key[0], []).append(key)
        extra: list[Span] = []
        i = 0
        while i < len(doc):
            for key in by_first.get(doc[i].text, ()):
                j = i + len(key)
                if j <= len(doc) and not any(taken[i:j]) and \
                        tuple(t.text for t in doc[i:j]) == key:
                    extra.append(Span(doc, i, j, label=names[key]))
                    for k in range(i, j):
                        taken[k] = True
                    i = j - 1
                    break
            i += 1
        return sorted(spans + extra, key=lambda s: s.start)

    def __call__(self, doc: Doc) -> Doc:
        keep: list[Span] = []
        for ent in doc.ents:
            if ent.label_ in _DROP_LABELS:
                continue
            span = self._clean(ent)
            if span is not None:
                keep.append(span)
        keep = self._propagate(doc, keep)
        doc.set_ents(keep, default="outside")
        return doc
