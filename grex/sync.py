"""IMAP sync of the threads people choose to share.

    accounts (grex.toml) -> connect() -> select() -> plan -> fetch_raw() -> save_batch() -> store

How it decides what comes in (per account, over the folders matching its glob patterns):

* seeds: messages carrying ``share_keyword`` and matching ``search`` (either may be empty;
  both empty chooses whole folders). On Gmail (X-GM-EXT-1) the keyword is a Gmail label,
  searched with X-GM-LABELS.
* with ``whole_thread``, every message in the configured folders connected to a seed by
  Message-ID / In-Reply-To / References comes too. The server does the finding (UID THREAD
  REFERENCES for the seed's own folder where advertised, then HEADER searches for the
  thread's ids in every folder, repeated until nothing new turns up); grex checks each
  candidate's headers itself, because servers' substring HEADER matches and subject
  merging in THREAD=REFERENCES are looser than grex's threading. On Gmail, X-GM-THRID.
* a message that is no longer chosen (keyword removed, deleted on the server, folder gone)
  leaves the KB when ``on_unshare = "remove"`` (store.remove_location: the message goes
  when no other copy, from any account or import, remains); ``keep`` leaves it.

Incremental: per folder the KB keeps UIDVALIDITY, UIDNEXT, MESSAGES and HIGHESTMODSEQ
(CONDSTORE) from the last sync. A folder whose STATUS is unchanged is not even selected,
so a no-change re-sync is one STATUS per folder. A changed folder is re-selected (searches
are cheap on the server); only UIDs not yet in the KB are fetched (BODY.PEEK[], never sets
\\Seen, 500 per command). After a UIDVALIDITY change, messages are matched again by
Message-ID, so nothing is fetched twice, duplicated or lost.

Durability: each fetched batch is saved with store.add_messages and its UID rows in the
same commit; removals come after all fetches (a message moved between two configured
folders never leaves the KB), and the folder's state is written last. A kill at any point
leaves a state that the next run completes exactly. Dropped connections and server
restarts are retried with backoff; the run then resumes from what was saved.

Test seam: ``GREX_TEST_KILL_AT=POINT[:N]`` SIGKILLs the process at the N-th time it passes
POINT (fetched, saved, removed, state); see ``KILL_POINTS``.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import fnmatch
import hashlib
import json
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grex import store
from grex.config import Account, Config
from grex.errors import (
    AuthError,
    ConfigError,
    ConnectError,
    FolderError,
    GrexError,
    ParseError,
    SyncError,
    TLSError,
)
from grex.models import Location, Message, RawMessage
from grex.parse import normalize_message_id, parse_id_list, parse_message

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


# ---------------------------------------------------------------- connecting


class _Transient(Exception):
    """A network failure worth retrying (dropped connection, refused, timeout)."""


def _imapclient():
    import imapclient  # deferred: `grex search` never talks IMAP

    return imapclient


def tls_context(account: Account) -> ssl.SSLContext:
    """System CAs plus ``ca_file``; hostname and certificate always verified."""
    ctx = ssl.create_default_context()
    if account.ca_file:
        path = Path(account.ca_file).expanduser()
        try:
            ctx.load_verify_locations(cafile=str(path))
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"account {account.name!r}: ca_file {path} unusable: {e}") from None
    return ctx


def connect(account: Account, password: str | None = None) -> Any:
    """A logged-in IMAPClient for ``account``; errors become grex's SyncError subclasses."""
    imapclient = _imapclient()
    where = f"{account.host}:{account.port}"
    if account.tls == "none" and not (account.is_loopback and account.allow_insecure):
        raise ConfigError(f"account {account.name!r}: tls = 'none' refused",
                          hint="only for a loopback host with allow_insecure = true")
    ctx = tls_context(account)
    secret = password if password is not None else account.password()
    try:
        if account.tls == "imaps":
            client = imapclient.IMAPClient(account.host, port=account.port, ssl=True,
                                           ssl_context=ctx, timeout=account.timeout)
        else:
            client = imapclient.IMAPClient(account.host, port=account.port, ssl=False,
                                           timeout=account.timeout)
            if account.tls == "starttls":
                if not client.has_capability("STARTTLS"):
                    raise TLSError(f"{where} does not offer STARTTLS",
                                   hint="use tls = \"imaps\" and the IMAPS port")
                client.starttls(ctx)
    except socket.gaierror as e:
        raise ConnectError(f"cannot resolve host {account.host!r}: {e.strerror}",
                           hint=f"check host in account {account.name!r}") from None
    except ssl.SSLCertVerificationError as e:
        raise TLSError(f"certificate of {where} not trusted: {e.verify_message}",
                       hint="set ca_file to the server's CA if it is self-signed") from None
    except ssl.SSLError as e:
        raise TLSError(f"TLS with {where} failed: {e.reason or e}",
                       hint="check port and tls (imaps vs starttls)") from None
    except (OSError, EOFError, imapclient.exceptions.IMAPClientAbortError) as e:
        raise _Transient(f"cannot connect to {where}: {e}") from None
    try:
        client.login(account.username, secret)
    except imapclient.exceptions.LoginError as e:
        _close(client)
        text = e.args[0] if e.args else ""
        if isinstance(text, bytes):
            text = text.decode(errors="replace")
        raise AuthError(f"login as {account.username!r} at {where} failed: {text}",
                        hint="check username and password_command / GREX_IMAP_PASSWORD") from None
    except (OSError, EOFError, imapclient.exceptions.IMAPClientAbortError) as e:
        raise _Transient(f"connection to {where} lost at login: {e}") from None
    return client


