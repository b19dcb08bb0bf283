"""Pure text helpers for the exported site: hashing permalinks, escaping email text,
redaction, file-name sanitizing and the tokenizer shared with the in-browser search.

Everything that comes out of an email is attacker-controlled. The rule here is simple: email
text is escaped first, then the only markup ever added is ``<a href="http(s)://...">`` for
bare URLs, and the result goes through nh3 with an allow-list of just that, as a second
line of defence.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

import nh3
from markupsafe import Markup, escape

# ---------------------------------------------------------------- permalinks and slugs


def digest(value: str, n: int = 16) -> str:
    """The first ``n`` hex digits of sha1(value): stable, short, and reveals nothing."""
    return hashlib.sha1(value.encode("utf-8", "surrogatepass")).hexdigest()[:n]


def thread_slug(root_message_id: str) -> str:
    """A thread's permalink key, from its root Message-ID (not the store's thread id, which a
    merge can change)."""
    return digest(root_message_id.strip().strip("<>").lower())


def message_slug(message_id: str) -> str:
    """A message's permalink key (m/KEY.html): sha1 of its Message-ID without the angle
    brackets, as sent (case kept), first 16 hex digits."""
    return digest(message_id.strip().strip("<>"))


def person_slug(key: str, salt: str = "") -> str:
    """A person's page key, from their (lowercased) address, or name when there is none.
    With a ``salt`` (kept out of the site, used with --redact) the key can't be checked
    against a guessed address."""
    prefix = f"person:{salt}:" if salt else "person:"
    return digest(prefix + key.strip().lower())


_SLUG_STRIP = re.compile(r"[^a-z0-9]+")


def slugify(label: str, *, fallback_key: str | None = None, max_len: int = 48) -> str:
    """``"Mail Threading!"`` -> ``"mail-threading"``; falls back to a digest when nothing is
    left (non-Latin labels), so two labels never collide through an empty slug."""
    folded = fold(label)
    slug = _SLUG_STRIP.sub("-", folded).strip("-")[:max_len].strip("-")
    return slug or digest(fallback_key or label, 12)


# ---------------------------------------------------------------- tokenizer (mirrored in JS)

# Kept deliberately small: the same list ships inside the search index so the browser drops
# the same words from a query (see grex/static/search.js).
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "from",
        "has",
        "have",
        "he",
        "her",
        "his",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "re",
        "she",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "which",
        "who",
        "will",
        "with",
        "would",
        "you",
        "your",
    ]
)

_TOKEN = re.compile(r"[^\W_]+")
MIN_TOKEN, MAX_TOKEN = 2, 32


def fold(text: str) -> str:
    """Lowercase, compatibility-normalize and strip accents ("Accentué" -> "accentue").
    search.js does the same with ``normalize("NFKD")`` and ``/\\p{M}/gu``."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def tokens(text: str) -> list[str]:
    """Index terms of ``text``, in order, with repeats: folded words of 2-32 letters/digits,
    stop words removed."""
    return [
        t
        for t in _TOKEN.findall(fold(text))
        if MIN_TOKEN <= len(t) <= MAX_TOKEN and t not in STOPWORDS
    ]


# ---------------------------------------------------------------- redaction

EMAIL_MASK = "[email]"
PHONE_MASK = "[phone]"

_EMAIL = re.compile(
    r"(?<![\w.+-])[\w.+-]{1,64}@(?:[\w-]{1,63}\.)+[\w-]{2,63}(?![\w-])",
)
# Candidates: optional +CC, optional (area), then 2-4 digit groups joined by space . or -.
_PHONE = re.compile(
    r"(?<![\w+.-])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,5}\)[\s.-]?)?\d{2,5}(?:[\s.-]\d{2,8}){1,5}"
    r"(?![\w-]|\.\d)"
)
_DATE_LIKE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")
_DOTTED_QUAD = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_YEARS = re.compile(r"(?:19|20)\d\d(?:[\s.-]+(?:19|20)\d\d)+")


