"""Parse raw bytes into a Message: pure functions, no I/O.

Every header, body, filename and HTML part is treated as hostile: values are decoded
leniently, control characters dropped, lengths bounded, HTML turned into text by a converter
that drops scripts and styles (never rendered). mail-parser does the MIME work; when it fails
outright the stdlib parser takes over and the failure is recorded as a defect. Only input that
is not an RFC 5322 message at all raises ParseError (the caller quarantines it).
"""

from __future__ import annotations

import base64
import contextlib
import email
import email.policy
import hashlib
import html
import logging
import re
import unicodedata
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.utils import getaddresses, parsedate_to_datetime
from html.parser import HTMLParser
from typing import Any

from grex.errors import ParseError
from grex.models import Address, Attachment, Body, Message

MAX_HEADER = 2_000  # characters kept of a decoded header value
MAX_BODY = 1_000_000  # characters kept of a body (longer: truncated, noted)
MAX_FILENAME = 200
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
_HEADER_CONTROL = re.compile(r"[\x00-\x1f\x7f\u202a-\u202e\u2066-\u2069]+")
_MSGID = re.compile(r"<([^<>\s]+)>")
_WS = re.compile(r"\s+")


# ---------------------------------------------------------------- small helpers


def clean_header(value: Any, limit: int = MAX_HEADER) -> str:
    """A header value as one line of text: RFC 2047 decoded, controls removed, bounded."""
    if value is None:
        return ""
    if not isinstance(value, str):
        value = str(value)
    if "=?" in value:
        with contextlib.suppress(Exception):  # hostile encoded-words: keep the raw text
            value = str(make_header(decode_header(value)))
    value = _HEADER_CONTROL.sub(" ", value)
    return _WS.sub(" ", value).strip()[:limit]


