"""grex_rules: what rules know better than the model, marked before spaCy's NER."""

from __future__ import annotations

import functools
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
    domain_orgs,
    header_names,
    name_from_address,
    name_variants,
    name_words,
    normalise_email,
    signature_orgs,
)
from grex.extract.orgwords import _DOCUMENT_HEADS, _FACILITY_WORDS

SEEDS_KEY = "grex_seeds"
TEXT_KEY = "grex_text"  # the doc's text as given to make_doc (saves rebuilding Doc.text)
RULED_KEY = "grex_ruled"  # (start, end) token spans set by the rules, not by NER
RULE_LABELS = ("EMAIL", "URL", "PHONE", "TICKET")
_URL_RE = re.compile(r"\b(?:https?://|ftp://|www\.)[^\s<>\"')\]]+", re.IGNORECASE)
_PHONE_RE = re.compile(
    r"(?<![\w.])(?:\+\d{1,3}[ .-]*)?(?:\(\s*\d{3}\s*\)|\d{3})"
    r"\s*[-. ]?\s*\d{3}\s*[-. ]\s*\d{4}(?![\w])"
)

_TICKET_RE = re.compile(r"\b[A-Z]{2,}[A-Z0-9]*-\d{1,7}\b")
_PRIORITY = {"rule": 0, "seed": 1, "gazetteer": 2}
# A company's legal form after its name: "Southbridge Water Supply Co.", "Mind's Eye, Inc."
_CORP_NAME = re.compile(
    r"(?<![\w&'.-])((?:[A-Z][\w&'.-]*)(?:[ \t]+(?:[A-Z][\w&'.-]*|&|and|of|de)){0,4})"
    r"[ \t]*,?[ \t]*(?:Inc|Corp|Corporation|Incorporated|LLC|L\.L\.C|Ltd|Co|Company|Limited|"
    r"plc|PLC|LP|L\.P|LLP|GmbH|AG|S\.A|N\.V|B\.V)\b\.?(?![\w-])")
_INITIALS_LINE = re.compile(
    r"^[ \t]*([A-Z]{2,3})[ \t]*\n(?=[ \t>]*(?:-+[ \t]*)?(?:Original[ \t]+Message|"
    r"(?:From|Sent|To)[ \t]*:))", re.MULTILINE)


@functools.cache
def _given_names() -> frozenset[str]:
    text = resources.files("grex.extract").joinpath("data/given_names.json").read_text("utf-8")
    return frozenset(json.loads(text)["names"])


def _load_gazetteer() -> dict[str, list[str]]:
    text = resources.files("grex.extract").joinpath("data/gazetteer.json").read_text("utf-8")
    data = json.loads(text)
    return {k: v for k, v in data.items() if not k.startswith("_")}


_CAP_RUN = re.compile(r"[A-Z][\w'-]*(?:[ \t]+(?:&[ \t]+)?[A-Z][\w'-]*){1,3}")


