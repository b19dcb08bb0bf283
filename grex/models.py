"""The frozen records that flow between grex's stages.

    RawMessage (bytes + where it came from)
        -> parse -> Message (headers, split body, attachments, defects)
        -> threads -> Thread (reply tree, stable id)
        -> extract -> Extraction (entities, keyphrases, topics; grex.extract)
        -> index / export

Stages are plain functions over iterables of these; none of them does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox: display name as written (decoded) and the address, lowercased."""

    name: str
    addr: str

    def display(self) -> str:
        if self.name and self.addr:
            return f"{self.name} <{self.addr}>"
        return self.name or self.addr

    @property
    def label(self) -> str:
        """What to show for this person: the name, else the address."""
        return self.name or self.addr


@dataclass(frozen=True, slots=True)
class Attachment:
    """Metadata only: grex never executes or opens what a message carries."""

    filename: str  # sanitized: no path separators, no control characters, bounded length
    content_type: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Location:
    """Where a copy of a message was seen.

    ``source`` is a stable key of the copy: ``file:/abs/path`` (import), ``mbox:/abs/path#N``,
    ``imap:ACCOUNT/FOLDER`` (sync keeps uid details in its own tables).
    """

    source: str
    folder: str = ""
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RawMessage:
    """The bytes of one message exactly as received, and where they were found."""

    data: bytes
    location: Location


@dataclass(frozen=True, slots=True)
class Body:
    """A body split so each piece of knowledge is held once."""

    new: str  # what this message adds
    quoted: str = ""  # text quoted from earlier messages ("> ..." / "On .. wrote:" / Outlook)
    signature: str = ""  # after "-- " or a recognised sign-off block
    from_html: bool = False  # True when the text was converted from an HTML part
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class Message:
    """A parsed message. ``message_id`` is without angle brackets."""

    message_id: str
    subject: str
    sender: Address | None
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    date: datetime  # timezone-aware UTC
    in_reply_to: tuple[str, ...]  # ids without brackets; ids without "@" are dropped
    references: tuple[str, ...]
    body: Body
    attachments: tuple[Attachment, ...] = ()
    content_hash: str = ""  # sha256 of the raw bytes
    size: int = 0
    synthetic_id: bool = False  # no usable Message-ID header: id derived from content
    date_source: str = "header"  # header | received | missing
    list_id: str = ""
    defects: tuple[str, ...] = ()
    # "signed" / "encrypted" from the MIME part headers; None: not known (a catalog row
    # stored before grex kept it: readers sniff the raw message, `grex rebuild` fills it)
    security: tuple[str, ...] | None = ()

    @property
    def participants(self) -> tuple[Address, ...]:
        seen: dict[str, Address] = {}
        for a in ((self.sender,) if self.sender else ()) + self.to + self.cc:
            key = a.addr or a.name
            if key and key not in seen:
                seen[key] = a
        return tuple(seen.values())

    @property
    def parent_candidates(self) -> tuple[str, ...]:
        """Parent ids in priority order: In-Reply-To first, then References from the end."""
        out: list[str] = []
        for mid in self.in_reply_to + tuple(reversed(self.references)):
            if mid != self.message_id and mid not in out:
                out.append(mid)
        return tuple(out)


@dataclass(frozen=True, slots=True)
class ThreadNode:
    """One node of a reply tree: a real message or a ghost (referenced, never seen)."""

    message_id: str
    parent_id: str | None
    depth: int
    ghost: bool = False


@dataclass(frozen=True, slots=True)
class Thread:
    """A conversation. ``thread_id`` is stable: derived from the root when first seen."""

    thread_id: str
    root_message_id: str
    subject: str
    nodes: tuple[ThreadNode, ...]  # reply-tree (depth-first, children by date) order
    first_date: datetime
    last_date: datetime
    participants: tuple[Address, ...] = ()

    @property
    def message_ids(self) -> tuple[str, ...]:
        return tuple(n.message_id for n in self.nodes if not n.ghost)


@dataclass(frozen=True, slots=True)
class ThreadSummary:
    """What a search hit shows of a thread (without its reply tree)."""

    thread_id: str
    subject: str
    first_date: datetime
    last_date: datetime
    message_count: int
    participants: tuple[Address, ...] = ()


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A message that could not be taken in, with why. Its bytes are kept in the KB."""

    source: str
    reason: str
    content_hash: str = ""


@dataclass(frozen=True, slots=True)
class ImportReport:
    seen: int = 0
    added: int = 0
    duplicates: int = 0  # another copy of a Message-ID already in the KB
    unchanged: int = 0  # this exact copy was already imported
    quarantined: tuple[Quarantined, ...] = ()
    threads_changed: int = 0
    threads_merged: int = 0
    errors: tuple[str, ...] = field(default_factory=tuple)