def _close(client: Any) -> None:
    try:
        client.logout()
    except Exception:  # noqa: BLE001 - the connection may already be gone
        with contextlib.suppress(Exception):
            client.shutdown()


def _is_transient(e: BaseException) -> bool:
    imapclient = _imapclient()
    if isinstance(e, ssl.SSLCertVerificationError):
        return False
    return isinstance(e, (_Transient, OSError, EOFError,
                          imapclient.exceptions.IMAPClientAbortError))


# ---------------------------------------------------------------- selection


@dataclass(frozen=True, slots=True)
class Header:
    uid: int
    message_id: str
    related: tuple[str, ...]  # In-Reply-To + References
    subject: str

    @property
    def ids(self) -> frozenset[str]:
        return frozenset((self.message_id, *self.related)) - {""}


def _gmail(client: Any) -> bool:
    return bool(client.has_capability("X-GM-EXT-1"))


def _astr(value: str) -> str:
    """An IMAP quoted string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def seed_criteria(account: Account, gmail: bool = False) -> str:
    """The raw UID SEARCH criteria choosing a folder's seeds."""
    parts = []
    if account.share_keyword:
        kw = account.share_keyword
        if gmail:
            parts.append(f"X-GM-LABELS {_astr(kw)}")
        else:
            if any(c in kw for c in ' (){%*"\\]') or not kw.isprintable():
                raise ConfigError(f"account {account.name!r}: share_keyword {kw!r} is not a "
                                  "valid IMAP keyword (no spaces or ( ) { % * \" \\ ])")
            parts.append(f"KEYWORD {kw}")
    if account.search.strip():
        parts.append(account.search.strip())
    return " ".join(parts) or "ALL"


def thread_criteria(ids: Iterable[str]) -> str:
    """One UID SEARCH matching any message whose Message-ID, In-Reply-To or References
    holds one of ``ids`` (substring matches on the server; grex re-checks)."""
    items = []
    for i in ids:
        if not i.isascii() or not i.isprintable():
            continue
        q = _astr(f"<{i}>")
        items += [f"HEADER Message-ID {q}", f"HEADER References {q}",
                  f"HEADER In-Reply-To {q}"]
    if not items:
        return ""
    return "OR " * (len(items) - 1) + " ".join(items)


def gmail_thread_criteria(thrids: Iterable[int]) -> str:
    items = [f"X-GM-THRID {t}" for t in thrids]
    return ("OR " * (len(items) - 1) + " ".join(items)) if items else ""


def is_whole_folder(account: Account) -> bool:
    return not account.share_keyword and not account.search.strip()


def selection_fingerprint(account: Account, folders: Sequence[str]) -> str:
    what = [account.share_keyword, account.search, account.whole_thread, list(folders)]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]


