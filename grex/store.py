"""The knowledge base on disk: a raw Maildir, an SQLite catalog, and the one-writer lock.

    KB/
      grex.toml        configuration (commented, written by `grex init`)
      raw/             every message's bytes as received: a Maildir (cur/ new/ tmp/) that
                       notmuch and mu can read; file names are the content hash
      catalog.sqlite   messages, locations (where each copy was seen), threads, sync state,
                       extraction results; WAL mode; per-component schema versions
      quarantine/      bytes of messages that could not be parsed, with the reason in the catalog
      index/           Whoosh index (derived: `grex reindex`)
      site/            exported HTML (derived)
      logs/            sync logs
      lock             the writer lock (fcntl); lock.json says who holds it

Durability: a message's raw file is written to raw/tmp, fsynced and renamed into raw/cur
(and the directory fsynced) before the catalog row that names it commits. A crash in between
leaves an orphan file that the next run adopts; nothing is lost or duplicated, because the
file name is the content hash and catalog inserts are keyed by Message-ID.

Derived stages follow the ``changes`` feed (seq, kind, key, op) from their own cursor and
move the cursor only after their own output is durable.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from grex.config import CONFIG_NAME, DEFAULT_TOML
from grex.errors import KBError, KBLocked, KBNotFound
from grex.models import (
    Address,
    Attachment,
    Body,
    Location,
    Message,
    Quarantined,
    RawMessage,
    Thread,
    ThreadNode,
    ThreadSummary,
)
from grex.threads import Link, build_threads, thread_id_for

CATALOG = "catalog.sqlite"

# ------------------------------------------------------------------ schema

CORE_MIGRATIONS: list[str] = [
    """
    CREATE TABLE messages (
        message_id TEXT PRIMARY KEY,
        thread_id TEXT,
        raw_path TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        subject TEXT NOT NULL DEFAULT '',
        sender_name TEXT NOT NULL DEFAULT '',
        sender_addr TEXT NOT NULL DEFAULT '',
        to_json TEXT NOT NULL DEFAULT '[]',
        cc_json TEXT NOT NULL DEFAULT '[]',
        date REAL NOT NULL,
        date_source TEXT NOT NULL DEFAULT 'header',
        in_reply_to_json TEXT NOT NULL DEFAULT '[]',
        references_json TEXT NOT NULL DEFAULT '[]',
        body_new TEXT NOT NULL DEFAULT '',
        body_quoted TEXT NOT NULL DEFAULT '',
        body_signature TEXT NOT NULL DEFAULT '',
        body_from_html INTEGER NOT NULL DEFAULT 0,
        body_truncated INTEGER NOT NULL DEFAULT 0,
        attachments_json TEXT NOT NULL DEFAULT '[]',
        size INTEGER NOT NULL DEFAULT 0,
        synthetic_id INTEGER NOT NULL DEFAULT 0,
        list_id TEXT NOT NULL DEFAULT '',
        defects_json TEXT NOT NULL DEFAULT '[]',
        added_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX messages_thread ON messages(thread_id);
    CREATE INDEX messages_date ON messages(date);
    CREATE INDEX messages_hash ON messages(content_hash);
    CREATE TABLE refs (
        message_id TEXT NOT NULL,
        ref_id TEXT NOT NULL,
        PRIMARY KEY (message_id, ref_id)
    ) WITHOUT ROWID;
    CREATE INDEX refs_ref ON refs(ref_id);
    CREATE TABLE locations (
        message_id TEXT NOT NULL,
        source TEXT NOT NULL,
        folder TEXT NOT NULL DEFAULT '',
        keywords_json TEXT NOT NULL DEFAULT '[]',
        content_hash TEXT NOT NULL DEFAULT '',
        added_at REAL NOT NULL,
        PRIMARY KEY (message_id, source)
    ) WITHOUT ROWID;
    CREATE INDEX locations_source ON locations(source);
    CREATE TABLE threads (
        thread_id TEXT PRIMARY KEY,
        root_message_id TEXT NOT NULL,
        subject TEXT NOT NULL DEFAULT '',
        first_date REAL NOT NULL,
        last_date REAL NOT NULL,
        message_count INTEGER NOT NULL,
        participants_json TEXT NOT NULL DEFAULT '[]',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX threads_last ON threads(last_date);
    CREATE TABLE nodes (
        thread_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        message_id TEXT NOT NULL,
        parent_id TEXT,
        depth INTEGER NOT NULL,
        ghost INTEGER NOT NULL,
        PRIMARY KEY (thread_id, position)
    ) WITHOUT ROWID;
    CREATE INDEX nodes_message ON nodes(message_id);
    CREATE TABLE thread_merges (
        old_thread_id TEXT PRIMARY KEY,
        new_thread_id TEXT NOT NULL,
        merged_at REAL NOT NULL
    );
    CREATE TABLE quarantine (
        content_hash TEXT NOT NULL,
        source TEXT NOT NULL,
        reason TEXT NOT NULL,
        path TEXT NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (content_hash, source)
    );
    CREATE TABLE changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        op TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE TABLE cursors (name TEXT PRIMARY KEY, seq INTEGER NOT NULL);
    """,
    # v2: the feed is pruned; a message's changes are found by key (tombstones, doctor)
    """
    CREATE INDEX changes_key ON changes(kind, key, seq);
    """,
    # v3: signed / encrypted from the MIME structure (NULL: stored before; readers sniff)
    """
    ALTER TABLE messages ADD COLUMN security_json TEXT;
    """,
]


def ensure_schema(conn: sqlite3.Connection, component: str, migrations: Sequence[str]) -> int:
    """Run the migrations of ``component`` that this catalog has not run yet.

    Each component (core, sync, extract, index, ...) owns its tables and keeps its own
    version in ``meta``. Idempotent; cheap when up to date. Returns the version.
    """
    conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    key = f"schema_version:{component}"
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    have = int(row[0]) if row else 0
    if have > len(migrations):
        raise KBError(
            f"the catalog's {component} schema is version {have}, newer than this grex "
            f"knows ({len(migrations)})", hint="upgrade grex",
        )
    for version in range(have + 1, len(migrations) + 1):
        with transaction(conn):
            for stmt in _statements(migrations[version - 1]):
                conn.execute(stmt)
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                         (key, str(version)))
    return len(migrations)


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
    if conn.in_transaction:  # nested: the outer transaction decides
        yield conn
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# ------------------------------------------------------------------ the KB directory

# Worker processes forked while a writer holds the lock (parsing, spaCy, Whoosh) must not
# inherit it: an flock belongs to the open file, so an orphaned worker would keep the KB
# locked after its parent was killed. Children close the inherited descriptors at once.
_HELD_LOCK_FDS: set[int] = set()


def _close_lock_fds_in_child() -> None:
    for fd in list(_HELD_LOCK_FDS):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD_LOCK_FDS.clear()


os.register_at_fork(after_in_child=_close_lock_fds_in_child)


@dataclass(frozen=True)
class KB:
    path: Path

    @property
    def raw_dir(self) -> Path:
        return self.path / "raw"

    @property
    def catalog_path(self) -> Path:
        return self.path / CATALOG

    @property
    def index_dir(self) -> Path:
        return self.path / "index"

    @property
    def site_dir(self) -> Path:
        return self.path / "site"

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def quarantine_dir(self) -> Path:
        return self.path / "quarantine"

    @property
    def models_dir(self) -> Path:
        return self.path / "models"

    @property
    def lock_path(self) -> Path:
        return self.path / "lock"

    @property
    def lock_info_path(self) -> Path:
        return self.path / "lock.json"

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_NAME

    @classmethod
    def init(cls, path: Path | str) -> KB:
        """Create a KB (idempotent: an existing KB is left as it is)."""
        kb = cls(Path(path).absolute())
        try:
            for d in (kb.path, kb.raw_dir / "cur", kb.raw_dir / "new", kb.raw_dir / "tmp",
                      kb.quarantine_dir, kb.logs_dir):
                d.mkdir(parents=True, exist_ok=True)
            if not kb.config_path.exists():
                kb.config_path.write_text(DEFAULT_TOML, encoding="utf-8")
        except OSError as e:
            raise KBError(f"cannot create the knowledge base at {kb.path}: {e.strerror}") from None
        conn = kb.connect()
        conn.close()
        return kb

    @classmethod
    def open(cls, path: Path | str) -> KB:
        kb = cls(Path(path).absolute())
        if not kb.catalog_path.is_file():
            raise KBNotFound(f"no knowledge base at {kb.path}",
                             hint="run `grex init` or pass --kb PATH")
        return kb

    def connect(self, *, readonly: bool = False) -> sqlite3.Connection:
        """A catalog connection: WAL, foreign keys, a busy timeout; schema ensured."""
        try:
            if readonly:
                conn = sqlite3.connect(f"file:{self.catalog_path}?mode=ro", uri=True,
                                       timeout=30, isolation_level=None,
                                       check_same_thread=False)
            else:
                conn = sqlite3.connect(self.catalog_path, timeout=30, isolation_level=None,
                                       check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 30000")
            if not readonly:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                ensure_schema(conn, "core", CORE_MIGRATIONS)
        except sqlite3.DatabaseError as e:
            raise KBError(f"the catalog {self.catalog_path} can't be opened: {e}",
                          hint="`grex doctor` checks it") from None
        return conn

    # -------------------------------------------------------------- the writer lock

    @contextlib.contextmanager
    def writer_lock(self, *, wait: bool = False, timeout: float | None = None,
                    command: str = "") -> Iterator[None]:
        """Hold the one-writer lock. Raises KBLocked at once (or after ``timeout`` with wait)."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        _HELD_LOCK_FDS.add(fd)
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                    if not wait or (deadline is not None and time.monotonic() > deadline):
                        holder = self.lock_holder()
                        who = (f" by pid {holder.get('pid')} ({holder.get('command', '?')}, "
                               f"since {holder.get('since', '?')})") if holder else ""
                        raise KBLocked(f"the knowledge base is locked{who}",
                                       hint="another sync is running; retry later or use --wait"
                                       ) from None
                    time.sleep(0.1)
            info = {"pid": os.getpid(), "host": socket.gethostname(),
                    "command": command or " ".join(sys.argv[:3]),
                    "since": datetime.now(UTC).isoformat(timespec="seconds")}
            tmp = self.lock_info_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(info), encoding="utf-8")
            os.replace(tmp, self.lock_info_path)
            try:
                yield
            finally:
                with contextlib.suppress(OSError):
                    self.lock_info_path.unlink()
        finally:
            _HELD_LOCK_FDS.discard(fd)
            os.close(fd)  # closing releases the flock

    def lock_holder(self) -> dict[str, Any] | None:
        """Who holds (or last held and died holding) the lock, if recorded."""
        try:
            return json.loads(self.lock_info_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def is_locked(self) -> bool:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        except OSError:
            return True
        finally:
            os.close(fd)


# ------------------------------------------------------------------ raw Maildir


def raw_name(content_hash: str) -> str:
    return f"{content_hash[:40]}.grex:2,"


def write_raw(kb: KB, data: bytes, content_hash: str, *, durable: bool = True) -> str:
    """Store bytes in raw/cur (write to tmp, rename). Returns the path under raw/.

    Idempotent: the name is the content hash, so an existing file with the right hash is
    the same message (one with the wrong hash, left by a crash, is rewritten). With
    ``durable=False`` the caller makes a whole batch durable with one ``sync_raw_dir``
    before its catalog rows commit.
    """
    import hashlib

    rel = f"cur/{raw_name(content_hash)}"
    final = kb.raw_dir / rel
    if final.exists():
        try:
            if hashlib.sha256(final.read_bytes()).hexdigest() == content_hash:
                return rel
        except OSError:
            pass
    tmp = kb.raw_dir / "tmp" / f"{raw_name(content_hash)}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    return rel


def _libc_syncfs() -> Any:
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):
        return None


_SYNCFS = _libc_syncfs()


def sync_raw_dir(kb: KB) -> None:
    """Make every file written to raw/ so far durable: one syncfs(2) of the filesystem
    (where available, else fsync of each recent file is the caller's job) and an fsync
    of raw/cur itself, so the renames are durable too."""
    fd = os.open(kb.raw_dir / "cur", os.O_RDONLY)
    try:
        if _SYNCFS is not None and _SYNCFS(fd) == 0:
            return
        os.fsync(fd)
    finally:
        os.close(fd)


def read_raw(kb: KB, raw_path: str) -> bytes:
    return (kb.raw_dir / raw_path).read_bytes()


# ------------------------------------------------------------------ rows <-> models


def _addr_json(addrs: Iterable[Address]) -> str:
    return json.dumps([[a.name, a.addr] for a in addrs], ensure_ascii=False)


def _addrs(text: str) -> tuple[Address, ...]:
    return tuple(Address(name=n, addr=a) for n, a in json.loads(text))


def message_row(m: Message, raw_path: str, thread_id: str | None, now: float) -> tuple[Any, ...]:
    return (
        m.message_id, thread_id, raw_path, m.content_hash, m.subject,
        m.sender.name if m.sender else "", m.sender.addr if m.sender else "",
        _addr_json(m.to), _addr_json(m.cc), m.date.timestamp(), m.date_source,
        json.dumps(m.in_reply_to), json.dumps(m.references),
        m.body.new, m.body.quoted, m.body.signature, int(m.body.from_html),
        int(m.body.truncated),
        json.dumps([[a.filename, a.content_type, a.size, a.sha256] for a in m.attachments],
                   ensure_ascii=False),
        m.size, int(m.synthetic_id), m.list_id, json.dumps(list(m.defects), ensure_ascii=False),
        now, now, None if m.security is None else json.dumps(list(m.security)),
    )


_MESSAGE_COLUMNS = (
    "message_id, thread_id, raw_path, content_hash, subject, sender_name, sender_addr, "
    "to_json, cc_json, date, date_source, in_reply_to_json, references_json, body_new, "
    "body_quoted, body_signature, body_from_html, body_truncated, attachments_json, size, "
    "synthetic_id, list_id, defects_json, added_at, updated_at, security_json"
)


def row_to_message(row: sqlite3.Row) -> Message:
    sender = (Address(row["sender_name"], row["sender_addr"])
              if row["sender_name"] or row["sender_addr"] else None)
    return Message(
        message_id=row["message_id"], subject=row["subject"], sender=sender,
        to=_addrs(row["to_json"]), cc=_addrs(row["cc_json"]),
        date=datetime.fromtimestamp(row["date"], UTC),
        in_reply_to=tuple(json.loads(row["in_reply_to_json"])),
        references=tuple(json.loads(row["references_json"])),
        body=Body(new=row["body_new"], quoted=row["body_quoted"],
                  signature=row["body_signature"], from_html=bool(row["body_from_html"]),
                  truncated=bool(row["body_truncated"])),
        attachments=tuple(Attachment(*a) for a in json.loads(row["attachments_json"])),
        content_hash=row["content_hash"], size=row["size"],
        synthetic_id=bool(row["synthetic_id"]), date_source=row["date_source"],
        list_id=row["list_id"], defects=tuple(json.loads(row["defects_json"])),
        security=None if row["security_json"] is None else tuple(json.loads(row["security_json"])),
    )


# ------------------------------------------------------------------ change feed


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    kind: str  # message | thread
    key: str
    op: str  # upsert | delete


def log_change(conn: sqlite3.Connection, kind: str, key: str, op: str) -> None:
    conn.execute("INSERT INTO changes(kind, key, op, at) VALUES (?, ?, ?, ?)",
                 (kind, key, op, time.time()))


def get_cursor(conn: sqlite3.Connection, name: str) -> int:
    row = conn.execute("SELECT seq FROM cursors WHERE name = ?", (name,)).fetchone()
    return int(row[0]) if row else 0


def set_cursor(conn: sqlite3.Connection, name: str, seq: int) -> None:
    conn.execute("INSERT INTO cursors(name, seq) VALUES (?, ?) "
                 "ON CONFLICT(name) DO UPDATE SET seq = excluded.seq", (name, seq))


def has_cursor(conn: sqlite3.Connection, name: str) -> bool:
    """Whether stage ``name`` ever recorded a position (a stage without one must look at
    the whole catalog: the feed may have been pruned before it first ran)."""
    return conn.execute("SELECT 1 FROM cursors WHERE name = ?", (name,)).fetchone() is not None


def last_seq(conn: sqlite3.Connection) -> int:
    """The newest change's seq; it never goes back, even when the feed has been pruned."""
    row = conn.execute("SELECT MAX(seq) FROM changes").fetchone()
    if row[0] is not None:
        return int(row[0])
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
    return int(row[0]) if row else 0


def prune_changes(conn: sqlite3.Connection) -> int:
    """Drop the changes every stage has consumed (seq at or below the lowest cursor).

    A stage that never ran has no cursor and starts from the whole catalog, so it needs
    no old changes. A message's last 'delete' stays, as a tombstone: `grex doctor` tells a
    removed message's leftover raw file (a crash before the unlink) from one never recorded
    by it. Returns how many rows went.
    """
    row = conn.execute("SELECT MIN(seq) FROM cursors").fetchone()
    if row[0] is None:
        return 0
    floor = int(row[0])
    with transaction(conn):
        return conn.execute(
            "DELETE FROM changes WHERE seq <= ? AND NOT (kind = 'message' AND op = 'delete' "
            "AND seq = (SELECT MAX(c.seq) FROM changes c WHERE c.kind = 'message' "
            "AND c.key = changes.key))", (floor,)).rowcount


def changes_since(conn: sqlite3.Connection, cursor_name: str) -> tuple[list[Change], int]:
    """Changes after the cursor, collapsed to the last op per (kind, key), and the last seq."""
    start = get_cursor(conn, cursor_name)
    rows = conn.execute("SELECT seq, kind, key, op FROM changes WHERE seq > ? ORDER BY seq",
                        (start,)).fetchall()
    last: dict[tuple[str, str], Change] = {}
    for r in rows:
        last.pop((r["kind"], r["key"]), None)
        last[(r["kind"], r["key"])] = Change(r["seq"], r["kind"], r["key"], r["op"])
    end = rows[-1]["seq"] if rows else start
    return list(last.values()), end


# ------------------------------------------------------------------ adding and removing


@dataclass(frozen=True)
class AddResult:
    added: tuple[str, ...] = ()  # new Message-IDs
    duplicates: int = 0  # a new copy (location) of a message already held
    unchanged: int = 0  # this very copy was already recorded
    threads_changed: int = 0
    threads_merged: int = 0


def add_messages(kb: KB, conn: sqlite3.Connection,
                 pairs: Iterable[tuple[RawMessage, Message]], *,
                 subject_merge: bool = False) -> AddResult:
    """Store messages durably and thread them, in one transaction.

    Raw files are written and fsynced first; then the catalog rows (messages, refs,
    locations, changes) and the re-threading of every affected thread commit together.
    """
    pairs = list(pairs)
    now = time.time()
    # 1. raw bytes, durable before the catalog names them
    new_pairs: list[tuple[RawMessage, Message, str]] = []
    known = _existing_ids(conn, [m.message_id for _, m in pairs])
    for raw, m in pairs:
        if m.message_id in known:
            new_pairs.append((raw, m, ""))
            continue
        new_pairs.append((raw, m, write_raw(kb, raw.data, m.content_hash,
                                            durable=_SYNCFS is None)))
        known.add(m.message_id)  # a second copy in this same batch is a duplicate
    if any(rel for _, _, rel in new_pairs):
        sync_raw_dir(kb)
    # 2. the catalog
    added: list[str] = []
    duplicates = unchanged = 0
    with transaction(conn):
        for raw, m, rel in new_pairs:
            if rel:
                conn.execute(f"INSERT OR IGNORE INTO messages({_MESSAGE_COLUMNS}) VALUES "
                             f"({', '.join('?' * 26)})", message_row(m, rel, None, now))
                _write_refs(conn, m)
                added.append(m.message_id)
                log_change(conn, "message", m.message_id, "upsert")
            cur = conn.execute(
                "INSERT OR IGNORE INTO locations(message_id, source, folder, keywords_json, "
                "content_hash, added_at) VALUES (?, ?, ?, ?, ?, ?)",
                (m.message_id, raw.location.source, raw.location.folder,
                 json.dumps(list(raw.location.keywords)), m.content_hash, now))
            if not rel:
                if cur.rowcount:
                    duplicates += 1
                else:
                    unchanged += 1
        changed, merged = rethread(conn, added, subject_merge=subject_merge) if added else (0, 0)
    return AddResult(added=tuple(added), duplicates=duplicates, unchanged=unchanged,
                     threads_changed=changed, threads_merged=merged)


def _write_refs(conn: sqlite3.Connection, m: Message) -> None:
    conn.execute("DELETE FROM refs WHERE message_id = ?", (m.message_id,))
    conn.executemany("INSERT OR IGNORE INTO refs(message_id, ref_id) VALUES (?, ?)",
                     [(m.message_id, r) for r in dict.fromkeys(m.in_reply_to + m.references)
                      if r != m.message_id])


def replace_parsed(conn: sqlite3.Connection, m: Message) -> None:
    """Overwrite the parsed fields of a held message (same Message-ID, re-parsed from its
    raw file by a newer parser); its thread, raw path and added time stay."""
    now = time.time()
    row = message_row(m, "", None, now)
    cols = _MESSAGE_COLUMNS.split(", ")
    parsed = [(c, v) for c, v in zip(cols, row, strict=True)
              if c not in ("message_id", "thread_id", "raw_path", "added_at")]
    conn.execute(f"UPDATE messages SET {', '.join(f'{c} = ?' for c, _ in parsed)} "
                 "WHERE message_id = ?", (*(v for _, v in parsed), m.message_id))
    _write_refs(conn, m)
    log_change(conn, "message", m.message_id, "upsert")


def _existing_ids(conn: sqlite3.Connection, ids: Sequence[str]) -> set[str]:
    out: set[str] = set()
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        q = f"SELECT message_id FROM messages WHERE message_id IN ({','.join('?' * len(chunk))})"
        out.update(r[0] for r in conn.execute(q, chunk))
    return out


def update_location_keywords(conn: sqlite3.Connection, message_id: str, source: str,
                             keywords: Sequence[str]) -> bool:
    """Record a copy's current keywords (IMAP keywords / Gmail labels changed on the
    server). The message is re-announced on the change feed so the index's labels follow.
    Returns whether anything changed. Runs inside the caller's transaction, if any."""
    new = json.dumps(list(keywords))
    with transaction(conn):
        cur = conn.execute("UPDATE locations SET keywords_json = ? WHERE message_id = ? AND "
                           "source = ? AND keywords_json != ?", (new, message_id, source, new))
        if cur.rowcount:
            log_change(conn, "message", message_id, "upsert")
    return bool(cur.rowcount)


def has_location(conn: sqlite3.Connection, source: str, content_hash: str) -> bool:
    """Was this exact copy (source + bytes) recorded already? Lets importers skip parsing."""
    return conn.execute("SELECT 1 FROM locations WHERE source = ? AND content_hash = ?",
                        (source, content_hash)).fetchone() is not None


def quarantine(kb: KB, conn: sqlite3.Connection, raw: RawMessage, reason: str) -> Quarantined:
    """Keep the bytes of a message that can't be taken in, with the reason."""
    import hashlib

    h = hashlib.sha256(raw.data).hexdigest()
    path = kb.quarantine_dir / f"{h[:40]}.eml"
    if not path.exists():
        kb.quarantine_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(raw.data)
        os.replace(tmp, path)
    with transaction(conn):
        conn.execute("INSERT OR REPLACE INTO quarantine(content_hash, source, reason, path, at) "
                     "VALUES (?, ?, ?, ?, ?)", (h, raw.location.source, reason[:500],
                                                str(path.relative_to(kb.path)), time.time()))
    return Quarantined(source=raw.location.source, reason=reason, content_hash=h)


def list_quarantine(conn: sqlite3.Connection) -> list[Quarantined]:
    return [Quarantined(r["source"], r["reason"], r["content_hash"]) for r in
            conn.execute("SELECT * FROM quarantine ORDER BY at")]


def remove_location(kb: KB, conn: sqlite3.Connection, message_id: str, source: str, *,
                    subject_merge: bool = False) -> bool:
    """Forget one copy of a message. When no copy remains the message leaves the KB:
    its row, its raw file, its thread membership; the change feed says 'delete'.
    Returns True when the message itself was removed."""
    doomed: str | None = None
    with transaction(conn):
        conn.execute("DELETE FROM locations WHERE message_id = ? AND source = ?",
                     (message_id, source))
        left = conn.execute("SELECT COUNT(*) FROM locations WHERE message_id = ?",
                            (message_id,)).fetchone()[0]
        if left:
            return False
        doomed = _remove_message(conn, message_id, subject_merge=subject_merge)
    # the raw file goes only after the deletion committed: a crash in between leaves an
    # orphan file (`grex doctor` reports it), never a catalog row without its bytes
    if doomed:
        with contextlib.suppress(FileNotFoundError):
            (kb.raw_dir / doomed).unlink()
    return doomed is not None


def _remove_message(conn: sqlite3.Connection, message_id: str, *,
                    subject_merge: bool) -> str | None:
    """Delete a message's rows and re-thread its thread; returns its raw file to unlink
    once the transaction commits ("" when another row shares those bytes), or None."""
    row = conn.execute("SELECT raw_path, content_hash, thread_id FROM messages "
                       "WHERE message_id = ?", (message_id,)).fetchone()
    if row is None:
        return None
    conn.execute("DELETE FROM messages WHERE message_id = ?", (message_id,))
    conn.execute("DELETE FROM refs WHERE message_id = ?", (message_id,))
    log_change(conn, "message", message_id, "delete")
    if row["thread_id"]:
        rest = [r[0] for r in conn.execute("SELECT message_id FROM messages WHERE thread_id = ?",
                                           (row["thread_id"],))]
        if rest:
            rethread(conn, rest, subject_merge=subject_merge, dropped_thread=row["thread_id"])
        else:
            conn.execute("DELETE FROM threads WHERE thread_id = ?", (row["thread_id"],))
            conn.execute("DELETE FROM nodes WHERE thread_id = ?", (row["thread_id"],))
            log_change(conn, "thread", row["thread_id"], "delete")
    still = conn.execute("SELECT 1 FROM messages WHERE content_hash = ?",
                         (row["content_hash"],)).fetchone()
    return "" if still else row["raw_path"]


# ------------------------------------------------------------------ threading


def rethread(conn: sqlite3.Connection, seed_ids: Sequence[str], *, subject_merge: bool = False,
             dropped_thread: str | None = None) -> tuple[int, int]:
    """Recompute every thread the seed messages touch. Returns (threads changed, merged).

    Affected: threads holding a seed or an id a seed names, and threads of messages that
    name a seed. Existing thread ids survive; when components join, the oldest thread's id
    survives and the others are recorded in thread_merges.
    """
    now = time.time()
    seeds = set(seed_ids)
    named = set(seeds)
    for chunk in _chunks(list(seeds)):
        named.update(r[0] for r in conn.execute(
            f"SELECT ref_id FROM refs WHERE message_id IN ({_qs(chunk)})", chunk))
    affected: set[str] = set()
    if dropped_thread:
        affected.add(dropped_thread)
    for chunk in _chunks(list(named)):
        affected.update(r[0] for r in conn.execute(
            f"SELECT thread_id FROM nodes WHERE message_id IN ({_qs(chunk)})", chunk))
        affected.update(r[0] for r in conn.execute(
            f"SELECT DISTINCT m.thread_id FROM refs r JOIN messages m "
            f"ON m.message_id = r.message_id WHERE r.ref_id IN ({_qs(chunk)}) "
            f"AND m.thread_id IS NOT NULL", chunk))
        affected.update(r[0] for r in conn.execute(
            f"SELECT thread_id FROM messages WHERE message_id IN ({_qs(chunk)}) "
            f"AND thread_id IS NOT NULL", chunk))
    members = set(seeds)
    for chunk in _chunks(list(affected)):
        members.update(r[0] for r in conn.execute(
            f"SELECT message_id FROM messages WHERE thread_id IN ({_qs(chunk)})", chunk))
    rows: dict[str, sqlite3.Row] = {}
    for chunk in _chunks(list(members)):
        for r in conn.execute(
                f"SELECT message_id, thread_id, in_reply_to_json, references_json, date, subject, "
                f"sender_name, sender_addr, to_json, cc_json FROM messages "
                f"WHERE message_id IN ({_qs(chunk)})", chunk):
            rows[r["message_id"]] = r
    links = [Link(r["message_id"], tuple(json.loads(r["in_reply_to_json"])),
                  tuple(json.loads(r["references_json"])), r["date"], r["subject"])
             for r in rows.values()]
    components = build_threads(links, subject_merge=subject_merge)

    created: dict[str, float] = {}
    started: dict[str, float] = {}
    for chunk in _chunks(list(affected)):
        for r in conn.execute(f"SELECT thread_id, created_at, first_date FROM threads "
                              f"WHERE thread_id IN ({_qs(chunk)})", chunk):
            created[r[0]] = r[1]
            started[r[0]] = r[2]
    used: set[str] = set()
    merged = 0
    # biggest components first claim their old ids (a split keeps the id on the larger part)
    for comp in sorted(components, key=lambda c: -len(c.message_ids)):
        old = sorted({rows[m]["thread_id"] for m in comp.message_ids
                      if rows[m]["thread_id"] and rows[m]["thread_id"] not in used},
                     key=lambda t: (created.get(t, now), started.get(t, now), t))
        if old:
            tid = old[0]
            for other in old[1:]:
                conn.execute("INSERT OR REPLACE INTO thread_merges VALUES (?, ?, ?)",
                             (other, tid, now))
                conn.execute("UPDATE thread_merges SET new_thread_id = ? WHERE new_thread_id = ?",
                             (tid, other))
                merged += 1
        else:
            tid = _fresh_thread_id(conn, comp.root_id, used)
        used.add(tid)
        _write_thread(conn, tid, comp, rows, created.get(tid, now), now)
    for gone in set(affected) - used:
        conn.execute("DELETE FROM threads WHERE thread_id = ?", (gone,))
        conn.execute("DELETE FROM nodes WHERE thread_id = ?", (gone,))
        log_change(conn, "thread", gone, "delete")
    return len(used), merged


def _fresh_thread_id(conn: sqlite3.Connection, root_id: str, used: set[str]) -> str:
    tid = thread_id_for(root_id)
    n = 1
    while tid in used or conn.execute("SELECT 1 FROM threads WHERE thread_id = ?",
                                      (tid,)).fetchone():
        tid = thread_id_for(f"{root_id}#{n}")
        n += 1
    return tid


def _write_thread(conn: sqlite3.Connection, tid: str, comp: Any, rows: dict[str, sqlite3.Row],
                  created_at: float, now: float) -> None:
    real = [rows[m] for m in comp.message_ids]
    dates = [r["date"] for r in real]
    first_real = min(real, key=lambda r: (r["date"], r["message_id"]))
    root_row = rows.get(comp.root_id) or first_real
    subject = root_row["subject"] or first_real["subject"]
    participants: dict[str, list[str]] = {}
    for r in sorted(real, key=lambda r: r["date"]):
        for name, addr in ([[r["sender_name"], r["sender_addr"]]] + json.loads(r["to_json"])
                           + json.loads(r["cc_json"])):
            key = addr or name
            if key and key not in participants:
                participants[key] = [name, addr]
    conn.execute(
        "INSERT INTO threads(thread_id, root_message_id, subject, first_date, last_date, "
        "message_count, participants_json, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?) "
        "ON CONFLICT(thread_id) DO UPDATE SET root_message_id = excluded.root_message_id, "
        "subject = excluded.subject, first_date = excluded.first_date, "
        "last_date = excluded.last_date, message_count = excluded.message_count, "
        "participants_json = excluded.participants_json, updated_at = excluded.updated_at",
        (tid, comp.root_id, subject, min(dates), max(dates), len(real),
         json.dumps(list(participants.values()), ensure_ascii=False), created_at, now))
    conn.execute("DELETE FROM nodes WHERE thread_id = ?", (tid,))
    conn.executemany(
        "INSERT INTO nodes(thread_id, position, message_id, parent_id, depth, ghost) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [(tid, i, n.message_id, n.parent_id, n.depth, int(n.ghost))
         for i, n in enumerate(comp.nodes)])
    for r in real:
        if r["thread_id"] != tid:
            conn.execute("UPDATE messages SET thread_id = ? WHERE message_id = ?",
                         (tid, r["message_id"]))
            log_change(conn, "message", r["message_id"], "upsert")
    log_change(conn, "thread", tid, "upsert")


