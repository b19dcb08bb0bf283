"""What reads extraction's results: thread knowledge, entities, topics, who, people."""

from __future__ import annotations

import json
import math
import sqlite3
from collections import defaultdict
from typing import Any

from grex import store
from grex.extract import topics as topics_mod
from grex.extract.knowledge import thread_keyphrases
from grex.extract.records import (
    EntitySummary,
    PersonExpertise,
    TextAnalysis,
    ThreadKnowledge,
    TopicInfo,
)


# ------------------------------------------------------------------------ readers
def _topic_labels(conn: sqlite3.Connection) -> dict[int, str]:
    return {r[0]: r[1] for r in conn.execute("SELECT topic_id, label FROM extract_topics")}


def has_results(conn: sqlite3.Connection) -> bool:
    """Whether extraction ever ran on this catalog (its tables exist)."""
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'extract_messages'"
                        ).fetchone() is not None


def get_thread_knowledge(conn: sqlite3.Connection, thread_id: str) -> ThreadKnowledge:
    if not has_results(conn):
        return ThreadKnowledge(thread_id, (), (), ())
    ents = tuple(
        EntitySummary(key=r[0], label=r[1], text=r[2], count=r[3],
                      variants=tuple(json.loads(r[5])), addr=r[4])
        for r in conn.execute(
            "SELECT key, label, text, count, addr, variants_json FROM extract_thread_entities "
            "WHERE thread_id = ? ORDER BY count DESC, text", (thread_id,)))
    labels = _topic_labels(conn)
    tops = tuple((r[0], labels.get(r[0], ""), r[1]) for r in conn.execute(
        "SELECT topic_id, weight FROM extract_thread_topics WHERE thread_id = ? "
        "ORDER BY weight DESC", (thread_id,)))
    return ThreadKnowledge(thread_id, ents, tuple(thread_keyphrases(conn, thread_id)), tops)


def thread_knowledge(conn: sqlite3.Connection, thread_id: str) -> dict[str, Any]:
    """For `grex show --json` and the HTML export: plain JSON-ready data."""
    k = get_thread_knowledge(conn, thread_id)
    return {
        "entities": [{"text": e.text, "label": e.label, "count": e.count, "key": e.key,
                      "variants": list(e.variants)} for e in k.entities],
        "keyphrases": [p.text for p in k.keyphrases],
        "topics": [{"id": i, "label": lab, "weight": w} for i, lab, w in k.topics],
    }


def list_entities(conn: sqlite3.Connection, label: str | None = None, limit: int = 100,
                  ) -> list[EntitySummary]:
    """Entities over the KB with mention counts (people merged by address)."""
    if not has_results(conn):
        return []
    sql = ("SELECT key, label, text, SUM(count), MAX(addr), COUNT(*) FROM "
           "extract_thread_entities {} GROUP BY key ORDER BY SUM(count) DESC, text LIMIT ?")
    if label:
        labels = ("GPE", "LOC") if label.upper() in ("GPE", "LOC") else (label.upper(),)
        q = ",".join("?" * len(labels))
        rows = conn.execute(sql.format(f"WHERE label IN ({q})"), (*labels, limit)).fetchall()
    else:
        rows = conn.execute(sql.format(""), (limit,)).fetchall()
    return [EntitySummary(key=r[0], label=r[1], text=r[2], count=r[3], addr=r[4] or "")
            for r in rows]


def entity_labels(conn: sqlite3.Connection) -> list[str]:
    """The entity types this KB holds, most mentioned first."""
    if not has_results(conn):
        return []
    return [r[0] for r in conn.execute("SELECT label FROM extract_thread_entities GROUP BY "
                                       "label ORDER BY SUM(count) DESC")]


def list_topics(conn: sqlite3.Connection, threads_per_topic: int = 50,
                ) -> list[dict[str, Any]]:
    if not has_results(conn):
        return []
    out = []
    for tid, label, terms in conn.execute(
            "SELECT topic_id, label, terms_json FROM extract_topics ORDER BY topic_id"):
        threads = [{"thread_id": r[0], "weight": r[1]} for r in conn.execute(
            "SELECT thread_id, weight FROM extract_thread_topics WHERE topic_id = ? "
            "ORDER BY weight DESC LIMIT ?", (tid, threads_per_topic))]
        out.append({"id": tid, "label": label, "terms": json.loads(terms), "threads": threads})
    return out