def clean_text(text: str) -> str:
    """Body text: newlines normalized, control and bidi-override characters removed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", text)


def normalize_message_id(value: str | None) -> str:
    """The first ``<id>`` in a header value, without brackets; a bare token is accepted."""
    if not value:
        return ""
    value = clean_header(value)
    m = _MSGID.search(value)
    if m:
        return m.group(1)
    token = value.strip().strip("<>").strip()
    return token if token and " " not in token else ""


def parse_id_list(value: str | None) -> tuple[str, ...]:
    """Message-IDs in References / In-Reply-To. Ids without '@' (like ``<yes>``) are dropped."""
    if not value:
        return ()
    value = clean_header(value, limit=100_000)
    ids = _MSGID.findall(value)
    if not ids:
        ids = [t for t in value.split() if "@" in t]
    out: list[str] = []
    for i in ids:
        i = i.strip()
        if "@" in i and i not in out:
            out.append(i)
    return tuple(out)


def normalize_address(name: str, addr: str) -> Address | None:
    name = clean_header(name, 300).strip().strip('"').strip("'").strip()
    addr = clean_header(addr, 320).strip().strip("<>").strip().lower()
    if addr and ("@" not in addr or " " in addr):
        # not an address (a group name, a bare word): keep it as a name
        name, addr = name or addr, ""
    if name.lower() == addr:
        name = ""
    if not name and not addr:
        return None
    return Address(name=name, addr=addr)


def parse_addresses(pairs: Any) -> tuple[Address, ...]:
    out: list[Address] = []
    seen: set[tuple[str, str]] = set()
    for pair in pairs or ():
        try:
            name, addr = pair
        except (TypeError, ValueError):
            continue
        a = normalize_address(str(name or ""), str(addr or ""))
        if a and (a.name, a.addr) not in seen:
            seen.add((a.name, a.addr))
            out.append(a)
    return tuple(out)


_EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")


def addresses_from_header(value: str | None) -> tuple[Address, ...]:
    """Addresses of a header; when the RFC parser finds none, any bracketed or bare
    address in the text (with the words before it as the name) is taken."""
    if not value:
        return ()
    text = clean_header(value, 20_000)
    found = parse_addresses(getaddresses([text]))
    if any(a.addr for a in found):
        return tuple(a for a in found if a.addr)
    out: list[tuple[str, str]] = []
    for chunk in text.split(","):
        m = _EMAIL.search(chunk)
        if m:
            name = chunk[: m.start()].replace("<", " ").strip()
            out.append((re.sub(r"[^\w .'-]", "", name).strip(), m.group(0)))
    return parse_addresses(out) or found


def sanitize_filename(name: str | None, fallback: str = "attachment") -> str:
    """A filename safe to show and to write: no directories, controls or dot-prefix tricks."""
    name = clean_header(name or "", 1000)
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").split("/")[-1]
    name = re.sub(r'[<>:"|?*\x00-\x1f]', "_", name).strip().strip(".").strip()
    if not name:
        name = fallback
    if len(name) > MAX_FILENAME:
        stem, dot, ext = name.rpartition(".")
        ext = ext[:20] if dot else ""
        name = (stem if dot else name)[: MAX_FILENAME - len(ext) - 1] + (f".{ext}" if ext else "")
    return name


def parse_date(value: str | None) -> datetime | None:
    """An RFC 5322 date as aware UTC, or None when missing or unparsable."""
    if not value:
        return None
    try:
        d = parsedate_to_datetime(clean_header(value, 200))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if d is None:
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    try:
        d = d.astimezone(UTC)
    except (OverflowError, ValueError):
        return None
    if d.year < 1971 or d.year > 2200:
        return None
    return d


def date_from_received(received: list[str]) -> datetime | None:
    """The delivery time: the date after the last ';' of the newest Received header."""
    for value in received:
        _, sep, when = str(value).rpartition(";")
        if sep:
            d = parse_date(when)
            if d:
                return d
    return None


# ---------------------------------------------------------------- HTML to text


class _TextExtractor(HTMLParser):
    _SKIP = {"script", "style", "head", "title", "noscript", "template", "svg", "object",
             "iframe"}
    _BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table",
              "blockquote", "pre", "hr", "section", "article", "ul", "ol", "dd", "dt"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0
        self.quote = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self.skip += 1
        elif tag == "blockquote":
            self.quote += 1
            self.parts.append("\n")
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag == "blockquote":
            self.quote = max(0, self.quote - 1)
            self.parts.append("\n")
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if self.quote:
            data = "\n".join("> " * self.quote + line if line.strip() else line
                             for line in data.split("\n"))
        self.parts.append(data)


def html_to_text(markup: str) -> str:
    """Visible text of an HTML part; scripts, styles and markup are dropped, never run."""
    p = _TextExtractor()
    try:
        p.feed(markup)
        p.close()
        text = "".join(p.parts)
    except Exception:  # noqa: BLE001 - broken markup: strip tags crudely
        text = html.unescape(re.sub(r"<[^>]*>", " ", markup))
    lines = [_WS.sub(" ", line).strip() for line in text.split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


# ---------------------------------------------------------------- body splitting

_ATTRIBUTION = re.compile(
    r"^(on\b.{0,200}\b(wrote|writes|said)\s*:?|.{0,200}\b(wrote|writes)\s*:"
    r"|le\b.{0,200}a écrit\s*:?|am\b.{0,200}schrieb.{0,80}:?|el\b.{0,200}escribió\s*:?"
    r"|in article\b.{0,200}writes\s*:?)\s*$",
    re.IGNORECASE,
)
_ATTRIBUTION_WORDS = ("wrote", "writes", "said", "écrit", "schrieb", "escribió")
_ATTRIBUTION_START = re.compile(r"^(on|le|am|el)\s.{0,200}$", re.IGNORECASE)
_FORWARD = re.compile(
    r"^\s*(-{2,}\s*(original message|forwarded message|ursprüngliche nachricht|message d'origine)"
    r"\s*-{2,}|begin forwarded message:?|_{20,})\s*$",
    re.IGNORECASE,
)
_OUTLOOK_FROM = re.compile(r"^\s*\*?(from|von|de)\s*:\*?\s+\S", re.IGNORECASE)
_OUTLOOK_NEXT = re.compile(r"^\s*\*?(sent|date|to|subject|gesendet|envoyé)\s*:", re.IGNORECASE)
_SIG_DELIM = re.compile(r"^--\s*$")
_MOBILE = re.compile(
    r"^\s*(sent from my \w+|sent from (outlook|mail) for \w+|get outlook for \w+"
    r"|envoyé de mon \w+|von meinem \w+ gesendet)\b.*$",
    re.IGNORECASE,
)


def split_body(text: str) -> tuple[str, str, str]:
    """Split a plain-text body into (new, quoted, signature).

    Quoted: '>' lines, the attribution line before them ("On .. wrote:"), and everything
    after an Outlook/forward separator. Signature: after a '-- ' line up to the next quote,
    and mobile footers. Inline replies stay in the new text.
    """
    lines = clean_text(text).split("\n")
    n = len(lines)
    kind = ["new"] * n

    # 1. Outlook / forward blocks: everything after the separator is quoted.
    for i, line in enumerate(lines):
        if _FORWARD.match(line) or (
            _OUTLOOK_FROM.match(line) and i + 1 < n and any(
                _OUTLOOK_NEXT.match(lines[j]) for j in range(i + 1, min(n, i + 4)))
            and i > 0
        ):
            for j in range(i, n):
                kind[j] = "quoted"
            break

    # 2. '>' lines and their attribution lines.
    for i, line in enumerate(lines):
        if kind[i] != "new":
            continue
        if line.lstrip().startswith(">"):
            kind[i] = "quoted"
    for i, line in enumerate(lines):
        if kind[i] != "new" or not line.strip():
            continue
        low = line.lower() if i + 1 >= n else (line + " " + lines[i + 1]).lower()
        if not any(w in low for w in _ATTRIBUTION_WORDS):
            continue
        nxt = next((j for j in range(i + 1, min(n, i + 4)) if lines[j].strip()), None)
        followed_by_quote = nxt is not None and kind[nxt] == "quoted"
        if _ATTRIBUTION.match(line.strip()) and (followed_by_quote or nxt is None):
            kind[i] = "quoted"
        elif (_ATTRIBUTION_START.match(line.strip()) and i + 1 < n
              and _ATTRIBUTION.match(line.strip() + " " + lines[i + 1].strip())
              and kind[i + 1] == "new"):
            kind[i] = kind[i + 1] = "quoted"

    # 3. Signatures: from a '-- ' delimiter to the next quoted line (or the end).
    i = 0
    while i < n:
        if kind[i] == "new" and lines[i].startswith("--") and _SIG_DELIM.match(lines[i]):
            j = i
            while j < n and kind[j] != "quoted":
                kind[j] = "signature"
                j += 1
            i = j
        elif kind[i] == "new" and _MOBILE.match(lines[i]):
            kind[i] = "signature"
            i += 1
        else:
            i += 1

    def join(k: str) -> str:
        picked = [line for line, kk in zip(lines, kind, strict=True) if kk == k]
        out: list[str] = []
        for line in picked:
            line = line.rstrip()
            if line or (out and out[-1]):
                out.append(line)
        return "\n".join(out).strip("\n")

    return join("new"), join("quoted"), join("signature")


# ---------------------------------------------------------------- the message


def content_id(data: bytes) -> str:
    """A stable id for a message with no usable Message-ID, from its normalized bytes."""
    norm = data.replace(b"\r\n", b"\n").rstrip(b"\n")
    return f"grex-sha1-{hashlib.sha1(norm).hexdigest()}@synthetic.invalid"


def decode_bytes(raw: bytes, charset: str | None) -> str:
    """Bytes in a declared charset; an unknown or hostile charset falls back to UTF-8."""
    try:
        return raw.decode(charset or "utf-8", "replace")
    except (LookupError, ValueError, TypeError):
        return raw.decode("utf-8", "replace")


def _payload_bytes(att: dict[str, Any]) -> bytes:
    payload = att.get("payload") or ""
    if att.get("binary"):
        try:
            return base64.b64decode(payload)
        except (ValueError, TypeError):
            return str(payload).encode("utf-8", "replace")
    if isinstance(payload, bytes):
        return payload
    return str(payload).encode(att.get("charset") or "utf-8", "replace") if payload else b""


def _looks_like_mail(headers: dict[str, Any]) -> bool:
    keys = {k.lower() for k in headers}
    return bool(keys & {"from", "date", "subject", "message-id", "to", "received", "references",
                        "in-reply-to", "newsgroups", "mime-version", "sender", "return-path",
                        "content-type"})


_BSMTP = re.compile(rb"\A(?:(?:HELO|EHLO|MAIL FROM|RCPT TO)[^\n]*\n)+DATA\r?\n", re.IGNORECASE)


def strip_bsmtp(data: bytes) -> bytes:
    """A batch-SMTP transcript (HELO / MAIL FROM / RCPT TO / DATA ... '.') -> the message."""
    m = _BSMTP.match(data)
    if not m:
        return data
    body = data[m.end():]
    end = re.search(rb"\r?\n\.\r?\n", body)
    body = body[: end.start() + 1] if end else body
    body = re.sub(rb"(?m)^\.\.", b".", body)  # undo dot-stuffing
    if body.startswith(b"From "):  # an mbox From_ line inside DATA
        body = body.split(b"\n", 1)[1] if b"\n" in body else b""
    return body


def _safe(fn: Any, default: Any, defects: list[str], what: str) -> Any:
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - one bad header must not sink the message
        defects.append(f"{what}: {type(e).__name__}")
        return default


_SIGNED = re.compile(rb"(?im)^content-type:[ \t]*(multipart/signed|application/(pgp|pkcs7|"
                     rb"x-pkcs7)-signature)")
_ENCRYPTED = re.compile(rb"(?im)^content-type:[ \t]*(multipart/encrypted|application/"
                        rb"(x-)?pkcs7-mime)")


def mime_security(raw: bytes) -> tuple[str, ...]:
    """"signed" / "encrypted" from the MIME part headers of a raw message (signature parts
    have no file name, so they are not among the attachments)."""
    flags = []
    if _SIGNED.search(raw):
        flags.append("signed")
    if _ENCRYPTED.search(raw):
        flags.append("encrypted")
    return tuple(flags)


def parse_message(data: bytes, *, fallback_date: datetime | None = None) -> Message:
    """Parse one message's raw bytes. Raises ParseError only for input that isn't mail,
    or when every parser fails (the caller quarantines it with the reason)."""
    try:
        return _parse_message(data, fallback_date)
    except ParseError:
        raise
    except Exception as e:  # noqa: BLE001 - hostile input: quarantine, never crash a run
        raise ParseError(f"parser failed: {type(e).__name__}: {str(e)[:200]}") from e


def _parse_message(data: bytes, fallback_date: datetime | None) -> Message:
    import mailparser  # deferred: keep `grex search` start-up light

    logging.getLogger("mailparser").setLevel(logging.CRITICAL)

    if not data or not data.strip():
        raise ParseError("empty message")
    if data[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
        raise ParseError("an Outlook .msg (OLE2) file, not an RFC 5322 message")
    defects: list[str] = []
    unwrapped = strip_bsmtp(data)
    if unwrapped is not data:
        defects.append("batch-SMTP envelope removed")
        data = unwrapped
        if not data.strip():
            raise ParseError("empty message in a batch-SMTP envelope")
    content_hash = hashlib.sha256(data).hexdigest()

    mp: Any = None
    try:
        mp = mailparser.parse_from_bytes(data)
        msg = mp.message
    except Exception as e:  # noqa: BLE001 - mail-parser gave up: the stdlib still reads it
        defects.append(f"mail-parser failed: {type(e).__name__}")
        mp = None
        msg = email.message_from_bytes(data, policy=email.policy.compat32)

    headers = {k: v for k, v in msg.items()} if msg is not None else {}
    if not _looks_like_mail(headers):
        raise ParseError("no RFC 5322 headers found")

    def header(name: str) -> str:
        return _safe(lambda: clean_header(msg.get(name)), "", defects, name)

    # identity
    message_id = normalize_message_id(
        _safe(lambda: msg.get("Message-ID"), "", defects, "message-id"))
    synthetic = False
    if not message_id:
        message_id = content_id(data)
        synthetic = True
        defects.append("message-id: missing, derived from content")
    elif len(message_id) > 500:
        message_id = content_id(data)
        synthetic = True
        defects.append("message-id: too long, derived from content")

    # addresses
    if mp is not None:
        sender_list = _safe(lambda: parse_addresses(mp.from_), (), defects, "from")
        to = _safe(lambda: parse_addresses(mp.to), (), defects, "to")
        cc = _safe(lambda: parse_addresses(mp.cc), (), defects, "cc")
        # mail-parser gives up on a header with control characters; the cleaned text
        # usually still holds a usable address
        if not sender_list and msg.get("From"):
            sender_list = _safe(lambda: addresses_from_header(msg.get("From")), (), defects,
                                "from")
        if not to and msg.get("To"):
            to = _safe(lambda: addresses_from_header(msg.get("To")), (), defects, "to")
        if not cc and msg.get("Cc"):
            cc = _safe(lambda: addresses_from_header(msg.get("Cc")), (), defects, "cc")
    else:
        sender_list = addresses_from_header(msg.get("From"))
        to = addresses_from_header(msg.get("To"))
        cc = addresses_from_header(msg.get("Cc"))
    sender = sender_list[0] if sender_list else None

    # date: header, else newest Received, else the caller's fallback
    date_source = "header"
    date = parse_date(_safe(lambda: msg.get("Date"), None, defects, "date"))
    if date is None:
        received = _safe(lambda: [str(v) for v in (msg.get_all("Received") or [])], [],
                         defects, "received")
        date = date_from_received(received)
        date_source = "received"
        defects.append("date: missing or invalid, taken from Received"
                       if date else "date: missing or invalid")
        if date is None:
            date_source = "missing"
            date = fallback_date or EPOCH

    # body
    from_html = False
    plain: list[str] = []
    htmls: list[str] = []
    if mp is not None:
        plain = [t for t in _safe(lambda: list(mp.text_plain), [], defects, "text") if t]
        htmls = [t for t in _safe(lambda: list(mp.text_html), [], defects, "html") if t]
    else:
        for part in msg.walk():
            if part.is_multipart() or part.get_filename():
                continue
            ctype = part.get_content_type()
            raw = part.get_payload(decode=True) or b""
            text = decode_bytes(raw if isinstance(raw, bytes) else b"",
                                _safe(part.get_content_charset, None, defects, "charset"))
            if ctype == "text/plain":
                plain.append(text)
            elif ctype == "text/html":
                htmls.append(text)
    if plain:
        text = "\n\n".join(plain)
    elif htmls:
        text = "\n\n".join(html_to_text(h) for h in htmls)
        from_html = True
    else:
        text = ""
    truncated = len(text) > MAX_BODY
    if truncated:
        text = text[:MAX_BODY]
        defects.append(f"body: truncated to {MAX_BODY} characters")
    new, quoted, signature = split_body(text)

    # attachments: metadata only
    attachments: list[Attachment] = []
    if mp is not None:
        for i, att in enumerate(_safe(lambda: list(mp.attachments), [], defects, "attachments")):
            payload = _payload_bytes(att)
            attachments.append(Attachment(
                filename=sanitize_filename(att.get("filename"), f"attachment-{i + 1}"),
                content_type=clean_header(att.get("mail_content_type"), 200).lower()
                or "application/octet-stream",
                size=len(payload),
                sha256=hashlib.sha256(payload).hexdigest(),
            ))
        if mp.has_defects:
            defects.extend(sorted(str(c) for c in mp.defects_categories))

    return Message(
        message_id=message_id,
        subject=header("Subject"),
        sender=sender,
        to=to,
        cc=cc,
        date=date,
        in_reply_to=parse_id_list(_safe(lambda: msg.get("In-Reply-To"), "", defects, "irt")),
        references=parse_id_list(_safe(lambda: msg.get("References"), "", defects, "refs")),
        body=Body(new=new, quoted=quoted, signature=signature, from_html=from_html,
                  truncated=truncated),
        attachments=tuple(attachments),
        content_hash=content_hash,
        size=len(data),
        synthetic_id=synthetic,
        date_source=date_source,
        list_id=normalize_message_id(header("List-Id")) or header("List-Id")[:200],
        defects=tuple(dict.fromkeys(defects)),
        security=mime_security(data),
    )
