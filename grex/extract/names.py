"""Names from headers: the seeds that tell the rules who the people in a thread are.

Pure functions, no spaCy. ``header_names`` reads From/To/Cc lines written into a text (a
forwarded block, an Outlook "Original Message", a Lotus Notes "From: Name/HOU/ECT@ECT"),
``name_variants`` turns a display name into the token sequences that the rules look for,
``domain_orgs`` turns mail domains into organisation names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


GREETINGS = _words("""
    hi hello hey dear hiya howdy greetings morning afternoon evening good thanks thank
    thx tks ty regards best cheers sincerely yours cordially respectfully warm warmest
    kind kindest love take care fyi fw fwd re attn attention ps p.s. pls please ok okay
    yes no sorry team all folks everyone guys gentlemen ladies sir madam
""")
WEEKDAYS = _words("""
    monday tuesday wednesday thursday friday saturday sunday mon tue tues wed thu thur
    thurs fri sat sun
""")
MONTHS = _words("""
    january february march april may june july august september october november
    december jan feb mar apr jun jul aug sep sept oct nov dec
""")
RELATIVE_DAYS = _words("""
    today tomorrow yesterday tonight weekend
""")
# Header field names and mail words that NER likes to call PERSON or ORG.
MAIL_WORDS = _words("""
    from to cc bcc subject sent date forwarded original message reply importance
    attachment attachments attached email e-mail mail inbox outlook draft suite asap urgent
    confidential
""")
GENERIC_DOMAINS = _words("""
    gmail googlemail yahoo hotmail outlook live msn aol icloud me mac mail email gmx web
    protonmail proton yandex zoho fastmail comcast verizon att sbc earthlink juno
    netscape excite compuserve prodigy mindspring example localhost test invalid
""")
# Second-level labels that are not the organisation (co.uk, com.au, ...).
_SLD = _words("""
    co com org net ac gov edu ne or go mil
""")
NOT_NAMES = GREETINGS | WEEKDAYS | MONTHS | RELATIVE_DAYS | MAIL_WORDS

_HEADER_LINE = re.compile(
    r"^[ \t>]*(?:x\s*-\s*)?(?:from|to|cc|bcc|sent\s+by|reply\s*-?\s*to)\s*:[ \t]*(.*)$",
    re.IGNORECASE | re.MULTILINE,
)
_ANGLE = re.compile(r"<[^<>\n]*>?|\([^()\n]*\)|\[[^\[\]\n]*\]|[\"']")
EMAIL_RE = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][\w.+'-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"
)
_WORD = re.compile(r"[^\W\d_][\w'.-]*", re.UNICODE)


def _clean_name(raw: str) -> str:
    s = _ANGLE.sub(" ", raw)
    if "/" in s:  # Lotus Notes: "Kendra Terhune/HOU/EES@EES" -> "Kendra Terhune"
        s = s.split("/", 1)[0]
    if "@" in s:
        s = " ".join(w for w in s.split() if "@" not in w)
    s = re.sub(r"\s+", " ", s).strip(" ,;:.-")
    return s


def split_name_list(value: str) -> list[str]:
    """Split a header value into display names ("Last, First" pairs are put back together)."""
    out: list[str] = []
    parts: list[str] = []
    for part in re.split(r"[;\n]", value):
        # Lotus Notes lists: "Gulay Soykok/ENRON@enronXgate, Sean Riordan/HOU/ECT@ECT"
        parts.extend(part.split(",") if "/" in part else [part])
    for part in parts:
        part = _clean_name(part)
        if not part:
            continue
        chunks = [c.strip() for c in part.split(",") if c.strip()]
        i = 0
        while i < len(chunks):
            c = chunks[i]
            nxt = chunks[i + 1] if i + 1 < len(chunks) else ""
            if len(c.split()) == 1 and nxt and 1 <= len(nxt.split()) <= 3:
                out.append(f"{c}, {nxt}")  # "Allen, Phillip K."
                i += 2
            else:
                out.append(c)
                i += 1
    return [n for n in out if _looks_like_name(n)]


def _looks_like_name(name: str) -> bool:
    words = _WORD.findall(name)
    if not words or len(words) > 6:
        return False
    if re.search(r"\s[-&]\s|\d|\b(?:DL|IT|HR|Team|Group|Dept|List)\b", name):
        return False  # distribution lists and departments ("DL - IT Calgary") are not people
    if all(w.lower().strip(".") in NOT_NAMES for w in words):
        return False
    return any(w[0].isupper() for w in words)


def header_names(text: str) -> tuple[list[str], list[str]]:
    """Display names and addresses from header-like lines written in ``text``."""
    names: list[str] = []
    addrs: list[str] = []
    for m in _HEADER_LINE.finditer(text):
        value = m.group(1)
        addrs.extend(normalise_email(a) for a in EMAIL_RE.findall(value))
        names.extend(split_name_list(value))
    return names, addrs


def normalise_email(addr: str) -> str:
    return re.sub(r"\s+", "", addr).lower()


def name_from_address(addr: str) -> str:
    """"kerry.mcguire@example.com" -> "Kerry Mcguire"; "" when the local part isn't a name."""
    local = addr.split("@", 1)[0]
    parts = [p for p in re.split(r"[._]+", local) if p]
    if len(parts) < 2 or not all(p.isalpha() and len(p) >= 2 for p in parts[:2]):
        return ""
    return " ".join(p.capitalize() for p in parts[:3])