def resolve_folders(client: Any, account: Account) -> list[str]:
    """The server folders matching ``account.folders`` (globs; '/' also matches the server's
    delimiter). A literal name that does not exist is a FolderError."""
    listed = client.list_folders()
    names: list[str] = []
    selectable: set[str] = set()
    delim = "/"
    for flags, d, name in listed:
        if d:
            delim = d.decode() if isinstance(d, bytes) else d
        names.append(name)
        if not any(f.lower() == b"\\noselect" for f in flags):
            selectable.add(name)
    out: list[str] = []
    for pattern in account.folders:
        variants = {pattern, pattern.replace("/", delim)}
        if not any(ch in pattern for ch in "*?["):
            hit = [n for n in names if n in variants
                   or (pattern.upper() == "INBOX" and n.upper() == "INBOX")]
            if not hit:
                near = ", ".join(sorted(names)[:8])
                raise FolderError(f"account {account.name!r}: folder {pattern!r} does not exist "
                                  f"on {account.host}", hint=f"folders there: {near}")
        else:
            hit = [n for n in names if any(fnmatch.fnmatchcase(n, v) for v in variants)]
        for n in hit:
            if n in selectable and n not in out:
                out.append(n)
    return out


def _parse_header_block(raw: bytes, uid: int) -> Header:
    msg = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
    mid = normalize_message_id(msg.get("Message-ID"))
    related = parse_id_list(msg.get("In-Reply-To")) + parse_id_list(msg.get("References"))
    subject = str(msg.get("Subject") or "")[:200]
    return Header(uid, mid, tuple(dict.fromkeys(r for r in related if r != mid)), subject)


def fetch_headers(client: Any, uids: Sequence[int]) -> dict[int, Header]:
    """Message-ID, In-Reply-To, References and Subject of ``uids`` in the selected folder."""
    out: dict[int, Header] = {}
    for i in range(0, len(uids), HEADER_BATCH):
        chunk = list(uids[i:i + HEADER_BATCH])
        for uid, data in client.fetch(chunk, [_HEADER_FIELDS]).items():
            raw = next((v for k, v in data.items() if k.startswith(b"BODY[HEADER")), b"")
            out[uid] = _parse_header_block(raw or b"", uid)
    return out


@dataclass
class _Want:
    reason: str
    header: Header | None = None


@dataclass
class _Snapshot:
    uidvalidity: int
    uidnext: int
    messages: int
    highestmodseq: int


def _status(client: Any, folder: str, condstore: bool) -> _Snapshot:
    what = [b"UIDVALIDITY", b"UIDNEXT", b"MESSAGES"] + ([b"HIGHESTMODSEQ"] if condstore else [])
    st = client.folder_status(folder, what)
    return _Snapshot(int(st[b"UIDVALIDITY"]), int(st[b"UIDNEXT"]), int(st[b"MESSAGES"]),
                     int(st.get(b"HIGHESTMODSEQ", 0)))


