"""grex's spaCy components: rules before the statistical NER, clean-up after it.

``grex_rules`` (before ``ner``) marks what rules know better than the model, so that NER
predicts around it: email addresses, URLs, phone numbers and ticket ids (regular
expressions), the people of the thread (their display names, first or last name alone when
only one person in the thread has it, names read from header lines in the text), the
organisations behind the thread's mail domains, and a shipped gazetteer of well-known places
and organisations. Per-text seeds travel in ``doc.user_data["grex_seeds"]`` (plain lists,
so they survive ``n_process`` workers).

The rules also take: a signature's company line (between its people and its street address)
as an ORG, also where it stands as a header display name; names before a legal form (Inc,
Corp, LLC, ...); capitalised words that spell a mail domain; initials signing a message.

``grex_post`` (after ``ner``) cuts entities at line breaks, strips greetings and sign-offs,
and drops weekday names, mail header words and lowercase junk. For organisations it also
drops acronyms the text uses as computer systems, common abbreviations (CEO, FYI, PDF, MW),
words of all-capital lines, departments named by their function, names inside attachment
markers and one-word names the text also writes in lowercase; it turns an ORG led by a
common given name into a PERSON, a name ending in an organisation word (Systems, Commission)
into an ORG, an unknown word in capitals into an ORG, facility names (Compressor Station,
Hub) into FAC, and a state code after a place ("Austin, TX") into a GPE. Organisations also
come from general mechanisms: capitalised runs ending in a head word ("Kestrel Valley
Electric"), one ORG sense per name per thread, the first word of an organisation's name
standing for it, abbreviations (bracketed, or the initials of an organisation of the
thread) and words in capitals after "at" / "from".

This module imports spaCy: import it only from inside the extraction functions.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from importlib import resources
from typing import Any

from spacy.language import Language
from spacy.matcher import PhraseMatcher
from spacy.tokens import Doc, Span
from spacy.util import filter_spans

from grex.extract.names import (
    EMAIL_RE,
    NOT_NAMES,
    RELATIVE_DAYS,
    WEEKDAYS,
    domain_orgs,
    header_names,
    name_from_address,
    name_variants,
    name_words,
    normalise_email,
    signature_orgs,
)

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


@Language.factory("grex_rules", default_config={"gazetteer": True})
def make_rules(nlp: Language, name: str, gazetteer: bool) -> GrexRules:
    return GrexRules(nlp, gazetteer=gazetteer)


@Language.factory("grex_post")
def make_post(nlp: Language, name: str) -> GrexPost:
    return GrexPost()


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


_FILE_NAME = re.compile(r"\.\s?(?:docx?|xlsx?|pptx?|pdf|txt|zip|csv|jpe?g|png|gif|html?)\b",
                        re.IGNORECASE)
# Head nouns of documents, requests and meetings: an "organisation" ending in one of these is
# a title ("Operations & Maintenance Agreement", "Contract Review").
_DOCUMENT_HEADS = frozenset((
    "proposal", "proposals", "agreement", "agreements", "application", "applications",
    "request", "requests", "review", "reviews", "report", "reports", "update", "updates",
    "meeting", "meetings", "schedule", "schedules", "migration", "presentation", "memo",
    "draft", "plan", "plans", "training", "timeframes", "timeline", "letter", "letters",
    "contract", "contracts", "invoice", "invoices", "minutes", "agenda", "summary", "form",
    "forms", "spreadsheet", "checklist",
    # more of the same kinds, from general office usage
    "policy", "policies", "procedure", "procedures", "guidelines", "project", "projects",
    "conference", "call", "notice", "list", "lists", "database", "file", "files", "manual",
    "handbook", "newsletter", "announcement", "filing", "filings", "tariff", "tariffs",
    "workshop", "seminar", "session", "sessions", "survey", "study", "model", "models",
    "deal", "deals", "transaction", "transactions", "amendment", "amendments", "addendum",
    "confirmation", "confirmations", "statement", "statements", "worksheet", "template",
    "memorandum", "budget", "forecast", "lunch", "dinner", "party", "issue", "issues",
))
# Functions of a company: an "organisation" made only of these ("Marketing", "Gas Scheduling",
# "Legal and Regulatory Affairs") is a department named by its work, not an organisation's
# name.
_DEPARTMENT_WORDS = frozenset((
    "planning", "marketing", "logistics", "legal", "trading", "accounting", "finance",
    "financial", "operations", "sales", "engineering", "research", "risk", "treasury", "tax",
    "compliance", "audit", "hr", "origination", "structuring", "scheduling", "settlements",
    "credit", "contracts", "facilities", "regulatory", "affairs", "human", "resources",
    "information", "technology", "management", "development", "business", "gas", "power",
    "and", "&", "of", "the", "back", "front", "office", "middle", "group", "team", "desk",
    "department", "dept", "dept.", "unit", "services", "support", "administration",
    "communications", "public", "relations", "investor", "procurement", "purchasing",
    "strategy", "analysis", "analytics", "reporting", "security", "maintenance", "fac", "fac.",
))
# Words that make a name an organisation's even after a given name ("Mark Anthony Partners").
_ORG_WORDS = frozenset((
    "inc", "corp", "corporation", "co", "company", "llc", "llp", "lp", "ltd", "limited", "plc",
    "group", "partners", "associates", "energy", "services", "bank", "capital", "holdings",
    "brothers", "bros", "foundation", "university", "college", "institute", "fund", "trust",
    "international", "industries", "systems", "solutions", "technologies", "consulting",
    "resources", "power", "gas", "oil", "petroleum", "pipeline", "securities", "investments",
    "management", "media", "press", "news", "airlines", "motors", "labs", "school", "club",
))
# Abbreviations of titles, office jargon, file types, computing and units that NER calls
# ORG on their own ("the CEO", "the RAM", "FYI", "50 MW"): general knowledge, none of them
# names a particular organisation.
_COMMON_ABBREVIATIONS = (
    "CEO CFO COO CTO CIO CAO CCO VP SVP EVP AVP GM MD IT FYI ASAP TBD TBA ETA EOD COB YTD MTD "
    "QTD FAQ IMHO IMO BTW NB PS RSVP AKA NDA RFP RFQ ROI KPI EBITDA EPS IPO LOI MOU SOW GAAP "
    "PDF XLS DOC PPT CSV ZIP HTML XML SQL HTTP FTP URL API GUI CPU RAM ROM DOS OS LAN WAN VPN "
    "DSL USB CD DVD TV PC PDA GPS SMS ID PIN SSN ASCII SCSI IRQ DMA UART FIFO IDE BIOS GIF "
    "JPEG MW MWH GWH KW KWH BCF MCF MMCF BBL BPD MMBTU DTH "
    # trading and utility jargon, and office shorthand
    "OTC LDC LNG LPG NGL CNG BTU MDQ ROFR PPA MTM PNL VAR NPV IRR WACC EFP PO SLA QA QC ISP "
    "IM AM PM NA HQ RE FW FWD CC BCC"
)
_NOT_ORGS = frozenset(_COMMON_ABBREVIATIONS.split())
# Last words that make a name an organisation's, whatever NER called it.
_ORG_HEADS = frozenset((
    "inc", "corp", "corporation", "company", "co", "llc", "ltd", "limited", "plc", "group",
    "partners", "associates", "services", "systems", "energy", "bank", "capital", "holdings",
    "industries", "technologies", "securities", "airlines", "foundation", "institute",
    "university", "college", "commission", "council", "association", "authority", "agency",
    "board", "department", "ministry", "committee", "society", "union", "federation",
))
_STREET_WORDS = frozenset(("street", "st", "avenue", "ave", "boulevard", "blvd", "road", "rd",
                           "parkway", "pkwy", "drive", "dr", "lane", "ln", "highway", "hwy",
                           "plaza", "square", "freeway", "expressway", "box"))
_TIME_ZONES = frozenset((
    "UTC", "GMT", "BST", "CET", "CEST", "EET", "PST", "PDT", "MST", "MDT", "CST", "CDT",
    "EST", "EDT", "AST", "HST", "AKST", "AKDT", "IST", "JST", "AEST",
))
# Head words of plants and pipeline facilities: "Walden Compressor Station", "Henry Hub".
_FACILITY_WORDS = frozenset(("compressor", "station", "plant", "refinery", "terminal", "hub",
                             "substation"))
# Nouns that make the acronym before them a computer system, not an organisation:
# "the ZMS system", "ZMS training", "the QRT tab", "QRT and ZMS records".
_SYSTEM_NOUNS = frozenset((
    "system", "systems", "tab", "tabs", "record", "records", "database", "databases",
    "screen", "screens", "training", "software", "module", "modules", "login", "password",
    "interface",
))
_QUOTE_MARKS = re.compile(r"[>|]+")  # "> Thinking Machines Corp.": quoting, not the name
_ACRONYM = re.compile(r"(?<![\w.@/-])[A-Z]{2,6}(?![\w@-])")
# Verbs of data entry: "volumes entered into ZMS" is a system too.
_ENTRY_VERBS = frozenset((
    "input", "inputs", "enter", "enters", "entered", "entering", "key", "keyed", "load",
    "loaded", "upload", "uploaded", "import", "imported", "post", "posted",
))
_STATE_CODES = (
    "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV "
    "NH NJ NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY")
_US_STATES = frozenset(_STATE_CODES.split())
# -- organisations by general mechanisms (heads, abbreviations, contexts, one sense) --------
# Head words that end an organisation's name: a run of capitalised words ending in one of
# these is an organisation when at least one of its other words is not a generic word
# ("Southwestern Public Service", "Kestrel Valley Electric", but not "Risk Management Group").
_RUN_HEADS = _ORG_HEADS - {"systems", "department", "board", "union", "society", "group"} | {
    "exchange", "commission", "committee", "pipeline", "transmission", "utilities", "electric",
    "service", "trust", "fund", "bureau", "coalition", "consortium", "cooperative", "partnership",
    "laboratory", "laboratories", "railroad", "railway", "airways", "insurance", "bancorp",
}
# Generic words that don't make a run a name on their own ("Public Service", "Natural Gas").
_GENERIC_RUN_WORDS = _DEPARTMENT_WORDS | _ORG_WORDS | _RUN_HEADS | {
    "national", "federal", "state", "city", "county", "general", "united", "american",
    "natural", "electric", "public", "private", "new", "first", "central", "global", "world",
    "executive", "advisory", "steering", "standing", "special", "joint", "our", "your", "my",
    "this", "that", "these", "a", "an", "all", "every", "each", "customer", "employee", "staff",
    "energy", "utility", "utilities", "transmission", "pipeline", "water", "oil", "electricity",
    "north", "south", "east", "west", "northern", "southern", "eastern", "western", "pacific",
    "atlantic", "gulf", "mid", "great", "royal", "international", "continental",
}
# Words that start a sentence before a name rather than belong to it ("Welcome Harlan
# Utilities", "Called Tremont Holdings"): greetings, and the verbs of mail.
_LEAD_VERBS = frozenset((
    "welcome", "call", "called", "ask", "asked", "tell", "told", "send", "sent", "see", "saw",
    "contact", "contacted", "email", "emailed", "phone", "phoned", "meet", "met", "visit",
    "visited", "per", "via", "attached", "re", "cc", "to", "from", "for", "with", "at", "by",
))
# Prepositions after which a word in capitals is an organisation ("works at JPL", "a man
# from NASA"): measured on 20news, these two mostly precede an organisation; with, for, of,
# to mostly precede a product or a unit.
_ORG_CONTEXT = frozenset(("at", "from"))

_RUN_HEADS_RE = re.compile(r"\b(?:" + "|".join(sorted(w.title() for w in _RUN_HEADS))
                           + r")\b")
_SENSE_LABELS = frozenset(("ORG", "PERSON", "GPE", "LOC", "FAC", "PRODUCT", "NORP"))
_CONTEXT_ACRONYM = re.compile(r"(?<![\w.@/-])(at|from)[ \t]+([A-Z]{2,6})(?![\w@&.'-])")


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
