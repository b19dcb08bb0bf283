"""grex_post: clean-up after spaCy's NER (cuts, drops, relabels)."""

from __future__ import annotations

import re
from collections import Counter

from spacy.tokens import Doc, Span
from spacy.util import filter_spans

from grex.extract.names import (
    EMAIL_RE,
    NOT_NAMES,
    RELATIVE_DAYS,
    WEEKDAYS,
)
from grex.extract.orgwords import (
    _ACRONYM,
    _CONTEXT_ACRONYM,
    _DEPARTMENT_WORDS,
    _DOCUMENT_HEADS,
    _ENTRY_VERBS,
    _FACILITY_WORDS,
    _FILE_NAME,
    _GENERIC_RUN_WORDS,
    _LEAD_VERBS,
    _NOT_ORGS,
    _ORG_HEADS,
    _ORG_WORDS,
    _QUOTE_MARKS,
    _RUN_HEADS,
    _RUN_HEADS_RE,
    _SENSE_LABELS,
    _STREET_WORDS,
    _SYSTEM_NOUNS,
    _TIME_ZONES,
    _US_STATES,
)
from grex.extract.rules import _URL_RE, RULE_LABELS, RULED_KEY, TEXT_KEY, _given_names


def _initials(span: Span) -> str:
    """"Enron North America" -> "ENA": the first letters of a name's capitalised words."""
    return "".join(t.text[0] for t in span if t.is_title and t.is_alpha)


# Lotus Notes / Outlook attachment markers: "<< File: EPA summary 2001.xls >>"
_ATTACHMENT = re.compile(r"<\s?<\s*File\s*:[^\n>]*(?:>\s?>?)?", re.IGNORECASE)
_DROP_LABELS = frozenset({"CARDINAL", "ORDINAL", "QUANTITY", "PERCENT", "TIME", "LANGUAGE",
                          "NORP"})
_NAME_LABELS = frozenset({"PERSON", "ORG", "GPE", "LOC", "FAC", "NORP", "PRODUCT", "EVENT",
                          "WORK_OF_ART", "LAW"})


def _shouted(doc: Doc, i: int) -> bool:
    """Whether token i stands in a run of capitals: at least three other words of three or
    more capital letters within four tokens of it, on its line."""
    n = 0
    for j in range(max(0, i - 4), min(len(doc), i + 5)):
        if j == i:
            continue
        if "\n" in doc[min(i, j):max(i, j)].text_with_ws.rstrip("\n"):
            continue
        t = doc[j]
        if t.is_alpha and t.is_upper and len(t) >= 3:
            n += 1
    return n >= 3


