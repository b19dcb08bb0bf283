"""The change feed: what changed, in order, for each later stage's cursor."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from grex.store.schema import transaction

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


