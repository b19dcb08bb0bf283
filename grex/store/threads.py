"""Saving the threads the ingest stage computed; reading what threading needs."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from grex.models import (
    ThreadNode,
)
from grex.store.feed import log_change

# ------------------------------------------------------------------ threading
# The store saves the threads it is given; computing them is the ingest stage's job
# (grex.ingest.catalog.rethread, over grex.ingest.threads.build_threads).


def thread_rows(conn: sqlite3.Connection, seed_ids: Sequence[str],
                dropped_thread: str | None = None) -> tuple[set[str], dict[str, sqlite3.Row]]:
    """The threads the seed messages touch and the rows of every message in them.

    Affected: threads holding a seed or an id a seed names, and threads of messages that
    name a seed (plus ``dropped_thread``). Rows carry what threading and a thread's
    summary row need.
    """
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
    return affected, rows


def thread_ages(conn: sqlite3.Connection, thread_ids: Iterable[str]
                ) -> tuple[dict[str, float], dict[str, float]]:
    """(created_at, first_date) of each existing thread named."""
    created: dict[str, float] = {}
    started: dict[str, float] = {}
    for chunk in _chunks(list(thread_ids)):
        for r in conn.execute(f"SELECT thread_id, created_at, first_date FROM threads "
                              f"WHERE thread_id IN ({_qs(chunk)})", chunk):
            created[r[0]] = r[1]
            started[r[0]] = r[2]
    return created, started


def thread_exists(conn: sqlite3.Connection, thread_id: str) -> bool:
    return conn.execute("SELECT 1 FROM threads WHERE thread_id = ?",
                        (thread_id,)).fetchone() is not None


def record_merge(conn: sqlite3.Connection, old: str, new: str, now: float) -> None:
    """Thread ``old`` joined ``new``: links to ``old`` (and to what merged into it) resolve."""
    conn.execute("INSERT OR REPLACE INTO thread_merges VALUES (?, ?, ?)", (old, new, now))
    conn.execute("UPDATE thread_merges SET new_thread_id = ? WHERE new_thread_id = ?",
                 (new, old))


def delete_thread(conn: sqlite3.Connection, thread_id: str) -> None:
    conn.execute("DELETE FROM threads WHERE thread_id = ?", (thread_id,))
    conn.execute("DELETE FROM nodes WHERE thread_id = ?", (thread_id,))
    log_change(conn, "thread", thread_id, "delete")


def write_thread(conn: sqlite3.Connection, tid: str, root_id: str,
                 message_ids: Sequence[str], nodes: Sequence[ThreadNode],
                 rows: dict[str, sqlite3.Row], created_at: float, now: float) -> None:
    """Save one thread: its row, its reply tree, and its messages' thread_id."""
    real = [rows[m] for m in message_ids]
    dates = [r["date"] for r in real]
    first_real = min(real, key=lambda r: (r["date"], r["message_id"]))
    root_row = rows.get(root_id) or first_real
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
        (tid, root_id, subject, min(dates), max(dates), len(real),
         json.dumps(list(participants.values()), ensure_ascii=False), created_at, now))
    conn.execute("DELETE FROM nodes WHERE thread_id = ?", (tid,))
    conn.executemany(
        "INSERT INTO nodes(thread_id, position, message_id, parent_id, depth, ghost) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [(tid, i, n.message_id, n.parent_id, n.depth, int(n.ghost))
         for i, n in enumerate(nodes)])
    for r in real:
        if r["thread_id"] != tid:
            conn.execute("UPDATE messages SET thread_id = ? WHERE message_id = ?",
                         (tid, r["message_id"]))
            log_change(conn, "message", r["message_id"], "upsert")
    log_change(conn, "thread", tid, "upsert")


def all_message_ids(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT message_id FROM messages")]


def _chunks(items: list[str], n: int = 500) -> Iterator[list[str]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _qs(chunk: Sequence[Any]) -> str:
    return ",".join("?" * len(chunk))