def name_words(name: str) -> list[str]:
    """The words of a display name in natural order ("Allen, Phillip K." -> Phillip K. Allen)."""
    if "," in name:
        last, _, first = name.partition(",")
        name = f"{first.strip()} {last.strip()}"
    return [w for w in _WORD.findall(name) if w]


def name_variants(name: str) -> tuple[list[tuple[str, ...]], str, str]:
    """Token sequences (lowercased) that mention this person, plus first and last name.

    "Allen, Phillip K." -> [("phillip","k.","allen"), ("phillip","allen"),
    ("allen",",","phillip"), ("allen",",","phillip","k.")], "phillip", "allen".
    """
    words = name_words(name)
    if not words:
        return [], "", ""
    low = [w.lower() for w in words]
    real = [w for w in low if len(w.rstrip(".")) > 1]  # drop initials for first/last
    first = real[0] if real else ""
    last = real[-1] if len(real) > 1 else ""
    seqs: set[tuple[str, ...]] = set()
    if len(low) > 1:
        seqs.add(tuple(low))
    if first and last:
        seqs.add((first, last))
        seqs.add((last, ",", first))
        seqs.add((last, ",", *low[:-1]))
        seqs.add((first, *low[1:-1], last))
    return [s for s in seqs if len(s) > 1], first, last


def domain_org(addr: str) -> str:
    """The organisation label of a mail domain ("k@us.arthurandersen.com" -> "arthurandersen")."""
    domain = addr.rsplit("@", 1)[-1].lower().strip(".")
    labels = [x for x in domain.split(".") if x]
    if len(labels) < 2:
        return ""
    labels = labels[:-1]  # drop the TLD
    if len(labels) > 1 and labels[-1] in _SLD:
        labels = labels[:-1]
    org = labels[-1]
    if org in GENERIC_DOMAINS or len(org) < 3 or not org.isalpha():
        return ""
    return org


def domain_orgs(addresses: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for a in addresses:
        o = domain_org(a)
        if o and o not in seen:
            seen.append(o)
    return seen


# A postal address line in a signature: "214 West 9th Street New York, NY 10011",
# "P.O. Box 1188", "Suite 400": a house number then a capitalised word, or a box / suite.
_ADDRESS_LINE = re.compile(
    r"^\s*(?:\d{1,6}[A-Za-z]?\s+(?:[NSEW]\.?\s+)?[A-Z0-9][\w.]*(?:\s+\S+){1,12}"
    r"|P\.?\s?O\.?\s+Box\s+\d+.*|Suite\s+\d+.*)$"
)
_STREET = re.compile(r"\b(?:Street|St|Avenue|Ave|Boulevard|Blvd|Road|Rd|Parkway|Pkwy|Drive|Dr|"
                     r"Lane|Ln|Way|Highway|Hwy|Plaza|Square|Place|Pl|Floor|Suite|Box)\b\.?")
_SIG_WORD = re.compile(r"[A-Z][\w&'.-]*|&|of|and|the|de|la")


# Words of job titles: a title line above an address is not the company.
JOB_WORDS = _words("""
    president vice chief officer director manager managing head lead senior junior sr sr. jr
    analyst engineer counsel attorney assistant associate specialist consultant coordinator
    administrator representative executive secretary buyer trader scientist professor dean
    chairman chair ceo cfo coo cto vp svp evp md gm supervisor principal intern student
""")


def signature_orgs(text: str, given_names: frozenset[str] = frozenset()) -> list[str]:
    """Company lines of signature blocks: the line just above a postal address line, when
    the line above it is itself a short name or title line ("Roy Baxter / Blue Heron Antiques /
    214 West 9th Street ..."): in a signature the company sits between the people and
    their address. A person's own home address ("Kerry McGuire / 12 Elm Street") has no
    such line above the name, so it is not taken; nor is a line led by a given name (a second
    person) or holding a job title ("Senior Buyer")."""
    lines = text.splitlines()
    out: list[str] = []
    for i in range(2, len(lines)):
        addr = lines[i]
        if not (_ADDRESS_LINE.match(addr) and _STREET.search(addr)):
            continue
        cand, above = lines[i - 1].strip(), lines[i - 2].strip()
        if not _short_caps_line(cand) or not _short_caps_line(above) or cand == above:
            continue
        words = cand.split()
        if words[0] in given_names or any(w.lower().strip(".,") in JOB_WORDS for w in words):
            continue  # a second person, or a job title, sits above the address
        if cand not in out:
            out.append(cand)
    return out


def _short_caps_line(line: str) -> bool:
    words = line.split()
    if not 1 <= len(words) <= 5 or any(c.isdigit() for c in line) or "@" in line:
        return False
    if not all(_SIG_WORD.fullmatch(w) for w in words):
        return False
    return not all(w.lower().strip(".") in NOT_NAMES for w in words)
