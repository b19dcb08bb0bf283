"""The extraction stage and what reads its results.

``run_extract(kb, conn, config)`` follows the change feed from cursor "extract": each new or
changed message (by content hash and model) gets an NLP pass over its new text, seeded with
its thread's people; the per-thread aggregates (entities with one entity per person,
keyphrase candidates), the topics and the people of the touched threads are then brought up
to date. Results of each chunk commit before the next starts and the cursor moves last, so
a crash at any point only means work is redone, never lost or doubled.

Readers (grex.extract.readers): ``thread_knowledge``, ``list_entities``, ``list_topics``, ``who``.
The aggregates are in ``knowledge``, topics in ``thread_topics``, people in ``people``, the
tables in ``tables``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from grex import store
from grex.errors import NLPError
from grex.extract import topics as topics_mod
from grex.extract.knowledge import _aggregate_thread, _delete_thread
from grex.extract.people import _refresh_people
from grex.extract.records import (
    ExtractReport,
    Seeds,
    TextAnalysis,
)
from grex.extract.tables import Progress, _model_key, ensure_schema, seeds_for
from grex.extract.thread_topics import _assign_topics, _fit_topics, _store_topic_labels
from grex.models import Message

CURSOR = "extract"
CHUNK = 500  # messages per NLP call and per commit
REFIT_MIN_GROWTH = 20  # threads: refit the topics when the KB doubled and grew by this many
def run_extract(kb: store.KB, conn: sqlite3.Connection, config: Any, *, all: bool = False,
                progress: Progress | None = None, nlp: Any = None,
                refit: bool = False,
                should_stop: Callable[[], bool] | None = None) -> ExtractReport:
    """Bring extraction results up to date with the catalog (everything with ``all``).

    ``should_stop`` is asked between chunks (a SIGTERM during a sync): what was analysed
    is kept, the cursor stays, and the next run picks up the rest (messages already
    analysed are skipped by content hash)."""
    from grex.extract.analyze import analyze_texts
    from grex.extract.model import load_model

    ensure_schema(conn)
    if not all and not refit and store.has_cursor(conn, CURSOR) \
            and not store.changes_since(conn, CURSOR)[0]:
        # nothing new: don't pay for loading spaCy (a quiet cron sync stays cheap)
        return ExtractReport()
    nlp_cfg = getattr(config, "nlp", None)
    if nlp is None:
        nlp, info = load_model(getattr(nlp_cfg, "model", None))
    else:
        from grex.extract.model import info_of
        info = info_of(nlp)
    model_key = _model_key(info)
    changes, last = store.changes_since(conn, CURSOR)

    deleted_msgs: list[str] = []
    deleted_threads: list[str] = []
    touched_threads: set[str] = set()
    if all or not store.has_cursor(conn, CURSOR):
        # everything (--all), or a first run: the feed may have been pruned before it
        # (unchanged messages are still skipped by content hash unless --all)
        candidates = [r[0] for r in conn.execute("SELECT message_id FROM messages")]
        touched_threads.update(r[0] for r in conn.execute("SELECT thread_id FROM threads"))
        gone = conn.execute("SELECT message_id FROM extract_messages WHERE message_id NOT IN "
                            "(SELECT message_id FROM messages)").fetchall()
        deleted_msgs = [r[0] for r in gone]
    else:
        candidates = []
        for ch in changes:
            if ch.kind == "message":
                (candidates if ch.op == "upsert" else deleted_msgs).append(ch.key)
            elif ch.kind == "thread":
                (touched_threads.add(ch.key) if ch.op == "upsert"
                 else deleted_threads.append(ch.key))

    # which candidates need the NLP pass
    have = {r[0]: (r[1], r[2]) for r in conn.execute(
        "SELECT message_id, content_hash, model FROM extract_messages")} if candidates else {}
    msgs = store.get_messages(conn, candidates) if candidates else {}
    todo: list[Message] = []
    unchanged = 0
    for mid in candidates:
        m = msgs.get(mid)
        if m is None:
            continue
        tid = store.message_thread_id(conn, mid)
        if tid:
            touched_threads.add(tid)
        if not all and have.get(mid) == (m.content_hash, model_key):
            unchanged += 1
            continue
        todo.append(m)

    # the NLP pass, chunk by chunk, each chunk committed
    participants_cache: dict[str, Seeds] = {}

    def seeds_of(m: Message) -> Seeds:
        tid = store.message_thread_id(conn, m.message_id) or ""
        if tid not in participants_cache:
            t = store.get_thread(conn, tid) if tid else None
            parts = list(t.participants) if t else list(m.participants)
            participants_cache[tid] = seeds_for(parts)
        return participants_cache[tid]

    n_process = getattr(nlp_cfg, "n_process", 0) or None
    batch_size = getattr(nlp_cfg, "batch_size", 64) or 64
    max_chars = getattr(nlp_cfg, "max_chars", 20_000) or 20_000
    truncated = 0
    done = 0
    errors: list[str] = []
    for lo in range(0, len(todo), CHUNK):
        if should_stop is not None and lo and should_stop():
            return ExtractReport(messages_seen=len(candidates), messages_computed=done,
                                 messages_unchanged=unchanged, truncated=truncated,
                                 model=info.describe(), errors=tuple(errors), stopped=True)
        part = todo[lo:lo + CHUNK]
        items = [(m.body.new, seeds_of(m)) for m in part]
        try:
            results = list(analyze_texts(nlp, items, n_process=n_process,
                                         batch_size=batch_size, max_chars=max_chars))
        except NLPError:
            # one bad text must not stop the stage: redo the chunk one by one and record
            # the texts spaCy can't handle with empty results (they are retried by --all)
            results = []
            for m, item in zip(part, items, strict=True):
                try:
                    results.extend(analyze_texts(nlp, [item], n_process=1,
                                                 max_chars=max_chars))
                except NLPError as exc:
                    errors.append(f"{m.message_id}: {exc}")
                    results.append(TextAnalysis((), (), 0, 0, False))
        now = time.time()
        with store.transaction(conn):
            conn.executemany(
                "INSERT OR REPLACE INTO extract_messages VALUES (?,?,?,?,?,?,?,?,?)",
                [(m.message_id, m.content_hash, model_key, a.words, a.chars, int(a.truncated),
                  json.dumps([[e.text, e.label, e.start, e.end] for e in a.entities]),
                  json.dumps([[p.key, p.text, p.count] for p in a.phrases]), now)
                 for m, a in zip(part, results, strict=True)])
        truncated += sum(a.truncated for a in results)
        done += len(part)
        if progress:
            progress(len(part), len(todo))

    # aggregates
    with store.transaction(conn):
        for mid in deleted_msgs:
            conn.execute("DELETE FROM extract_messages WHERE message_id = ?", (mid,))
        for tid in deleted_threads:
            _delete_thread(conn, tid)
        live = [t for t in touched_threads if store.get_thread(conn, t) is not None]
        for tid in sorted(set(touched_threads) - set(live)):
            _delete_thread(conn, tid)
        for tid in live:
            _aggregate_thread(conn, tid)

    # topics: fit when there is no model (or asked), else assign the touched threads
    models_dir = kb.models_dir
    model = None if (all or refit) else topics_mod.load(models_dir)
    if model is not None:
        # a model fitted on a small KB is refitted once the KB has doubled (new threads are
        # otherwise only assigned to the topics there are)
        n_threads = conn.execute("SELECT COUNT(*) FROM threads").fetchone()[0]
        if n_threads >= max(2 * model.n_threads, model.n_threads + REFIT_MIN_GROWTH):
            model = None
    refitted = False
    if model is None:
        model = _fit_topics(conn, models_dir)
        refitted = model is not None
        assign_ids = [r[0] for r in conn.execute("SELECT thread_id FROM threads")]
    else:
        assign_ids = [t for t in live]
    people = 0
    with store.transaction(conn):
        if model is not None:
            if refitted:
                _store_topic_labels(conn, model)
                conn.execute("DELETE FROM extract_thread_topics")
            _assign_topics(conn, model, assign_ids)
        # removals can leave anyone's counts stale: then all people are recomputed
        full = all or refitted or bool(deleted_msgs or deleted_threads)
        people = _refresh_people(conn, model, None if full else live)
        # past `last` there are only the thread changes this stage just logged for the
        # index (topics moved): they are not news to extraction itself
        store.set_cursor(conn, CURSOR, max(last, store.last_seq(conn)))
    return ExtractReport(
        messages_seen=len(candidates), messages_computed=done, messages_unchanged=unchanged,
        messages_deleted=len(deleted_msgs), threads_updated=len(live), truncated=truncated,
        topics_refit=refitted, topics=model.k if model else 0, people=people,
        model=info.describe(), errors=tuple(errors))


def refit_topics(kb: store.KB, conn: sqlite3.Connection, config: Any = None) -> int:
    """Refit the topic model on every thread and reassign all; returns the topic count."""
    ensure_schema(conn)
    model = _fit_topics(conn, kb.models_dir)
    with store.transaction(conn):
        conn.execute("DELETE FROM extract_thread_topics")
        conn.execute("DELETE FROM extract_topics")
        if model is None:
            return 0
        _store_topic_labels(conn, model)
        _assign_topics(conn, model, [r[0] for r in conn.execute("SELECT thread_id FROM threads")])
        _refresh_people(conn, model, None)
    return model.k


