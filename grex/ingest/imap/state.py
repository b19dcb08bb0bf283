"""Sync state: the sync tables, the reports a run gives, and the kill-point test seam."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

FETCH_BATCH = 500
HEADER_BATCH = 1000
SEARCH_IDS_PER_COMMAND = 40
MAX_ATTEMPTS = 6
KILL_POINTS = ("fetched", "saved", "removed", "state")
_HEADER_FIELDS = b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID IN-REPLY-TO REFERENCES SUBJECT)]"

SCHEMA = [
    """
    CREATE TABLE sync_folder (
        account TEXT NOT NULL,
        folder TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        uidnext INTEGER NOT NULL,
        messages INTEGER NOT NULL,
        highestmodseq INTEGER NOT NULL DEFAULT 0,
        selection TEXT NOT NULL DEFAULT '',
        synced_at REAL NOT NULL,
        PRIMARY KEY (account, folder)
    );
    CREATE TABLE sync_message (
        account TEXT NOT NULL,
        folder TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        uid INTEGER NOT NULL,
        message_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        added_at REAL NOT NULL,
        PRIMARY KEY (account, folder, uidvalidity, uid)
    );
    CREATE INDEX sync_message_mid ON sync_message (message_id);
    """,
    # v2: each held copy's keywords (IMAP keywords, or Gmail labels), kept current with
    # CONDSTORE (UID FETCH FLAGS CHANGEDSINCE) and shown by `grex why`
    """
    ALTER TABLE sync_message ADD COLUMN keywords TEXT NOT NULL DEFAULT '[]';
    """,
]

Progress = Callable[[str, int, int | None], None]


# ---------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class PlanItem:
    """One thing a sync does (or, with --dry-run, would do), and why."""

    action: str  # add | remove | keep | rematch
    account: str
    folder: str
    uid: int
    message_id: str
    subject: str
    reason: str


@dataclass(frozen=True, slots=True)
class AccountReport:
    account: str
    folders: int = 0
    changed_folders: int = 0
    new: int = 0  # messages new to the KB
    updated: int = 0  # a new copy/location of a message already in the KB, or re-matched
    removed: int = 0  # copies removed (unshared or deleted on the server)
    quarantined: int = 0
    fetched: int = 0
    bytes: int = 0
    retries: int = 0
    plan: tuple[PlanItem, ...] = ()


@dataclass(frozen=True, slots=True)
class SyncReport:
    accounts: tuple[AccountReport, ...]
    dry_run: bool = False

    def total(self, name: str) -> int:
        return sum(getattr(a, name) for a in self.accounts)

    @property
    def summary(self) -> str:
        verb = "would fetch" if self.dry_run else "new"
        return (f"{self.total('new')} {verb}, {self.total('updated')} updated, "
                f"{self.total('removed')} removed, {self.total('quarantined')} quarantined")


@dataclass(frozen=True, slots=True)
class WhyEntry:
    message_id: str
    subject: str
    account: str
    folder: str
    uid: int
    reason: str
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WhyReport:
    thread_id: str
    subject: str
    shared_by: tuple[str, ...]  # accounts holding a chosen copy
    entries: tuple[WhyEntry, ...]
    other_sources: tuple[str, ...] = ()  # non-IMAP locations (e.g. `grex import`)


@dataclass
class _Counts:
    new: int = 0
    updated: int = 0
    removed: int = 0
    quarantined: int = 0
    fetched: int = 0
    bytes: int = 0
    retries: int = 0
    folders: int = 0
    changed_folders: int = 0
    plan: list[PlanItem] = field(default_factory=list)


# ---------------------------------------------------------------- test seam

_kill_counts: dict[str, int] = {}


def _checkpoint(point: str) -> None:
    """SIGKILL ourselves here when GREX_TEST_KILL_AT names this point (tests only)."""
    target = os.environ.get("GREX_TEST_KILL_AT")
    if not target:
        return
    name, _, nth = target.partition(":")
    if name != point:
        return
    _kill_counts[point] = _kill_counts.get(point, 0) + 1
    if _kill_counts[point] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