def rethread_all(conn: sqlite3.Connection, *, subject_merge: bool = False) -> tuple[int, int]:
    """Re-thread the whole catalog (after a parser change or with subject merging toggled)."""
    ids = [r[0] for r in conn.execute("SELECT message_id FROM messages")]
    if not ids:
        return 0, 0
    with transaction(conn):
        return rethread(conn, ids, subject_merge=subject_merge)


def _chunks(items: list[str], n: int = 500) -> Iterator[list[str]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _qs(chunk: Sequence[Any]) -> str:
    return ",".join("?" * len(chunk))


# ------------------------------------------------------------------ reading


def get_message(conn: sqlite3.Connection, message_id: str) -> Message | None:
    row = conn.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE message_id = ?",
                       (message_id.strip().strip("<>"),)).fetchone()
    return row_to_message(row) if row else None


def get_messages(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, Message]:
    out: dict[str, Message] = {}
    for chunk in _chunks(list(ids)):
        for row in conn.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages "
                                f"WHERE message_id IN ({_qs(chunk)})", chunk):
            out[row["message_id"]] = row_to_message(row)
    return out


def iter_messages(conn: sqlite3.Connection, *, batch: int = 1000) -> Iterator[Message]:
    last = ""
    while True:
        rows = conn.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE message_id > ? "
                            f"ORDER BY message_id LIMIT ?", (last, batch)).fetchall()
        if not rows:
            return
        for row in rows:
            yield row_to_message(row)
        last = rows[-1]["message_id"]