def _phone_or_keep(m: re.Match[str]) -> str:
    s = m.group(0)
    digits = sum(c.isdigit() for c in s)
    if not 7 <= digits <= 15:
        return s
    if _DATE_LIKE.fullmatch(s) or _DOTTED_QUAD.fullmatch(s):
        return s
    # Plain runs like "2009 2010 2011" (years, counts) have no phone shape: a phone number
    # either starts with + or "(", or has at least one group of 3+ digits after the first.
    if not (s.startswith(("+", "(")) or re.search(r"[\s.-]\d{3,}", s)):
        return s
    if _YEARS.fullmatch(s):
        return s
    return PHONE_MASK


def redact(text: str) -> str:
    """Mask email addresses and phone numbers in ``text``."""
    if not text:
        return text
    text = _EMAIL.sub(EMAIL_MASK, text)
    return _PHONE.sub(_phone_or_keep, text)


# ---------------------------------------------------------------- email text -> safe HTML

_URL = re.compile(r"\bhttps?://[^\s<>\"'`]+", re.IGNORECASE)
_TRAILING = ".,;:!?)]}'\""
LINK_REL = "nofollow noopener noreferrer"


def email_html(text: str) -> Markup:
    """Email text as HTML: every character escaped, bare http(s) URLs made into links, then
    sanitized by nh3 with only ``<a href>`` (http/https) allowed. Newlines are kept; the
    template shows the block with ``white-space: pre-wrap``."""
    out: list[str] = []
    pos = 0
    for m in _URL.finditer(text):
        url = m.group(0)
        trimmed = url.rstrip(_TRAILING)
        end = m.start() + len(trimmed)
        out.append(str(escape(text[pos : m.start()])))
        out.append(f'<a href="{escape(trimmed)}">{escape(trimmed)}</a>')
        pos = end
    out.append(str(escape(text[pos:])))
    cleaned = nh3.clean(
        "".join(out),
        tags={"a"},
        attributes={"a": {"href"}},
        url_schemes={"http", "https"},
        link_rel=LINK_REL,
        strip_comments=True,
    )
    return Markup(cleaned)


_PATCH_START = re.compile(r"^(diff --git |diff -[urN]+ |Index: \S|--- a/|---\s*$)")
_PATCH_BODY = re.compile(r"^(@@ |diff |\+\+\+ )", re.MULTILINE)


def split_patch(text: str) -> tuple[str, str]:
    """``(prose, patch)``: a message carrying a patch shows it in a fixed-width block. The
    patch starts at the first ``diff``/``---``/``Index:`` line followed by a hunk."""
    lines = text.splitlines(keepends=True)
    offset = 0
    for line in lines:
        if _PATCH_START.match(line) and _PATCH_BODY.search(text, offset):
            return text[:offset], text[offset:]
        offset += len(line)
    return text, ""


# ---------------------------------------------------------------- attachment file names

# Extensions that browsers and static hosts treat as inert downloads or plain documents.
# Anything else (html, svg, xml, js, ...) gets ".bin" appended, so a hostile attachment can
# never be served as a page in the site's origin.
SAFE_EXTENSIONS = frozenset(
    [
        "7z",
        "bz2",
        "csv",
        "diff",
        "doc",
        "docx",
        "eml",
        "gif",
        "gz",
        "ics",
        "jpeg",
        "jpg",
        "json",
        "log",
        "md",
        "mp3",
        "mp4",
        "odp",
        "ods",
        "odt",
        "ogg",
        "patch",
        "pdf",
        "png",
        "ppt",
        "pptx",
        "rtf",
        "tar",
        "tgz",
        "tif",
        "tiff",
        "txt",
        "wav",
        "webp",
        "xls",
        "xlsx",
        "xz",
        "zip",
    ]
)
_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str, *, max_len: int = 80) -> str:
    """A file name safe on any file system and host: ASCII letters, digits, ``. _ -``; no
    leading dots; bounded; an inert extension (else ``.bin`` is added)."""
    folded = unicodedata.normalize("NFKD", name)
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    folded = folded.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _BAD_NAME_CHARS.sub("_", folded).strip("._ ") or "attachment"
    stem, dot, ext = cleaned.rpartition(".")
    if not dot:
        stem, ext = cleaned, ""
    ext = ext.lower()
    if ext not in SAFE_EXTENSIONS:
        stem, ext = cleaned, "bin"
    stem = stem[: max_len - len(ext) - 1].rstrip("._") or "attachment"
    return f"{stem}.{ext}"


def human_size(n: int) -> str:
    """``1536`` -> ``"1.5 KB"``."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