def _spelled_domains(doc: Doc, text: str, labels: set[str]) -> list[Span]:
    """Capitalised words whose letters spell a mail domain of the text are that
    organisation: "Arthur Andersen" in mail from arthurandersen.com."""
    out: list[Span] = []
    if not labels:
        return out
    for m in _CAP_RUN.finditer(text):
        words = [(w.start() + m.start(), w.end() + m.start(), w.group(0))
                 for w in re.finditer(r"[^\s&]+", m.group(0))]
        i = 0
        while i < len(words) - 1:
            for j in range(len(words), i + 1, -1):
                key = re.sub(r"[^a-z0-9]", "", "".join(w[2] for w in words[i:j]).lower())
                if key in labels:
                    sp = doc.char_span(words[i][0], words[j - 1][1], label="ORG",
                                       alignment_mode="contract")
                    if sp is not None and len(sp):
                        out.append(sp)
                    i = j - 1
                    break
            i += 1
    return out


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
    def _regex_spans(self, doc: Doc, text: str) -> list[Span]:
        out: list[Span] = []
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

    @staticmethod
    def _corp_spans(doc: Doc, text: str) -> list[Span]:
        """Names followed by a legal form (Inc, Corp, LLC, Ltd, Co, ...) are organisations."""
        out: list[Span] = []
        for m in _CORP_NAME.finditer(text):
            start = m.start(1)
            words = m.group(1).split()
            # "Thanks Acme Inc": leading greetings and header words are not part of the name
            while words and words[0].lower().strip(".,") in NOT_NAMES:
                start = text.index(words[1], start + len(words[0])) if len(words) > 1 else -1
                words = words[1:]
            if not words or start < 0:
                continue
            span = doc.char_span(start, m.end(), label="ORG", alignment_mode="contract")
            if span is not None and len(span):
                out.append(span)
        return out

    @staticmethod
    def _initials_spans(doc: Doc, text: str) -> list[Span]:
        """A sign-off by initials: a line of two or three capitals just above the quoted
        message or header block ("RK" / "Original Message", "JT" / "From: ...")."""
        out: list[Span] = []
        for m in _INITIALS_LINE.finditer(text):
            if m.group(1).lower() in NOT_NAMES:
                continue
            span = doc.char_span(m.start(1), m.end(1), label="PERSON")
            if span is not None:
                out.append(span)
        return out

    def _seed_spans(self, doc: Doc, text: str) -> list[tuple[str, Span]]:
        raw: dict[str, Any] = doc.user_data.get(SEEDS_KEY) or {}
        names = list(raw.get("names") or ())
        addrs = [normalise_email(a) for a in raw.get("addresses") or ()]
        hn, ha = header_names(text)
        names += hn
        addrs += ha
        addrs += [normalise_email(a) for a in EMAIL_RE.findall(text)]
        names += [n for n in (name_from_address(a) for a in addrs) if n]
        # a signature's company line ("Blue Heron Antiques" above its street address) is the
        # organisation, also where it stands as a header display name
        sig_orgs = {tuple(o.lower().split()) for o in signature_orgs(text, _given_names())}
        names = [n for n in names if tuple(name_words(n.lower())) not in sig_orgs]

        seqs: dict[tuple[str, ...], str] = {o: "ORG" for o in sig_orgs if len(o) > 1}
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
        orgs.update({o[0]: "ORG" for o in sig_orgs if len(o) == 1})

        by_first: dict[str, list[tuple[str, ...]]] = {}
        for seq in seqs:
            by_first.setdefault(seq[0], []).append(seq)
        for lst in by_first.values():
            lst.sort(key=len, reverse=True)
        out: list[tuple[str, Span]] = []
        n = len(doc)
        out.extend(("seed", sp) for sp in _spelled_domains(doc, text, set(orgs)))
        words = set(by_first) | set(singles) | set(orgs)
        if not words:
            return out
        # visit only the tokens that can start a match (found by one regex over the text)
        finder = re.compile(r"(?<!\w)(?:" + "|".join(
            re.escape(w) for w in sorted(words, key=len, reverse=True)) + r")(?!\w)",
            re.IGNORECASE)
        starts = []
        for m in finder.finditer(text):
            sp = doc.char_span(m.start(), m.end())
            if sp is not None and len(sp) == 1:
                starts.append(sp.start)
        for i in starts:
            tok = doc[i]
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
        n = len(doc)
        found = self.gazetteer(doc, as_spans=True)
        starts = {sp.start for sp in found}
        for span in found:
            # "Paris Hilton", "Downtown Houston Partners": a capitalised neighbour that the
            # gazetteer doesn't know means the name is part of something longer: let NER decide.
            # But "Ohio Report" is a report on a place, and a known organisation
            # followed by capitalised words ("FedEx Ground") is still that organisation.
            before = doc[span.start - 1] if span.start > 0 else None
            after = doc[span.end] if span.end < n else None
            if after is not None and after.is_title and not after.is_sent_start and after.is_alpha:
                if span.label_ == "ORG":
                    j = span.end
                    while j < n and j < span.end + 3 and doc[j].is_title and doc[j].is_alpha \
                            and doc[j].lower_ not in NOT_NAMES and j not in starts \
                            and doc[j].lower_ not in _DOCUMENT_HEADS \
                            and "\n" not in doc[j - 1].text_with_ws:
                        j += 1
                    span = Span(doc, span.start, j, label="ORG")
                elif after.lower_ not in _DOCUMENT_HEADS and after.lower_ not in _FACILITY_WORDS:
                    continue
            if (before is not None and before.is_title and before.is_alpha
                    and before.i > 0 and not doc[before.i - 1].is_punct
                    and "\n" not in doc[before.i - 1].text_with_ws):
                continue
            # "Public Utility Commission of Texas", "Bank of Montreal": the place ends
            # an organisation's name
            if span.label_ != "ORG" and before is not None and before.lower_ in ("of", "for") \
                    and before.i > 0 and doc[before.i - 1].is_title \
                    and "\n" not in doc[before.i - 1].text_with_ws:
                continue
            out.append(span)
        return out

    def __call__(self, doc: Doc) -> Doc:
        cands: list[tuple[int, int, Span]] = []
        # Doc.text joins every token: use the text the doc was made from when it came along
        text = doc.user_data.get(TEXT_KEY) or doc.text
        for span in self._regex_spans(doc, text):
            cands.append((_PRIORITY["rule"], -len(span), span))
        for span in self._initials_spans(doc, text):
            cands.append((_PRIORITY["seed"], -len(span), span))
        for kind, span in self._seed_spans(doc, text):
            cands.append((_PRIORITY[kind], -len(span), span))
        for span in self._gazetteer_spans(doc):
            cands.append((_PRIORITY["gazetteer"], -len(span), span))
        for span in self._corp_spans(doc, text):
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


