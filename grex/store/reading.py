"""Reading messages and threads back as records."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime

from grex.errors import NotFound
from grex.models import (
    Address,
    Location,
    Message,
    Thread,
    ThreadNode,
    ThreadSummary,
)
from grex.store.rows import _MESSAGE_COLUMNS, row_to_message
from grex.store.threads import _chunks, _qs

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
    prefix = tid.replace("%", "").replace("_", "")
    if len(prefix) >= 2:  # a unique prefix, as git takes abbreviated commit ids
        rows = conn.execute("SELECT thread_id FROM threads WHERE thread_id LIKE ? "
                            "ORDER BY thread_id LIMIT 11", (prefix + "%",)).fetchall()
        if len(rows) == 1:
            return rows[0][0]
        if len(rows) > 1:
            shown = ", ".join(r[0] for r in rows[:10]) + (", ..." if len(rows) > 10 else "")
            raise NotFound(f"thread id {thread_id.strip()!r} is ambiguous: "
                           f"{'more than 10' if len(rows) > 10 else len(rows)} threads start "
                           f"with it ({shown})", hint="give more of the id")
    # a Message-ID names its thread too
    return message_thread_id(conn, thread_id.strip().strip("<>").removeprefix("id:"))


def thread_aliases(conn: sqlite3.Connection) -> dict[str, str]:
    """Every thread id merged away -> the live thread it went into (chains followed)."""
    merges = dict(conn.execute("SELECT old_thread_id, new_thread_id FROM thread_merges"))
    live = {r[0] for r in conn.execute("SELECT thread_id FROM threads")}
    out: dict[str, str] = {}
    for old in merges:
        tid, seen = old, set()
        while tid in merges and tid not in seen and tid not in live:
            seen.add(tid)
            tid = merges[tid]
        if tid in live and old not in live:
            out[old] = tid
    return out


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
