"""One Whoosh document per message, and the thread knowledge each one carries."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from grex.models import Message
from grex.search.schema import EXCERPT_CHARS, make_schema

# ------------------------------------------------------------------------------- documents


@dataclass(frozen=True, slots=True)
class Knowledge:
    """What extraction found, as the index uses it (one message, or its thread)."""

    persons: tuple[str, ...] = ()
    orgs: tuple[str, ...] = ()
    places: tuple[str, ...] = ()
    keyphrases: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()

    def merged(self, other: Knowledge | None) -> Knowledge:
        if other is None:
            return self
        return Knowledge(*(_unique(a + b) for a, b in zip(
            (self.persons, self.orgs, self.places, self.keyphrases, self.topics),
            (other.persons, other.orgs, other.places, other.keyphrases, other.topics),
            strict=True)))


@dataclass(frozen=True, slots=True)
class IndexReport:
    """What one run of the index stage did."""

    indexed: int = 0  # documents added or replaced
    deleted: int = 0  # messages removed from the index
    rebuilt: bool = False
    documents: int = 0  # documents in the index after the run
    segments: int = 0
    optimized: bool = False
    seconds: float = 0.0
    skipped: tuple[str, ...] = ()  # message ids that could not be indexed, with why
    knowledge: bool = False  # extraction results were available and indexed

    def summary(self) -> str:
        if self.rebuilt:
            what = f"rebuilt: {self.documents} messages indexed"
        elif not (self.indexed or self.deleted):
            what = "up to date"
        else:
            what = f"{self.indexed} messages indexed, {self.deleted} removed"
        extra = f", {len(self.skipped)} skipped" if self.skipped else ""
        return f"index {what}{extra} ({self.seconds:.1f} s)"


_CLEAN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
SIGNED_TYPES = ("application/pgp-signature", "application/pkcs7-signature",
                "application/x-pkcs7-signature")
ENCRYPTED_TYPES = ("application/pgp-encrypted", "application/pkcs7-mime",
                   "application/x-pkcs7-mime")


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for v in values:
        v = " ".join(str(v).split())
        if v and v.lower() not in {s.lower() for s in seen}:
            seen[v] = None
    return tuple(seen)


def _keyword_value(values: Iterable[str]) -> str:
    # KEYWORD(commas=True): one value per comma-separated item
    return ",".join(v.replace(",", " ").strip() for v in values if v and v.strip())


def _addresses(addrs: Iterable[Any]) -> str:
    return "\n".join(a.display() for a in addrs if a is not None and (a.name or a.addr))


def message_document(
    msg: Message,
    *,
    thread_id: str,
    folders: Iterable[str] = (),
    labels: Iterable[str] = (),
    knowledge: Knowledge | None = None,
    flags: Iterable[str] = (),
) -> dict[str, Any]:
    """The Whoosh document of one message: a pure function of the catalog's data."""
    if not msg.message_id:
        raise ValueError("message without an id")
    k = knowledge or Knowledge()
    body = _CLEAN.sub(" ", msg.body.new or "")
    other = "\n".join(p for p in (msg.body.quoted, msg.body.signature) if p)
    names = [a.filename for a in msg.attachments if a.filename]
    ctypes = {a.content_type.lower() for a in msg.attachments if a.content_type}
    flags = list(flags)
    real_attachments = [a for a in msg.attachments
                        if a.content_type.lower() not in SIGNED_TYPES + ENCRYPTED_TYPES]
    if real_attachments:
        flags.append("attachment")
    if ctypes & set(SIGNED_TYPES) and "signed" not in flags:
        flags.append("signed")
    if ctypes & set(ENCRYPTED_TYPES) and "encrypted" not in flags:
        flags.append("encrypted")
    if msg.in_reply_to or msg.references:
        flags.append("reply")
    sender = _addresses([msg.sender]) if msg.sender else ""
    date = msg.date if msg.date.tzinfo is None else msg.date.astimezone(UTC).replace(tzinfo=None)
    folders = _unique(folders)
    labels = _unique(labels)
    doc: dict[str, Any] = {
        "id": msg.message_id,
        "thread_id": thread_id,
        "subject": _CLEAN.sub(" ", msg.subject or ""),
        "body": body,
        "quoted": _CLEAN.sub(" ", other),
        "excerpt": body[:EXCERPT_CHARS],
        "from": sender,
        "to": _addresses(msg.to),
        "cc": _addresses(msg.cc),
        "date": date,
        "folder": _keyword_value(folders),
        "label": _keyword_value(labels),
        "attachment": "\n".join(names),
        "mimetype": _keyword_value(sorted(ctypes)),
        "flag": _keyword_value(flags),
        "list": msg.list_id or "",
        "person": "\n".join(k.persons),
        "org": "\n".join(k.orgs),
        "place": "\n".join(k.places),
        "keyword": "\n".join(k.keyphrases),
        "topic": "\n".join(k.topics),
        "topics": list(k.topics),
        "facets": {
            "topic": list(k.topics),
            "person": list(k.persons),
            "org": list(k.orgs),
            "place": list(k.places),
            "from": [msg.sender.label] if msg.sender and msg.sender.label else [],
            "label": list(labels),
            "folder": list(folders),
        },
    }
    return {key: value for key, value in doc.items() if value not in ("", None)}