class _Selector:
    """Finds the chosen (folder, uid) set of one account on an open connection."""

    def __init__(self, client: Any, account: Account, folders: Sequence[str]) -> None:
        self.client = client
        self.account = account
        self.folders = list(folders)
        self.gmail = _gmail(client)
        self.headers: dict[tuple[str, int], Header] = {}
        self.uidvalidity: dict[str, int] = {}
        self._selected: str | None = None

    def select(self, folder: str) -> None:
        if self._selected != folder:
            info = self.client.select_folder(folder, readonly=True)
            self.uidvalidity[folder] = int(info[b"UIDVALIDITY"])
            self._selected = folder

    def search(self, folder: str, criteria: str) -> list[int]:
        self.select(folder)
        return sorted(int(u) for u in self.client.search(criteria))

    def headers_for(self, folder: str, uids: Iterable[int]) -> dict[int, Header]:
        missing = sorted(u for u in uids if (folder, u) not in self.headers)
        if missing:
            self.select(folder)
            for uid, h in fetch_headers(self.client, missing).items():
                self.headers[(folder, uid)] = h
        return {u: self.headers[(folder, u)] for u in uids if (folder, u) in self.headers}

    def seeds(self, folders: Sequence[str]) -> dict[tuple[str, int], _Want]:
        criteria = seed_criteria(self.account, self.gmail)
        if is_whole_folder(self.account):
            return {(f, u): _Want(f"whole folder {f}") for f in folders
                    for u in self.search(f, "ALL")}
        bits = []
        if self.account.share_keyword:
            bits.append(("label " if self.gmail else "keyword ") + self.account.share_keyword)
        if self.account.search.strip():
            bits.append(f"search {self.account.search.strip()!r}")
        reason = " and ".join(bits)
        return {(f, u): _Want(reason) for f in folders for u in self.search(f, criteria)}

    def complete_threads(self, chosen: dict[tuple[str, int], _Want]) -> None:
        """Add every message of the configured folders connected to a chosen one."""
        if not chosen:
            return
        if self.gmail:
            self._complete_gmail(chosen)
            return
        by_folder: dict[str, list[int]] = {}
        for f, u in chosen:
            by_folder.setdefault(f, []).append(u)
        origin: dict[str, str] = {}  # thread id -> the shared message it came from
        comp: set[str] = set()
        for f, uids in by_folder.items():
            for u, h in self.headers_for(f, uids).items():
                label = h.message_id or f"{f}/{u}"
                for i in h.ids:
                    origin.setdefault(i, label)
                comp |= h.ids
        pool: set[tuple[str, int]] = set()
        if self.client.has_capability("THREAD=REFERENCES"):
            for f, uids in by_folder.items():
                self.select(f)
                wanted = set(uids)
                for group in self.client.thread("REFERENCES", "ALL"):
                    members = set(_flatten(group))
                    if members & wanted:
                        pool |= {(f, u) for u in members - wanted}
        searched: set[str] = set()
        frontier = set(comp)
        while True:
            if frontier:
                ids = sorted(frontier)
                for f in self.folders:
                    for i in range(0, len(ids), SEARCH_IDS_PER_COMMAND):
                        crit = thread_criteria(ids[i:i + SEARCH_IDS_PER_COMMAND])
                        if crit:
                            pool |= {(f, u) for u in self.search(f, crit)}
                searched |= frontier
                frontier = set()
            pool -= set(chosen)
            for f in {f for f, _ in pool}:
                self.headers_for(f, [u for g, u in pool if g == f])
            grew = True
            while grew:
                grew = False
                for key in sorted(pool - set(chosen)):
                    h = self.headers.get(key)
                    if h is None or not (h.ids & comp):
                        continue
                    via = next(iter(sorted(h.ids & comp)))
                    chosen[key] = _Want(f"thread of {origin.get(via, via)}", h)
                    for i in h.ids - comp:
                        origin[i] = origin.get(via, via)
                    comp |= h.ids
                    frontier |= h.ids - searched
                    grew = True
            if not frontier:
                return

    def _complete_gmail(self, chosen: dict[tuple[str, int], _Want]) -> None:
        thrids: dict[int, str] = {}
        for f in {f for f, _ in chosen}:
            self.select(f)
            uids = [u for g, u in chosen if g == f]
            for uid, data in self.client.fetch(uids, [b"X-GM-THRID"]).items():
                thrids.setdefault(int(data[b"X-GM-THRID"]), f"{f}/{uid}")
        ids = sorted(thrids)
        for f in self.folders:
            for i in range(0, len(ids), SEARCH_IDS_PER_COMMAND):
                crit = gmail_thread_criteria(ids[i:i + SEARCH_IDS_PER_COMMAND])
                for u in self.search(f, crit):
                    chosen.setdefault((f, u), _Want("same Gmail thread (X-GM-THRID)"))


def _flatten(group: Any) -> Iterator[int]:
    if isinstance(group, int):
        yield group
    else:
        for g in group:
            yield from _flatten(g)


# ---------------------------------------------------------------- fetching


def fetch_raw(client: Any, account: Account, folder: str, uids: Sequence[int],
              batch: int | None = None) -> Iterator[list[tuple[int, RawMessage]]]:
    """Yield batches of (uid, RawMessage) for ``uids`` of ``folder`` (BODY.PEEK[]: \\Seen is
    never set). UIDs expunged meanwhile are simply absent. ``batch`` defaults to
    FETCH_BATCH, or GREX_SYNC_BATCH from the environment."""
    batch = batch or int(os.environ.get("GREX_SYNC_BATCH") or FETCH_BATCH)
    gmail = _gmail(client)
    items = [b"BODY.PEEK[]", b"FLAGS"] + ([b"X-GM-LABELS"] if gmail else [])
    source = location_source(account.name, folder)
    client.select_folder(folder, readonly=True)
    for i in range(0, len(uids), batch):
        chunk = list(uids[i:i + batch])
        out = []
        for uid, data in sorted(client.fetch(chunk, items).items()):
            body = data.get(b"BODY[]")
            if body is None:
                continue
            kws = [_text(f) for f in data.get(b"FLAGS", ()) if not _text(f).startswith("\\")]
            kws += [_text(lab) for lab in data.get(b"X-GM-LABELS", ())]
            out.append((int(uid), RawMessage(bytes(body), Location(source, folder,
                                                                   tuple(kws)))))
        yield out


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def location_source(account: str, folder: str) -> str:
    return f"imap:{account}/{folder}"