def message_thread_id(conn: sqlite3.Connection, message_id: str) -> str | None:
    row = conn.execute("SELECT thread_id FROM messages WHERE message_id = ?",
                       (message_id,)).fetchone()
    return row[0] if row else None


def message_locations(conn: sqlite3.Connection, message_id: str) -> list[Location]:
    return [Location(r["source"], r["folder"], tuple(json.loads(r["keywords_json"])))
            for r in conn.execute("SELECT * FROM locations WHERE message_id = ? ORDER BY source",
                                  (message_id,))]


def resolve_thread_id(conn: sqlite3.Connection, thread_id: str) -> str | None:
    """A thread id as given (a full id, a unique prefix, or one merged away) -> the live id."""
    tid = thread_id.strip()
    if tid.startswith("thread:"):
        tid = tid[len("thread:"):]
    for _ in range(100):
        if conn.execute("SELECT 1 FROM threads WHERE thread_id = ?", (tid,)).fetchone():
            return tid
        row = conn.execute("SELECT new_thread_id FROM thread_merges WHERE old_thread_id = ?",
                           (tid,)).fetchone()
        if row is None:
            break
        tid = row[0]
    if len(tid) >= 4:
        rows = conn.execute("SELECT thread_id FROM threads WHERE thread_id LIKE ? LIMIT 2",
                            (tid.replace("%", "").replace("_", "") + "%",)).fetchall()
        if len(rows) == 1:
            return rows[0][0]
    # a Message-ID names its thread too
    return message_thread_id(conn, thread_id.strip().strip("<>").removeprefix("id:"))


