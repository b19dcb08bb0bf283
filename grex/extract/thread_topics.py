"""Topics of the KB's threads: fitting, labelling and assigning (over grex.extract.topics)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from grex import store
from grex.extract import topics as topics_mod


# ------------------------------------------------------------------------ topics
def _thread_docs(conn: sqlite3.Connection, tids: Sequence[str] | None = None,
                 ) -> tuple[list[str], list[str]]:
    cols = ("SELECT t.thread_id, t.subject, m.message_id, m.body_new, m.body_quoted, "
            "m.in_reply_to_json, m.references_json FROM threads t JOIN messages m "
            "ON m.thread_id = t.thread_id")
    if tids is None:
        rows = conn.execute(f"{cols} ORDER BY t.thread_id, m.date").fetchall()
    else:
        rows = []
        for i in range(0, len(tids), 500):
            chunk = list(tids[i:i + 500])
            q = ",".join("?" * len(chunk))
            rows += conn.execute(f"{cols} WHERE t.thread_id IN ({q}) "
                                 "ORDER BY t.thread_id, m.date", chunk).fetchall()
    subjects: dict[str, str] = {}
    msgs: dict[str, list[tuple[str, str, str, list[str]]]] = {}
    for tid, subject, mid, new, quoted, irt, refs in rows:
        subjects[tid] = subject
        msgs.setdefault(tid, []).append((mid, new, quoted, json.loads(irt) + json.loads(refs)))
    ids = list(msgs)
    return ids, [topics_mod.thread_document(subjects[t], msgs[t]) for t in ids]


def _fit_topics(conn: sqlite3.Connection, models_dir: Any) -> topics_mod.TopicModel | None:
    ids, docs = _thread_docs(conn)
    keep = [i for i, d in enumerate(docs) if len(d.split()) >= 3]
    if len(keep) < topics_mod.MIN_THREADS:
        return None
    try:
        model = topics_mod.fit([docs[i] for i in keep])
    except Exception:  # noqa: BLE001 - too little text to cluster: no topics yet
        return None
    topics_mod.save(model, models_dir)
    return model


def _store_topic_labels(conn: sqlite3.Connection, model: topics_mod.TopicModel) -> None:
    conn.execute("DELETE FROM extract_topics")
    conn.executemany("INSERT INTO extract_topics VALUES (?,?,?)",
                     [(i, model.labels[i], json.dumps(list(model.terms[i])))
                      for i in range(model.k)])


def _assign_topics(conn: sqlite3.Connection, model: topics_mod.TopicModel,
                   tids: Sequence[str]) -> None:
    if conn.execute("SELECT COUNT(*) FROM extract_topics").fetchone()[0] != model.k:
        _store_topic_labels(conn, model)
    ids, docs = _thread_docs(conn, list(tids))
    for tid, weights in zip(ids, model.assign(docs), strict=True):
        before = {(r[0], round(r[1], 4)) for r in conn.execute(
            "SELECT topic_id, weight FROM extract_thread_topics WHERE thread_id = ?", (tid,))}
        conn.execute("DELETE FROM extract_thread_topics WHERE thread_id = ?", (tid,))
        conn.executemany("INSERT INTO extract_thread_topics VALUES (?,?,?)",
                         [(tid, i, w) for i, w in weights])
        if before != {(i, round(w, 4)) for i, w in weights}:
            # the index copies a thread's topics onto its messages: tell it (a refit or
            # `extract --all` changes threads no new message touched)
            store.log_change(conn, "thread", tid, "upsert")