# ---------------------------------------------------------------- saving


def save_batch(kb: Any, conn: Any, account: Account, folder: str, uidvalidity: int,
               batch: Sequence[tuple[int, RawMessage]], reasons: dict[int, str],
               counts: _Counts, *, subject_merge: bool = False) -> None:
    """Parse and store one fetched batch; its UID rows commit in the same transaction as
    the messages (the raw files are fsynced before it commits)."""
    pairs: list[tuple[RawMessage, Message]] = []
    uid_mid: list[tuple[int, str]] = []
    bad: list[tuple[RawMessage, str]] = []
    for uid, raw in batch:
        try:
            msg = parse_message(raw.data)
        except ParseError as e:
            bad.append((raw, str(e)))
            continue
        pairs.append((raw, msg))
        uid_mid.append((uid, msg.message_id))
        counts.bytes += len(raw.data)
    counts.fetched += len(batch)
    now = time.time()
    with store.transaction(conn):
        result = store.add_messages(kb, conn, pairs, subject_merge=subject_merge)
        _checkpoint("saved")
        for raw, reason in bad:
            store.quarantine(kb, conn, raw, reason)
        conn.executemany(
            "INSERT OR REPLACE INTO sync_message (account, folder, uidvalidity, uid, message_id,"
            " reason, added_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(account.name, folder, uidvalidity, uid, mid, reasons.get(uid, ""), now)
             for uid, mid in uid_mid])
    counts.new += len(result.added)
    counts.updated += result.duplicates
    counts.quarantined += len(bad)


# ---------------------------------------------------------------- one account


def _rows(conn: Any, account: str) -> list[Any]:
    return conn.execute("SELECT * FROM sync_message WHERE account = ?", (account,)).fetchall()