def validate_document(doc: Mapping[str, Any]) -> None:
    """Raise ValueError unless ``doc`` can be written (checked before a multiprocess build,
    whose workers drop their whole share silently on one bad document)."""
    schema_names = _schema_names()
    for key, value in doc.items():
        if key not in schema_names:
            raise ValueError(f"unknown field {key!r}")
        if key == "date":
            if not isinstance(value, datetime):
                raise ValueError("date is not a datetime")
        elif key in ("excerpt", "topics", "facets"):
            continue
        elif not isinstance(value, str):
            raise ValueError(f"field {key!r} is not text")
    if not doc.get("id") or not doc.get("thread_id"):
        raise ValueError("document without id or thread_id")


_NAMES: list[frozenset[str]] = []


def _schema_names() -> frozenset[str]:
    if not _NAMES:
        _NAMES.append(frozenset(make_schema().names()))
    return _NAMES[0]


# ------------------------------------------------------------------------ knowledge source


def knowledge_source(conn: Any) -> Callable[[str], Knowledge | None] | None:
    """A function thread_id -> Knowledge when grex.extract is present, else None.

    Imported here, never at module level: grex.extract pulls in spaCy lazily, and the
    search path must not import it at all.
    """
    try:
        from grex import extract  # noqa: PLC0415
    except ImportError:
        return None
    fn = getattr(extract, "thread_knowledge", None)
    ran = getattr(extract, "has_results", None)
    if fn is None or (ran is not None and not ran(conn)):
        return None  # no extraction, or it never ran here: no question to ask per thread

    def get(thread_id: str) -> Knowledge | None:
        try:
            found = fn(conn, thread_id)
        except Exception:  # noqa: BLE001 - extraction tables absent or not yet filled
            return None
        return to_knowledge(found) if found is not None else None

    return get


def to_knowledge(found: Any) -> Knowledge:
    """Adapt what grex.extract returns (a dataclass or a mapping) to Knowledge."""

    def attr(name: str, default: Any = ()) -> Any:
        if isinstance(found, Mapping):
            return found.get(name, default)
        return getattr(found, name, default)

    persons: list[str] = list(attr("persons", ()) or attr("people", ()) or ())
    orgs: list[str] = list(attr("orgs", ()) or attr("organizations", ()) or ())
    places: list[str] = list(attr("places", ()) or attr("locations", ()) or ())
    for ent in attr("entities", ()) or ():
        text, label = _entity(ent)
        if not text:
            continue
        label = label.upper()
        if label in ("PERSON", "PER"):
            persons.append(text)
        elif label in ("ORG", "ORGANIZATION"):
            orgs.append(text)
        elif label in ("GPE", "LOC", "PLACE", "FAC", "LOCATION"):
            places.append(text)
    keyphrases = [_text(k) for k in attr("keyphrases", ()) or ()]
    topics = [_text(t) for t in attr("topics", ()) or ()]
    return Knowledge(_unique(persons), _unique(orgs), _unique(places), _unique(keyphrases),
                     _unique(topics))


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return str(value.get("label") or value.get("text") or value.get("name") or "")
    if isinstance(value, tuple | list) and value:
        return str(value[0])
    for name in ("label", "text", "name", "phrase"):
        if hasattr(value, name):
            return str(getattr(value, name))
    return str(value)


def _entity(ent: Any) -> tuple[str, str]:
    if isinstance(ent, Mapping):
        return str(ent.get("text", "")), str(ent.get("label", "") or ent.get("type", ""))
    if isinstance(ent, tuple | list) and len(ent) >= 2:
        return str(ent[0]), str(ent[1])
    return str(getattr(ent, "text", "")), str(getattr(ent, "label", "") or
                                               getattr(ent, "type", ""))