class GrexPost:
    def __init__(self) -> None:
        self.given_names = _given_names()

    def _person_not_org(self, doc: Doc, start: int, end: int) -> bool:
        """"a memo from Dana Whitfield" tagged ORG: one to three capitalised words led by a
        common given name, none of them an organisation word, is a person."""
        toks = doc[start:end]
        if not 1 <= len(toks) <= 3 or toks[0].text not in self.given_names:
            return False
        return all((t.is_title and t.is_alpha or len(t.text) == 2 and t.text[1] == "."
                    and t.text[0].isupper()) and t.lower_ not in _ORG_WORDS
                   and t.lower_ not in _DEPARTMENT_WORDS for t in toks)

    @staticmethod
    def _facility(doc: Doc, start: int, end: int) -> Span | None:
        """The FAC span when a name is (or is followed by) a facility head word."""
        inner = [i for i in range(start + 1, end) if doc[i].lower_ in _FACILITY_WORDS]
        j = end
        while j < len(doc) and doc[j].lower_ in _FACILITY_WORDS and doc[j].is_title \
                and not doc[j].ent_type_:
            j += 1
        if j > end:
            return Span(doc, start, j, label="FAC")
        if inner:
            last = inner[-1] + 1
            while last < end and doc[last].lower_ in _FACILITY_WORDS:
                last += 1
            return Span(doc, start, last, label="FAC")
        return None

    def _clean(self, span: Span, ruled: frozenset[tuple[int, int]] = frozenset(),
               ) -> Span | None:
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
        while start < end and (doc[start].is_punct and not doc[start].is_currency
                               or doc[start].is_space or _QUOTE_MARKS.fullmatch(doc[start].text)
                               or doc[start].lower_ in NOT_NAMES and label in _NAME_LABELS):
            start += 1
        while end > start and (doc[end - 1].is_punct and doc[end - 1].text not in (".",)
                               or doc[end - 1].is_space
                               or _QUOTE_MARKS.fullmatch(doc[end - 1].text)):
            end -= 1
        if end <= start:
            return None
        if label == "MONEY" and start > 0 and doc[start - 1].is_currency \
                and not doc[start - 1].ent_type_:
            start -= 1  # the model leaves the sign out: "$" + "40,000"
        toks = doc[start:end]
        words = [t.lower_.strip(".") for t in toks  # "U.S.", "U.S.A." are words too
                 if t.is_alpha or t.text.replace(".", "").isalpha()]
        if label == "DATE":
            if words and all(w in WEEKDAYS or w in RELATIVE_DAYS for w in words):
                return None
            digits = toks.text.strip()
            if digits.isdigit() and not (len(digits) == 4 and digits[:2] in ("19", "20")):
                return None  # "100644" is a file mode, not a date
        elif label in _NAME_LABELS:
            if not words or all(w in NOT_NAMES for w in words):
                return None
            if len(toks) == 1 and toks[0].is_upper:
                if toks.text in _TIME_ZONES:
                    return None
                # "1400 MT", "3 SME 's": capitals after a number are a unit or a count
                prev = doc[start - 1] if start > 0 else None
                if prev is not None and (prev.like_num or prev.is_digit) and not (
                        len(prev) == 4 and prev.text[:2] in ("19", "20")):  # "May 2001 EPA"
                    return None
            if not any(c.isupper() for c in toks.text):
                return None
            if any(t.like_email or t.like_url for t in toks) or "@" in toks.text:
                return None  # addresses (also Lotus Notes "Name/HOU/ECT@ECT") are not names
            if _FILE_NAME.search(toks.text):
                return None
            if label in ("PERSON", "ORG", "GPE"):  # "Walden Compressor Station": a facility
                fac = self._facility(doc, start, end)
                if fac is not None:
                    return fac
            if label in ("PERSON", "GPE", "LOC") and len(toks) == 1 and toks[0].is_upper \
                    and toks[0].is_alpha and len(toks[0]) >= 4 and (start, end) not in ruled \
                    and toks.text.title() not in self.given_names:
                label = "ORG"  # "NOVA", "ACME": an unknown word in capitals is an acronym
            if label in ("PERSON", "GPE", "LOC", "NORP", "WORK_OF_ART", "PRODUCT") \
                    and len(toks) > 1 and (start, end) not in ruled \
                    and toks[-1].is_title and toks[-1].lower_.rstrip(".") in _ORG_HEADS:
                label = "ORG"  # "Kernel Mode Systems", "Atomic Energy Commission"
            if label == "ORG" and len(toks) == 1 and toks.text.upper() in _NOT_ORGS:
                return None
            if label == "ORG" and len(toks) == 1 and toks[0].is_upper and len(toks[0]) >= 4 \
                    and _shouted(doc, start):
                return None  # "A FIREARM, WHEN POSSESSED": a word of a line in capitals
            if label == "ORG" and (start, end) not in ruled \
                    and self._person_not_org(doc, start, end):
                return Span(doc, start, end, label="PERSON")
            if label == "ORG" and all(t.lower_ in _DEPARTMENT_WORDS or t.is_punct for t in toks):
                return None  # "the Marketing side", "Gas Scheduling": a department
            if label == "ORG" and len(toks) > 1 and toks[-1].lower_ in _DOCUMENT_HEADS:
                return None  # "Letter Proposal", "BCAP Application": a document, not a body
        if label in ("PERSON", "ORG", "GPE"):  # "Allen Parkway", "Smith Street": a place
            if end < len(doc) and doc[end].lower_.rstrip(".") in _STREET_WORDS \
                    and doc[end].is_title and not doc[end].ent_type_:
                return Span(doc, start, end + 1, label="FAC")
            if end - start > 1 and doc[end - 1].lower_.rstrip(".") in _STREET_WORDS:
                return Span(doc, start, end, label="FAC")
        if (start, end, label) == (span.start, span.end, span.label_):
            return span
        return Span(doc, start, end, label=label)

    @staticmethod
    def _propagate(doc: Doc, spans: list[Span], text: str) -> list[Span]:
        """One sense per text: a name tagged ORG/GPE/... once is tagged so wherever else it
        appears untagged in the same text (NER misses repeats in odd contexts)."""
        names: dict[tuple[str, ...], str] = {}
        # two-letter acronyms ("GE") only when NER tagged them alike at least twice
        short = Counter((sp.text, sp.label_) for sp in spans if len(sp.text) == 2
                        and sp[0].is_upper and sp[0].is_alpha)
        for sp in spans:
            if sp.label_ in ("ORG", "GPE", "LOC", "FAC", "PRODUCT", "PERSON") and len(sp) <= 4:
                key = tuple(t.text for t in sp)
                if (any(c.isupper() for c in sp.text)
                        and (len(sp.text) > 2 or short[(sp.text, sp.label_)] >= 2)
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
        finder = re.compile(r"(?<!\w)(?:" + "|".join(
            re.escape(w) for w in sorted(by_first, key=len, reverse=True)) + r")(?!\w)")
        n = len(doc)
        for m in finder.finditer(text):
            first = doc.char_span(m.start(), m.end())
            if first is None or len(first) != 1:
                continue
            i = first.start
            for key in by_first.get(doc[i].text, ()):
                j = i + len(key)
                if j <= n and not any(taken[i:j]) and tuple(t.text for t in doc[i:j]) == key:
                    extra.append(Span(doc, i, j, label=names[key]))
                    for k in range(i, j):
                        taken[k] = True
                    break
        return sorted(spans + extra, key=lambda s: s.start)

    @staticmethod
    def _systems(doc: Doc) -> set[str]:
        """Acronyms the text uses as computer systems: "ZMS training", "the QRT tab",
        "QRT and ZMS records", "entered into ZMS". One sense per text: such an acronym is
        no organisation anywhere in it."""
        out: set[str] = set()
        n = len(doc)
        text = doc.user_data.get(TEXT_KEY) or doc.text
        for m in _ACRONYM.finditer(text):
            span = doc.char_span(m.start(), m.end())
            if span is None or len(span) != 1:
                continue
            tok = span[0]
            j = tok.i + 1
            # "QRT and ZMS records": the head noun after a coordinated acronym
            if j + 1 < n and doc[j].lower_ in ("and", "&", "/") and doc[j + 1].is_upper:
                j += 2
            if j < n and doc[j].lower_ in _SYSTEM_NOUNS:
                out.add(tok.text)
                continue
            if tok.i > 0 and doc[tok.i - 1].lower_ == "into":
                k = tok.i - 2
                while k >= 0 and k >= tok.i - 8 and "\n" not in doc[k].text_with_ws:
                    if doc[k].lower_ in _ENTRY_VERBS:
                        out.add(tok.text)
                        break
                    k -= 1
        return out

    @staticmethod
    def _one_word_senses(doc: Doc, spans: list[Span], text: str,
                         ruled: frozenset[tuple[int, int]]) -> list[Span]:
        """A one-word ORG that is a word of a person's name in the same text is that person
        ("Olson and Berryhill" beside "Jim Berryhill"); one that the text also writes in
        lowercase is a common noun ("Modem comes with ..." beside "my modem")."""
        person_words = {t.text for sp in spans if sp.label_ == "PERSON" and len(sp) > 1
                        for t in sp if t.is_title and len(t) > 2}
        out: list[Span] = []
        lower_words: set[str] | None = None
        for sp in spans:
            if sp.label_ != "ORG" or len(sp) != 1 or (sp.start, sp.end) in ruled \
                    or not sp[0].is_title:
                out.append(sp)
                continue
            if sp.text in person_words:
                out.append(Span(doc, sp.start, sp.end, label="PERSON"))
                continue
            if lower_words is None:
                prose = _URL_RE.sub(" ", EMAIL_RE.sub(" ", text))  # not "@acme.com"
                lower_words = set(re.findall(r"(?<![\w.@/])[a-z][a-z'-]+\b", prose))
            if sp.text.lower() in lower_words:
                continue
            out.append(sp)
        return out

    @staticmethod
    def _join_of(doc: Doc, spans: list[Span]) -> list[Span]:
        """"Commission of" + "Texas": an ORG ending in of/for/and/& runs on into the name
        right after it."""
        out: list[Span] = []
        for sp in sorted(spans, key=lambda x: x.start):
            prev = out[-1] if out else None
            if prev is not None and prev.label_ == "ORG" and prev.end == sp.start \
                    and prev[-1].lower_ in ("of", "for", "and", "&", "de") \
                    and sp.label_ in ("GPE", "LOC", "ORG", "FAC", "PERSON") \
                    and "\n" not in prev[-1].text_with_ws:
                out[-1] = Span(doc, prev.start, sp.end, label="ORG")
            else:
                out.append(sp)
        return out

    @staticmethod
    def _states(doc: Doc, spans: list[Span]) -> list[Span]:
        """"Austin, TX": a state code after a place (and its comma) is a place too."""
        gpe_end = {sp.end for sp in spans if sp.label_ == "GPE"}
        states = {i + 2 for i in gpe_end if i + 1 < len(doc) and doc[i].text == ","
                  and doc[i + 1].text in _US_STATES}
        if not states:
            return spans
        out = [sp for sp in spans if not any(sp.start < e <= sp.end for e in states)]
        covered = {i for sp in out for i in range(sp.start, sp.end)}
        out += [Span(doc, e - 1, e, label="GPE") for e in states if e - 1 not in covered]
        return sorted(out, key=lambda sp: sp.start)

    # -- organisations by general mechanisms ---------------------------------------------
    @staticmethod
    def _org_runs(doc: Doc, spans: list[Span], text: str,
                  ruled: frozenset[tuple[int, int]]) -> list[Span]:
        """A run of capitalised words ending in an organisation's head word ("Kestrel Valley
        Electric", "Harmon County Water Commission") is an organisation, when one of its
        words is more than a generic one; NER often leaves such runs out or tags a part."""
        heads = _RUN_HEADS_RE.finditer(text)
        owner: dict[int, Span] = {}
        added: list[Span] = []
        dropped: set[tuple[int, int]] = set()
        n = len(doc)
        for m in heads:
            hs = doc.char_span(m.start(), m.end())
            if hs is None or len(hs) != 1:
                continue
            h = hs.start
            if h + 1 < n and (doc[h + 1].is_title or doc[h + 1].is_upper) and doc[h + 1].is_alpha \
                    and "\n" not in doc[h].text_with_ws:
                continue  # the head word is not the last word of the name
            i = h
            while i > 0 and h - i < 5 and "\n" not in doc[i - 1].text_with_ws and (
                    doc[i - 1].is_alpha and (doc[i - 1].is_title or doc[i - 1].is_upper
                                             and len(doc[i - 1]) > 1)
                    or doc[i - 1].text == "&" and i > 1 and doc[i - 2].is_title):
                i -= 1  # "Lewis & Clark College", but not "TWPL & Northwest Pipeline"
            while i < h and (doc[i].lower_ in NOT_NAMES or doc[i].lower_ == "the"
                             or doc[i].text == "&" or doc[i].lower_ in _LEAD_VERBS
                             or (i == 0 or doc[i - 1].is_punct or "\n" in doc[i - 1].text_with_ws)
                             and doc[i].lower_.endswith(("ed", "ing")) and len(doc[i]) > 4):
                i += 1
            if i == h or h - i >= 5:
                continue
            words = [t for t in doc[i:h] if t.is_alpha]
            if not any(t.lower_ not in _GENERIC_RUN_WORDS and t.text not in _NOT_ORGS
                       for t in words):
                continue
            if not owner:
                owner = {k: sp for sp in spans for k in range(sp.start, sp.end)}
            inside = {(sp.start, sp.end): sp for k in range(i, h + 1)
                      if (sp := owner.get(k)) is not None}
            # NER's own start of an organisation ending at the head word wins
            ner_start = [sp.start for sp in inside.values() if sp.label_ == "ORG"
                         and sp.end == h + 1 and sp.start > i]
            if ner_start:
                i = ner_start[0]
                inside = {k: sp for k, sp in inside.items() if sp.end > i}
            # "Brackett Basin Pipeline and": a span running on only over a conjunction
            if any(sp.start < i or sp.end > h + 1 and not all(
                    t.lower_ in ("and", "&", "or") or t.is_punct for t in doc[h + 1:sp.end])
                   or (sp.start, sp.end) in ruled and sp.label_ != "ORG"
                   for sp in inside.values()):
                continue
            if len(inside) == 1 and next(iter(inside)) == (i, h + 1) \
                    and inside[(i, h + 1)].label_ == "ORG":
                continue
            dropped.update(inside)
            added.append(Span(doc, i, h + 1, label="ORG"))
        if not added:
            return spans
        kept = [sp for sp in spans if (sp.start, sp.end) not in dropped]
        return sorted(kept + added, key=lambda sp: sp.start)

    @staticmethod
    def _one_sense(doc: Doc, spans: list[Span], ruled: frozenset[tuple[int, int]],
                   ) -> list[Span]:
        """One sense per name per text: a name tagged ORG in most of its mentions in a thread
        (a rule's tag counts double) is an organisation in the others too, where NER called
        it a person or a place. A rule's tag itself is never changed; a majority of
        another type changes nothing (one-word product names split every way in mail)."""
        votes: dict[tuple[str, ...], Counter[str]] = {}
        for sp in spans:
            if sp.label_ in _SENSE_LABELS:
                w = 2 if (sp.start, sp.end) in ruled else 1
                votes.setdefault(tuple(t.text for t in sp), Counter())[sp.label_] += w
        winners: dict[tuple[str, ...], str] = {}
        for key, c in votes.items():
            if len(c) > 1:
                (top, k), = c.most_common(1)
                if top == "ORG" and k > sum(c.values()) - k:
                    winners[key] = top
        if not winners:
            return spans
        out: list[Span] = []
        for sp in spans:
            win = winners.get(tuple(t.text for t in sp))
            if win is not None and sp.label_ != win and sp.label_ in _SENSE_LABELS \
                    and (sp.start, sp.end) not in ruled:
                sp = Span(doc, sp.start, sp.end, label=win)
            out.append(sp)
        return out

    def _short_names(self, doc: Doc, spans: list[Span], text: str,
                     ruled: frozenset[tuple[int, int]]) -> list[Span]:
        """The first word of an organisation's name stands for it elsewhere in the thread:
        "Tremont" beside "Tremont Holdings", "Ordway" beside "Ordway Energy". Only a
        distinctive first word (not a given name, not generic, never part of a person's name
        in the text) of a name of two to four capitalised words; a rule's tag is kept."""
        person_words = {t.text for sp in spans if sp.label_ == "PERSON"
                        and (len(sp) > 1 or (sp.start, sp.end) in ruled) for t in sp}
        short: set[str] = set()
        for sp in spans:
            if sp.label_ != "ORG" or not 2 <= len(sp) <= 4 \
                    or not all(t.is_title and t.is_alpha for t in sp):
                continue
            if sp[-1].lower_ not in _ORG_WORDS and sp[-1].lower_ not in _RUN_HEADS \
                    and (sp.start, sp.end) not in ruled:
                continue  # "America Online", "Tea For Two": not plainly an organisation's name
            w = sp[0]
            if len(w) > 2 and w.lower_ not in _GENERIC_RUN_WORDS and w.lower_ not in NOT_NAMES \
                    and not w.is_stop and w.text not in self.given_names \
                    and w.text not in person_words and w.lower_ not in _LEAD_VERBS:
                short.add(w.text)
        if short:  # "Search", "Mouse": a word the text also writes in lowercase is common
            prose = _URL_RE.sub(" ", EMAIL_RE.sub(" ", text))
            lower = set(re.findall(r"(?<![\w.@/])[a-z][a-z'-]+\b", prose))
            short = {w for w in short if w.lower() not in lower}
        if not short:
            return spans
        owner = {k: sp for sp in spans for k in range(sp.start, sp.end)}
        relabel: set[tuple[int, int]] = set()
        added: list[Span] = []
        finder = re.compile(r"(?<![\w.@/-])(?:" + "|".join(map(re.escape, sorted(short)))
                            + r")(?![\w@-])")
        for m in finder.finditer(text):
            hit = doc.char_span(m.start(), m.end())
            if hit is None or len(hit) != 1:
                continue
            i = hit.start
            cur = owner.get(i)
            if cur is None:
                nxt = doc[i + 1] if i + 1 < len(doc) else None
                if nxt is not None and nxt.is_title and nxt.is_alpha \
                        and "\n" not in doc[i].text_with_ws:
                    continue  # "Tremont Street": part of another name
                added.append(Span(doc, i, i + 1, label="ORG"))
            elif (cur.start, cur.end) == (i, i + 1) and cur.label_ in ("PERSON", "PRODUCT") \
                    and (i, i + 1) not in ruled:
                relabel.add((i, i + 1))  # a place keeps its tag ("Trondheim College")
        if not added and not relabel:
            return spans
        out = [Span(doc, sp.start, sp.end, label="ORG") if (sp.start, sp.end) in relabel
               else sp for sp in spans]
        return sorted(out + added, key=lambda sp: sp.start)

    @staticmethod
    def _abbreviations(doc: Doc, spans: list[Span], text: str,
                       ruled: frozenset[tuple[int, int]], systems: set[str]) -> list[Span]:
        """The abbreviation of an organisation of the text is that organisation wherever it
        stands: one given in brackets ("Harmon Water Commission (HWC)", "HWC (Harmon Water
        Commission)") or spelled by the initials of its words ("Enron North America" ->
        "ENA", three letters or more)."""
        n = len(doc)
        abbrevs: set[str] = set()
        for sp in spans:
            if sp.label_ != "ORG":
                continue
            if sp.end + 2 < n and doc[sp.end].text == "(" and doc[sp.end + 2].text == ")":
                abbrevs.add(doc[sp.end + 1].text)
            if sp.start >= 2 and doc[sp.start - 1].text == "(" and sp.end < n \
                    and doc[sp.end].text == ")":
                abbrevs.add(doc[sp.start - 2].text)
            if len(sp) >= 3 or len(sp) == 2 and sp[1].is_title:
                ini = _initials(sp)
                if len(ini) >= 3 and ini.isupper():
                    abbrevs.add(ini)
        abbrevs = {a for a in abbrevs if 2 <= len(a) <= 6 and a.isalpha() and a.isupper()
                   and a not in _NOT_ORGS and a not in systems and a not in _US_STATES
                   and a not in _TIME_ZONES}
        if not abbrevs:
            return spans
        owner = {k: sp for sp in spans for k in range(sp.start, sp.end)}
        relabel: set[tuple[int, int]] = set()
        added: list[Span] = []
        finder = re.compile(r"(?<![\w.@/-])(?:" + "|".join(map(re.escape, sorted(abbrevs)))
                            + r")(?![\w@-])")
        for m in finder.finditer(text):
            hit = doc.char_span(m.start(), m.end())
            if hit is None or len(hit) != 1:
                continue
            cur = owner.get(hit.start)
            if cur is None:
                added.append(Span(doc, hit.start, hit.end, label="ORG"))
            elif (cur.start, cur.end) == (hit.start, hit.end) and cur.label_ != "ORG" \
                    and cur.label_ in _SENSE_LABELS and (cur.start, cur.end) not in ruled:
                relabel.add((cur.start, cur.end))
        if not added and not relabel:
            return spans
        out = [Span(doc, sp.start, sp.end, label="ORG") if (sp.start, sp.end) in relabel
               else sp for sp in spans]
        return sorted(out + added, key=lambda sp: sp.start)

    @staticmethod
    def _acronym_contexts(doc: Doc, spans: list[Span], text: str, systems: set[str],
                          ) -> list[Span]:
        """A word in capitals that NER left untagged is an organisation after "at" or "from"
        ("she works at JPL", "two people from NASA"), unless it is a common abbreviation, a
        state or time zone, a system of the text, or a word of a line in capitals."""
        taken: set[int] | None = None
        added: list[Span] = []
        for m in _CONTEXT_ACRONYM.finditer(text):
            sp = doc.char_span(m.start(2), m.end(2))
            if sp is None or len(sp) != 1:
                continue
            tok = sp[0]
            word = tok.text
            if word in _NOT_ORGS or word in _US_STATES or word in _TIME_ZONES \
                    or word in systems or word.lower() in NOT_NAMES:
                continue
            if taken is None:
                taken = {k for s in spans for k in range(s.start, s.end)}
            if tok.i in taken or _shouted(doc, tok.i):
                continue
            nxt = doc[tok.i + 1] if tok.i + 1 < len(doc) else None
            if nxt is not None and (nxt.like_num or nxt.is_title or nxt.is_upper) \
                    and "\n" not in tok.text_with_ws:
                continue  # "from AM 10", "at ABC Supply": part of something longer
            added.append(Span(doc, tok.i, tok.i + 1, label="ORG"))
        if not added:
            return spans
        return sorted(spans + added, key=lambda sp: sp.start)

    def __call__(self, doc: Doc) -> Doc:
        keep: list[Span] = []
        text = doc.user_data.get(TEXT_KEY) or doc.text
        systems = self._systems(doc)
        ruled = frozenset((a, b) for a, b in doc.user_data.get(RULED_KEY) or ())
        attached = [(m.start(), m.end()) for m in _ATTACHMENT.finditer(text)]
        for ent in doc.ents:
            if ent.label_ in _DROP_LABELS:
                continue
            if ent.label_ in ("ORG", "PRODUCT", "GPE", "PERSON") and ent.text in systems:
                continue
            if attached and ent.label_ in _NAME_LABELS and any(
                    a <= ent.start_char and ent.end_char <= b for a, b in attached):
                continue  # "<< File: EPA summary.xls >>": a file name, not a mention
            span = self._clean(ent, ruled)
            if span is not None:
                keep.append(span)
        keep = self._states(doc, keep)
        keep = self._join_of(doc, keep)
        keep = self._one_word_senses(doc, keep, text, ruled)
        keep = self._org_runs(doc, keep, text, ruled)
        keep = self._one_sense(doc, keep, ruled)
        keep = self._short_names(doc, keep, text, ruled)
        keep = self._abbreviations(doc, keep, text, ruled, systems)
        keep = self._acronym_contexts(doc, keep, text, systems)
        keep = filter_spans(self._propagate(doc, keep, text))  # never two entities on one token
        if attached:
            keep = [sp for sp in keep if sp.label_ not in _NAME_LABELS or not any(
                a <= sp.start_char and sp.end_char <= b for a, b in attached)]
        doc.set_ents(keep, default="outside")
        return doc
