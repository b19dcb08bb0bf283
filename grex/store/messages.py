"""Adding and removing copies of messages (locations), and the quarantine."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass

from grex.models import (
    Message,
    Quarantined,
    RawMessage,
)
from grex.store.feed import log_change
from grex.store.kb import KB
from grex.store.raw import _SYNCFS, sync_raw_dir, write_raw
from grex.store.rows import _MESSAGE_COLUMNS, message_row
from grex.store.schema import transaction

# ------------------------------------------------------------------ adding and removing


@dataclass(frozen=True)
class AddResult:
    added: tuple[str, ...] = ()  # new Message-IDs
    duplicates: int = 0  # a new copy (location) of a message already held
    unchanged: int = 0  # this very copy was already recorded
    threads_changed: int = 0
    threads_merged: int = 0


def write_new_raw(kb: KB, conn: sqlite3.Connection,
                  pairs: Sequence[tuple[RawMessage, Message]]
                  ) -> list[tuple[RawMessage, Message, str]]:
    """Step 1 of saving messages: the raw bytes of every message not yet held, durable
    before any catalog row names them. Returns (raw, message, raw path or "" for a
    message already held) for ``insert_messages``."""
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
    return new_pairs


def insert_messages(conn: sqlite3.Connection,
                    new_pairs: Sequence[tuple[RawMessage, Message, str]]
                    ) -> tuple[list[str], int, int]:
    """Step 2, inside the caller's transaction: the catalog rows (messages, refs,
    locations, changes). Returns (new Message-IDs, duplicates, unchanged)."""
    now = time.time()
    added: list[str] = []
    duplicates = unchanged = 0
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
    return added, duplicates, unchanged


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


@dataclass(frozen=True)
class Removed:
    """A message whose last copy left: its raw file to unlink once the transaction
    commits ("" when another row shares those bytes), and its thread's other members."""

    raw_path: str
    thread_id: str | None
    rest: tuple[str, ...]


def delete_location(conn: sqlite3.Connection, message_id: str, source: str) -> Removed | None:
    """Inside the caller's transaction: forget one copy of a message; when no copy remains,
    delete the message's rows (the change feed says 'delete'). The caller re-threads
    ``rest`` (or deletes the thread when it is empty) and then unlinks the raw file."""
    conn.execute("DELETE FROM locations WHERE message_id = ? AND source = ?",
                 (message_id, source))
    left = conn.execute("SELECT COUNT(*) FROM locations WHERE message_id = ?",
                        (message_id,)).fetchone()[0]
    if left:
        return None
    row = conn.execute("SELECT raw_path, content_hash, thread_id FROM messages "
                       "WHERE message_id = ?", (message_id,)).fetchone()
    if row is None:
        return None
    conn.execute("DELETE FROM messages WHERE message_id = ?", (message_id,))
    conn.execute("DELETE FROM refs WHERE message_id = ?", (message_id,))
    log_change(conn, "message", message_id, "delete")
    rest: tuple[str, ...] = ()
    if row["thread_id"]:
        rest = tuple(r[0] for r in conn.execute(
            "SELECT message_id FROM messages WHERE thread_id = ?", (row["thread_id"],)))
    still = conn.execute("SELECT 1 FROM messages WHERE content_hash = ?",
                         (row["content_hash"],)).fetchone()
    return Removed("" if still else row["raw_path"], row["thread_id"], rest)


def unlink_raw(kb: KB, raw_path: str) -> None:
    """After the deletion committed: a crash in between leaves an orphan file (`grex
    doctor` reports it), never a catalog row without its bytes."""
    if raw_path:
        with contextlib.suppress(FileNotFoundError):
            (kb.raw_dir / raw_path).unlink()