def _sync_account(kb: Any, conn: Any, client: Any, account: Account, *, full: bool,
                  dry_run: bool, counts: _Counts, progress: Progress | None,
                  subject_merge: bool = False) -> None:
    condstore = bool(client.has_capability("CONDSTORE"))
    folders = resolve_folders(client, account)
    counts.folders = len(folders)
    fp = selection_fingerprint(account, folders)
    snaps = {f: _status(client, f, condstore) for f in folders}
    stored = {r["folder"]: r for r in conn.execute(
        "SELECT * FROM sync_folder WHERE account = ?", (account.name,))}

    def unchanged(f: str) -> bool:
        r, s = stored.get(f), snaps[f]
        return (r is not None and r["selection"] == fp and r["uidvalidity"] == s.uidvalidity
                and r["uidnext"] == s.uidnext and r["messages"] == s.messages
                and (not condstore or r["highestmodseq"] == s.highestmodseq))

    changed = [f for f in folders if full or not unchanged(f)]
    gone = [f for f in stored if f not in folders]
    rows = _rows(conn, account.name)
    gone_rows = [r for r in rows if r["folder"] not in folders]
    counts.changed_folders = len(changed)
    if not changed and not gone and not gone_rows:
        return

    sel = _Selector(client, account, folders)
    cross_folder = account.whole_thread and not is_whole_folder(account)
    scope = folders if (cross_folder and changed) else changed
    desired = sel.seeds(scope)
    if cross_folder:
        sel.complete_threads(desired)
    for f in scope:
        sel.select(f)  # every scoped folder's UIDVALIDITY is known even when nothing matched

    # Existing rows in scope: current (same UIDVALIDITY) or stale (to be re-matched).
    current: dict[tuple[str, int], Any] = {}
    stale: dict[str, dict[str, list[Any]]] = {}
    for r in rows:
        f = r["folder"]
        if f not in scope:
            continue
        if r["uidvalidity"] == sel.uidvalidity[f]:
            current[(f, r["uid"])] = r
        else:
            stale.setdefault(f, {}).setdefault(r["message_id"], []).append(r)

    add: dict[str, list[int]] = {}
    rematch: list[tuple[Any, int]] = []
    for f in scope:
        wanted = sorted(u for g, u in desired if g == f and (g, u) not in current)
        if f in stale and wanted:
            hdrs = sel.headers_for(f, wanted)
            keep_wanted = []
            for u in wanted:
                h = hdrs.get(u)
                old = stale[f].get(h.message_id) if h and h.message_id else None
                if old:
                    rematch.append((old.pop(), u))
                    if not old:
                        del stale[f][h.message_id]
                else:
                    keep_wanted.append(u)
            wanted = keep_wanted
        if wanted:
            add[f] = wanted

    removals = [r for k, r in current.items() if k not in desired]
    removals += [r for by_mid in stale.values() for rs in by_mid.values() for r in rs]
    removals += gone_rows

    # The plan (what --dry-run shows).
    for f, uids in add.items():
        hdrs = sel.headers_for(f, uids) if dry_run else {}
        for u in uids:
            h = hdrs.get(u) or desired[(f, u)].header
            counts.plan.append(PlanItem("add", account.name, f, u, h.message_id if h else "",
                                        h.subject if h else "", desired[(f, u)].reason))
    for r, u in rematch:
        counts.plan.append(PlanItem("rematch", account.name, r["folder"], u, r["message_id"],
                                    "", f"UIDVALIDITY changed; was uid {r['uid']}"))
    unshare = "remove" if account.on_unshare == "remove" else "keep"
    for r in removals:
        why = ("folder no longer configured" if r["folder"] not in folders
               else "no longer chosen (unshared or deleted on the server)")
        counts.plan.append(PlanItem(unshare, account.name, r["folder"], r["uid"],
                                    r["message_id"], "", why))
    if dry_run:
        counts.new = sum(len(v) for v in add.values())
        counts.removed = len(removals) if unshare == "remove" else 0
        counts.updated = len(rematch)
        return

    # 1. re-matched UIDs: no fetch.
    if rematch:
        with store.transaction(conn):
            conn.executemany(
                "UPDATE sync_message SET uid = ?, uidvalidity = ? WHERE account = ?"
                " AND folder = ? AND uid = ? AND uidvalidity = ?",
                [(u, sel.uidvalidity[r["folder"]], account.name, r["folder"], r["uid"],
                  r["uidvalidity"]) for r, u in rematch])
        counts.updated += len(rematch)

    # 2. fetch and save, batch by batch.
    total = sum(len(v) for v in add.values())
    done = 0
    for f, uids in add.items():
        reasons = {u: desired[(f, u)].reason for u in uids}
        for batch in fetch_raw(client, account, f, uids):
            _checkpoint("fetched")
            save_batch(kb, conn, account, f, sel.uidvalidity[f], batch, reasons, counts,
                       subject_merge=subject_merge)
            done += len(batch)
            if progress:
                progress(f"{account.name}/{f}", done, total)
        sel._selected = f

    # 3. removals, after every fetch (a message moved between folders never leaves).
    for r in removals:
        with store.transaction(conn):
            conn.execute("DELETE FROM sync_message WHERE account = ? AND folder = ? AND uid = ?"
                         " AND uidvalidity = ?",
                         (account.name, r["folder"], r["uid"], r["uidvalidity"]))
            still = conn.execute(
                "SELECT 1 FROM sync_message WHERE account = ? AND folder = ? AND message_id = ?",
                (account.name, r["folder"], r["message_id"])).fetchone()
            if not still and unshare == "remove":
                store.remove_location(kb, conn, r["message_id"],
                                      location_source(account.name, r["folder"]),
                                      subject_merge=subject_merge)
                counts.removed += 1
        _checkpoint("removed")

    # 4. folder state last.
    now = time.time()
    with store.transaction(conn):
        _write_state(conn, account, changed, gone, snaps, fp, now)


