"""The export's records: what a thread brings in (``ThreadInput``) and the view of the
site the templates render (``Site`` and its pages). All frozen; built by grex.export.build.

Every ``href`` here is relative to the site root (``t/0a1b....html``); templates prefix the
page's ``root`` ("" or "../") so the site works from file:// and from any sub-path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from grex.models import Message, Thread

# ---------------------------------------------------------------- input


@dataclass(frozen=True, slots=True)
class TopicTag:
    key: str  # stable id from extraction (or the label when it has none)
    label: str


@dataclass(frozen=True, slots=True)
class EntityTag:
    label: str
    kind: str  # spaCy label: PERSON, ORG, GPE, PRODUCT, ...
    addr: str = ""  # a PERSON known by address (from the headers)


@dataclass(frozen=True, slots=True)
class Knowledge:
    """What extraction knows about one thread (empty when extraction has not run)."""

    topics: tuple[TopicTag, ...] = ()
    entities: tuple[EntityTag, ...] = ()
    keyphrases: tuple[str, ...] = ()
    related: tuple[str, ...] = ()  # root Message-IDs of related threads, best first


@dataclass(frozen=True, slots=True)
class ThreadInput:
    thread: Thread
    messages: tuple[Message, ...]  # in thread.nodes order, ghosts left out
    knowledge: Knowledge = Knowledge()


# ---------------------------------------------------------------- the site


@dataclass(frozen=True, slots=True)
class PersonRef:
    slug: str
    label: str
    href: str


@dataclass(frozen=True, slots=True)
class TopicRef:
    slug: str
    label: str
    href: str


@dataclass(frozen=True, slots=True)
class ThreadRef:
    slug: str
    subject: str
    href: str
    first_date: datetime
    last_date: datetime
    n_messages: int
    authors: tuple[str, ...]  # sender labels, first appearance order


@dataclass(frozen=True, slots=True)
class AttachmentView:
    filename: str  # as sent (shown as text only)
    content_type: str
    size: int
    sha256: str
    href: str | None = None  # set when exported with --attachments
    download_name: str = ""


@dataclass(frozen=True, slots=True)
class EntityView:
    label: str
    kind: str
    href: str  # a person, organisation or topic page, else a search


@dataclass(frozen=True, slots=True)
class MessageView:
    anchor: str  # "m-<digest>"
    message_id: str
    sender: PersonRef | None
    to: tuple[PersonRef, ...]
    cc: tuple[PersonRef, ...]
    date: datetime
    depth: int
    subject: str
    new: str
    quoted: str
    signature: str
    from_html: bool
    truncated: bool
    attachments: tuple[AttachmentView, ...]
    parent_anchor: str | None


@dataclass(frozen=True, slots=True)
class ThreadPage:
    ref: ThreadRef
    root_message_id: str
    messages: tuple[MessageView, ...]
    participants: tuple[PersonRef, ...]
    topics: tuple[TopicRef, ...]
    entities: tuple[EntityView, ...]
    keyphrases: tuple[str, ...]
    related: tuple[ThreadRef, ...]
    excerpt: str
    missing: int = 0  # messages referenced but not in the KB


@dataclass(frozen=True, slots=True)
class Count:
    """Something with a number beside it (a topic and how many threads, a co-worker ...)."""

    href: str
    label: str
    n: int


@dataclass(frozen=True, slots=True)
class PersonPage:
    ref: PersonRef
    addr: str  # "" when redacted
    threads: tuple[ThreadRef, ...]
    sent: int
    topics: tuple[Count, ...]
    coworkers: tuple[Count, ...]
    orgs: tuple[Count, ...]
    keyphrases: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TopicPage:
    ref: TopicRef
    threads: tuple[ThreadRef, ...]
    experts: tuple[Count, ...]  # who knows about this: people by messages in its threads
    keyphrases: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OrgPage:
    slug: str
    name: str
    href: str
    kind: str  # "domain" (people's addresses) or "entity" (named in mail)
    people: tuple[Count, ...]
    threads: tuple[ThreadRef, ...]
    topics: tuple[Count, ...]


@dataclass(frozen=True, slots=True)
class Month:
    key: str  # "2009-11"
    label: str  # "November 2009"
    href: str
    threads: tuple[ThreadRef, ...]


@dataclass(frozen=True, slots=True)
class Site:
    title: str
    threads: tuple[ThreadPage, ...]  # newest activity first
    people: tuple[PersonPage, ...]  # most active first
    topics: tuple[TopicPage, ...]  # largest first
    orgs: tuple[OrgPage, ...]
    months: tuple[Month, ...]  # newest first
    n_messages: int
    redacted: bool = False
    base_url: str = ""
    updated: datetime | None = None  # last activity in the KB (never "now": pages stay stable)
    notes: tuple[str, ...] = field(default_factory=tuple)
    redirects: tuple[tuple[str, str], ...] = ()  # (path, target): permalinks that forward