def _thread_from_row(conn: sqlite3.Connection, row: sqlite3.Row) -> Thread:
    nodes = tuple(ThreadNode(n["message_id"], n["parent_id"], n["depth"], bool(n["ghost"]))
                  for n in conn.execute("SELECT * FROM nodes WHERE thread_id = ? "
                                        "ORDER BY position", (row["thread_id"],)))
    return Thread(
        thread_id=row["thread_id"], root_message_id=row["root_message_id"],
        subject=row["subject"], nodes=nodes,
        first_date=datetime.fromtimestamp(row["first_date"], UTC),
        last_date=datetime.fromtimestamp(row["last_date"], UTC),
        participants=tuple(Address(n, a) for n, a in json.loads(row["participants_json"])),
    )


def get_thread(conn: sqlite3.Connection, thread_id: str) -> Thread | None:
    tid = resolve_thread_id(conn, thread_id)
    if tid is None:
        return None
    row = conn.execute("SELECT * FROM threads WHERE thread_id = ?", (tid,)).fetchone()
    return _thread_from_row(conn, row) if row else None


def thread_summaries(conn: sqlite3.Connection, thread_ids: Sequence[str]
                     ) -> dict[str, ThreadSummary]:
    """Subject, dates, message count and participants of each of ``thread_ids`` that the
    catalog knows (one query; an id merged away resolves to the thread it went into)."""
    out: dict[str, ThreadSummary] = {}
    wanted = list(dict.fromkeys(thread_ids))
    for chunk in _chunks(wanted):
        for r in conn.execute(
                "SELECT thread_id, subject, first_date, last_date, message_count, "
                f"participants_json FROM threads WHERE thread_id IN ({_qs(chunk)})", chunk):
            out[r[0]] = ThreadSummary(
                thread_id=r[0], subject=r[1], first_date=datetime.fromtimestamp(r[2], UTC),
                last_date=datetime.fromtimestamp(r[3], UTC), message_count=r[4],
                participants=tuple(Address(n, a) for n, a in json.loads(r[5])))
    missing = [tid for tid in wanted if tid not in out]
    if missing:  # merged away since the index saw them (or not in the catalog at all)
        merged: dict[str, str] = {}
        for chunk in _chunks(missing):
            merged.update(conn.execute(
                "SELECT old_thread_id, new_thread_id FROM thread_merges WHERE old_thread_id "
                f"IN ({_qs(chunk)})", chunk).fetchall())
        if merged:
            later = thread_summaries(conn, list(merged.values()))
            out.update((old, later[new]) for old, new in merged.items() if new in later)
    return out


def iter_threads(conn: sqlite3.Connection, *, order: str = "last_date DESC",
                 limit: int | None = None) -> Iterator[Thread]:
    allowed = {"last_date DESC", "last_date ASC", "first_date ASC", "first_date DESC"}
    if order not in allowed:
        raise ValueError(order)
    q = f"SELECT * FROM threads ORDER BY {order}, thread_id"
    if limit is not None:
        q += f" LIMIT {int(limit)}"
    for row in conn.execute(q).fetchall():
        yield _thread_from_row(conn, row)


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    one: Callable[[str], int] = lambda q: int(conn.execute(q).fetchone()[0])  # noqa: E731
    return {
        "messages": one("SELECT COUNT(*) FROM messages"),
        "threads": one("SELECT COUNT(*) FROM threads"),
        "locations": one("SELECT COUNT(*) FROM locations"),
        "quarantined": one("SELECT COUNT(*) FROM quarantine"),
        "merged_threads": one("SELECT COUNT(*) FROM thread_merges"),
        "ghosts": one("SELECT COUNT(*) FROM nodes WHERE ghost = 1"),
    }