def _write_state(conn: Any, account: Account, changed: Sequence[str], gone: Sequence[str],
                 snaps: dict[str, _Snapshot], fp: str, now: float) -> None:
    conn.executemany(
        "INSERT OR REPLACE INTO sync_folder (account, folder, uidvalidity, uidnext, messages,"
        " highestmodseq, selection, synced_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(account.name, f, snaps[f].uidvalidity, snaps[f].uidnext, snaps[f].messages,
          snaps[f].highestmodseq, fp, now) for f in changed])
    conn.executemany("DELETE FROM sync_folder WHERE account = ? AND folder = ?",
                     [(account.name, f) for f in gone])
    _checkpoint("state")


def sync_account(kb: Any, conn: Any, account: Account, *, full: bool = False,
                 dry_run: bool = False, progress: Progress | None = None,
                 subject_merge: bool = False,
                 client_factory: Callable[[Account], Any] = connect,
                 sleep: Callable[[float], None] = time.sleep) -> AccountReport:
    """Sync one account, retrying dropped connections with backoff (0.25 s doubling, up to
    6 attempts); each attempt resumes from what the previous one saved."""
    counts = _Counts()
    delay = 0.25
    for attempt in range(1, MAX_ATTEMPTS + 1):
        client = None
        try:
            client = client_factory(account)
            _sync_account(kb, conn, client, account, full=full, dry_run=dry_run,
                          counts=counts, progress=progress, subject_merge=subject_merge)
            break
        except GrexError:
            raise
        except Exception as e:
            if not _is_transient(e):
                raise SyncError(f"account {account.name!r}: IMAP error: "
                                f"{type(e).__name__}: {e}") from e
            if attempt == MAX_ATTEMPTS:
                raise ConnectError(f"account {account.name!r}: {e}",
                                   hint=f"gave up after {attempt} attempts") from None
            counts.retries += 1
            counts.plan.clear()
            sleep(delay)
            delay = min(delay * 2, 8.0)
        finally:
            if client is not None:
                _close(client)
    return AccountReport(account.name, counts.folders, counts.changed_folders, counts.new,
                         counts.updated, counts.removed, counts.quarantined, counts.fetched,
                         counts.bytes, counts.retries, tuple(counts.plan))


def ensure_schema(conn: Any) -> None:
    store.ensure_schema(conn, "sync", SCHEMA)


def sync(kb: Any, conn: Any, config: Config, *, account: str | None = None, full: bool = False,
         dry_run: bool = False, progress: Progress | None = None,
         client_factory: Callable[[Account], Any] = connect,
         sleep: Callable[[float], None] = time.sleep) -> SyncReport:
    """Sync every configured account (or the one named). The caller holds the KB's writer
    lock (not needed for ``dry_run``)."""
    ensure_schema(conn)
    accounts = (config.account(account),) if account else config.accounts
    if not accounts:
        raise ConfigError("no accounts configured",
                          hint="add an [[accounts]] table to grex.toml (see docs/sync.md)")
    reports = [sync_account(kb, conn, a, full=full, dry_run=dry_run, progress=progress,
                            subject_merge=config.threading.subject_merge,
                            client_factory=client_factory, sleep=sleep) for a in accounts]
    return SyncReport(tuple(reports), dry_run)


# ---------------------------------------------------------------- why


def why(conn: Any, thread_id: str) -> WhyReport:
    """Why a thread is in the KB: which account/folder/UID holds each message and why."""
    ensure_schema(conn)
    thread = store.get_thread(conn, thread_id)
    if thread is None:
        raise GrexError(f"no thread {thread_id!r} in the knowledge base",
                        hint="`grex threads` lists them")
    entries: list[WhyEntry] = []
    others: list[str] = []
    subjects: dict[str, str] = {}
    for mid in thread.message_ids:
        m = store.get_message(conn, mid)
        subjects[mid] = m.subject if m else ""
        for r in conn.execute("SELECT * FROM sync_message WHERE message_id = ?"
                              " ORDER BY account, folder, uid", (mid,)):
            entries.append(WhyEntry(mid, subjects[mid], r["account"], r["folder"], r["uid"],
                                    r["reason"]))
        for loc in store.message_locations(conn, mid):
            if not loc.source.startswith("imap:") and loc.source not in others:
                others.append(loc.source)
    shared_by = tuple(sorted({e.account for e in entries}))
    return WhyReport(thread.thread_id, thread.subject, shared_by, tuple(entries), tuple(others))