def topic_infos(conn: sqlite3.Connection) -> list[TopicInfo]:
    return [TopicInfo(t["id"], t["label"], tuple(t["terms"]), len(t["threads"]))
            for t in list_topics(conn)]


def who(kb: store.KB, conn: sqlite3.Connection, query: str, limit: int = 10,
        ) -> list[PersonExpertise]:
    """People who know about ``query``: how much of what they wrote (new text only) matches
    it word for word (TF-IDF over each person's writing) plus how close their topics are."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer

    if not has_results(conn) or not query.strip():
        return []
    rows = conn.execute("SELECT sender_addr, body_new, subject FROM messages "
                        "WHERE sender_addr != ''").fetchall()
    texts: dict[str, list[str]] = defaultdict(list)
    for addr, body, subject in rows:
        texts[addr.lower()].append(f"{subject}\n{body}")
    if not texts:
        return []
    addrs = list(texts)
    vec = TfidfVectorizer(stop_words="english", sublinear_tf=True,
                          token_pattern=topics_mod.TOKEN_PATTERN)
    try:
        x = vec.fit_transform(["\n".join(texts[a]) for a in addrs])
    except ValueError:
        return []
    q = vec.transform([query])
    term = np.asarray((x @ q.T).todense()).ravel()
    vocab = vec.get_feature_names_out()
    qterms = [vocab[j] for j in q.indices]
    model = topics_mod.load(kb.models_dir)
    qtopics = model.similarities([query])[0] if model is not None else None
    info = {r[0]: r for r in conn.execute(
        "SELECT addr, name, threads, messages, topics_json FROM extract_people")}
    labels = _topic_labels(conn)
    out = []
    for i, addr in enumerate(addrs):
        r = info.get(addr)
        tpairs = json.loads(r[4]) if r else []
        tscore = 0.0
        if qtopics is not None and tpairs and term[i] > 0:
            tscore = sum(w * float(qtopics[t]) for t, w in tpairs if t < len(qtopics))
        score = float(term[i]) + 0.5 * tscore
        if score <= 0:
            continue
        n_msgs = r[3] if r else len(texts[addr])
        score *= 1 + 0.1 * math.log1p(n_msgs)
        row = x[i]
        evidence = tuple(t for t in qterms if row[0, vec.vocabulary_[t]] > 0)
        out.append(PersonExpertise(
            addr=addr, name=(r[1] if r else ""), score=round(score, 4),
            threads=r[2] if r else 0, messages=n_msgs,
            topics=tuple((t, labels.get(t, ""), w) for t, w in tpairs[:3]), evidence=evidence))
    out.sort(key=lambda p: (-p.score, p.addr))
    return out[:limit]


def analysis_json(text: str, a: TextAnalysis, limit: int = 10) -> dict[str, Any]:
    """`grex analyze --json`: entities with offsets into ``text``, and keyphrases."""
    ranked = sorted(a.phrases, key=lambda p: (-p.count * (1 + 0.5 * (len(p.key.split()) - 1)),
                                              p.key))
    chosen: list[str] = []
    for p in ranked:
        if any(p.key in c.lower() for c in chosen):
            continue
        chosen.append(p.text)
        if len(chosen) >= limit:
            break
    return {"entities": [{"text": e.text, "label": e.label, "start": e.start, "end": e.end}
                         for e in a.entities],
            "keyphrases": chosen, "truncated": a.truncated}


def list_people(conn: sqlite3.Connection, limit: int = 1000) -> list[dict[str, Any]]:
    """Everyone in the KB with threads, messages written, words of new text, the topics they
    write about (weighted by their new text) and the people they work with most."""
    if not has_results(conn):
        return []
    labels = _topic_labels(conn)
    out = []
    for addr, name, threads, messages, words, tj, cj in conn.execute(
            "SELECT addr, name, threads, messages, words, topics_json, coworkers_json FROM "
            "extract_people ORDER BY messages DESC, threads DESC, addr LIMIT ?", (limit,)):
        out.append({"addr": addr, "name": name, "threads": threads, "messages": messages,
                    "words": words,
                    "topics": [{"id": t, "label": labels.get(t, ""), "weight": w}
                               for t, w in json.loads(tj)],
                    "works_with": [{"addr": a, "threads": n} for a, n in json.loads(cj)]})
    return out
