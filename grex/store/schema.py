"""The core schema, per-component migrations (ensure_schema), and transactions."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence

from grex.errors import KBError

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


