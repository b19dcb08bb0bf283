"""Saving messages and re-threading: the ingest stage's writes through the store.

The store saves what it is given (raw files, rows, threads); deciding which messages form
a thread, and which id each thread keeps, happens here, over the pure
``grex.ingest.threads.build_threads``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence

from grex import store
from grex.ingest.threads import Link, build_threads, thread_id_for
from grex.models import Message, RawMessage


def add_messages(kb: store.KB, conn: sqlite3.Connection,
                 pairs: Iterable[tuple[RawMessage, Message]], *,
                 subject_merge: bool = False) -> store.AddResult:
    """Store messages durably and thread them, in one transaction.

    Raw files are written and fsynced first; then the catalog rows (messages, refs,
    locations, changes) and the re-threading of every affected thread commit together.
    """
    new_pairs = store.write_new_raw(kb, conn, list(pairs))
    with store.transaction(conn):
        added, duplicates, unchanged = store.insert_messages(conn, new_pairs)
        changed, merged = rethread(conn, added, subject_merge=subject_merge) if added else (0, 0)
    return store.AddResult(added=tuple(added), duplicates=duplicates, unchanged=unchanged,
                           threads_changed=changed, threads_merged=merged)


def remove_location(kb: store.KB, conn: sqlite3.Connection, message_id: str, source: str, *,
                    subject_merge: bool = False) -> bool:
    """Forget one copy of a message. When no copy remains the message leaves the KB:
    its row, its raw file, its thread membership; the change feed says 'delete'.
    Returns True when the message itself was removed."""
    with store.transaction(conn):
        removed = store.delete_location(conn, message_id, source)
        if removed is None:
            return False
        if removed.thread_id:
            if removed.rest:
                rethread(conn, removed.rest, subject_merge=subject_merge,
                         dropped_thread=removed.thread_id)
            else:
                store.delete_thread(conn, removed.thread_id)
    store.unlink_raw(kb, removed.raw_path)
    return True


def rethread(conn: sqlite3.Connection, seed_ids: Sequence[str], *, subject_merge: bool = False,
             dropped_thread: str | None = None) -> tuple[int, int]:
    """Recompute every thread the seed messages touch. Returns (threads changed, merged).

    Existing thread ids survive; when components join, the oldest thread's id survives and
    the others are recorded in thread_merges.
    """
    now = time.time()
    affected, rows = store.thread_rows(conn, seed_ids, dropped_thread)
    links = [Link(r["message_id"], tuple(json.loads(r["in_reply_to_json"])),
                  tuple(json.loads(r["references_json"])), r["date"], r["subject"])
             for r in rows.values()]
    components = build_threads(links, subject_merge=subject_merge)
    created, started = store.thread_ages(conn, affected)
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
                store.record_merge(conn, other, tid, now)
                merged += 1
        else:
            tid = _fresh_thread_id(conn, comp.root_id, used)
        used.add(tid)
        store.write_thread(conn, tid, comp.root_id, comp.message_ids, comp.nodes, rows,
                           created.get(tid, now), now)
    for gone in set(affected) - used:
        store.delete_thread(conn, gone)
    return len(used), merged


def _fresh_thread_id(conn: sqlite3.Connection, root_id: str, used: set[str]) -> str:
    tid = thread_id_for(root_id)
    n = 1
    while tid in used or store.thread_exists(conn, tid):
        tid = thread_id_for(f"{root_id}#{n}")
        n += 1
    return tid


def rethread_all(conn: sqlite3.Connection, *, subject_merge: bool = False) -> tuple[int, int]:
    """Re-thread the whole catalog (after a parser change or with subject merging toggled)."""
    ids = store.all_message_ids(conn)
    if not ids:
        return 0, 0
    with store.transaction(conn):
        return rethread(conn, ids, subject_merge=subject_merge)
