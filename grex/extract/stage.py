"""The extraction stage and what reads its results.

``run_extract(kb, conn, config)`` follows the change feed from cursor "extract": each new or
changed message (by content hash and model) gets an NLP pass over its new text, seeded with
its thread's people; the per-thread aggregates (entities with one entity per person,
keyphrase candidates), the topics and the people of the touched threads are then brought up
to date. Results of each chunk commit before the next starts and the cursor moves last, so
a crash at any point only means work is redone, never lost or doubled.

Readers: ``thread_knowledge``, ``list_entities``, ``list_topics``, ``who``.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from grex import store
from grex.errors import NLPError
from grex.extract import topics as topics_mod
from grex.extract.names import NOT_NAMES, name_from_address, name_words
from grex.extract.records import (
    EntitySummary,
    ExtractReport,
    Keyphrase,
    PersonExpertise,
    Seeds,
    TextAnalysis,
    ThreadKnowledge,
    TopicInfo,
)
from grex.models import Address, Message

CURSOR = "extract"
CHUNK = 500  # messages per NLP call and per commit
REFIT_MIN_GROWTH = 20  # threads: refit the topics when the KB doubled and grew by this many
MIGRATIONS = [
    """
    CREATE TABLE extract_messages (
        message_id TEXT PRIMARY KEY,
        content_hash TEXT NOT NULL,
        model TEXT NOT NULL,
        words INTEGER NOT NULL,
        chars INTEGER NOT NULL,
        truncated INTEGER NOT NULL,
        entities_json TEXT NOT NULL,
        phrases_json TEXT NOT NULL,
        computed_at REAL NOT NULL
    );
    CREATE TABLE extract_thread_entities (
        thread_id TEXT NOT NULL,
        key TEXT NOT NULL,
        label TEXT NOT NULL,
        text TEXT NOT NULL,
        count INTEGER NOT NULL,
        addr TEXT NOT NULL DEFAULT '',
        variants_json TEXT NOT NULL DEFAULT '[]',
        PRIMARY KEY (thread_id, key)
    ) WITHOUT ROWID;
    CREATE INDEX extract_thread_entities_key ON extract_thread_entities(key);
    CREATE TABLE extract_thread_phrases (
        thread_id TEXT NOT NULL,
        phrase TEXT NOT NULL,
        text TEXT NOT NULL,
        tf INTEGER NOT NULL,
        PRIMARY KEY (thread_id, phrase)
    ) WITHOUT ROWID;
    CREATE INDEX extract_thread_phrases_phrase ON extract_thread_phrases(phrase);
    CREATE TABLE extract_topics (
        topic_id INTEGER PRIMARY KEY,
        label TEXT NOT NULL,
        terms_json TEXT NOT NULL
    );
    CREATE TABLE extract_thread_topics (
        thread_id TEXT NOT NULL,
        topic_id INTEGER NOT NULL,
        weight REAL NOT NULL,
        PRIMARY KEY (thread_id, topic_id)
    ) WITHOUT ROWID;
    CREATE INDEX extract_thread_topics_topic ON extract_thread_topics(topic_id);
    CREATE TABLE extract_people (
        addr TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        threads INTEGER NOT NULL,
        messages INTEGER NOT NULL,
        words INTEGER NOT NULL,
        topics_json TEXT NOT NULL DEFAULT '[]',
        coworkers_json TEXT NOT NULL DEFAULT '[]',
        updated_at REAL NOT NULL
    )
    """,
]

Progress = Callable[..., None]


def ensure_schema(conn: sqlite3.Connection) -> None:
    store.ensure_schema(conn, "extract", MIGRATIONS)


def _model_key(info: Any) -> str:
    return f"{info.name}@{info.version}"


def seeds_for(participants: Iterable[Address]) -> Seeds:
    ps = list(participants)
    return Seeds(names=tuple(a.name for a in ps if a.name),
                 addresses=tuple(a.addr for a in ps if a.addr))


# ------------------------------------------------------------------------ the stage
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


# ------------------------------------------------------------------------ threads
def _delete_thread(conn: sqlite3.Connection, tid: str) -> None:
    for table in ("extract_thread_entities", "extract_thread_phrases", "extract_thread_topics"):
        conn.execute(f"DELETE FROM {table} WHERE thread_id = ?", (tid,))


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w@.&'-]+", " ", text.lower()).split())


class _People:
    """Who a PERSON mention or an address in one thread refers to."""

    def __init__(self, participants: Sequence[Address]) -> None:
        self.by_addr: dict[str, Address] = {}
        self.full: dict[tuple[str, ...], str] = {}
        word_owner: dict[str, set[str]] = defaultdict(set)
        for a in participants:
            if not a.addr:
                continue
            self.by_addr[a.addr] = a
            for nm in (a.name, name_from_address(a.addr)):
                words = [w.lower().strip(".") for w in name_words(nm) if len(w.strip(".")) > 1]
                if not words:
                    continue
                self.full[tuple(words)] = a.addr
                if len(words) > 1:
                    self.full[(words[0], words[-1])] = a.addr
                for w in (words[0], words[-1]):
                    word_owner[w].add(a.addr)
        self.single = {w: next(iter(o)) for w, o in word_owner.items()
                       if len(o) == 1 and w not in NOT_NAMES}

    def resolve(self, text: str, label: str) -> str:
        if label == "EMAIL":
            addr = re.sub(r"\s+", "", text).lower()
            return addr if addr in self.by_addr else ""
        words = [w.lower().strip(".") for w in name_words(text) if len(w.strip(".")) > 1]
        if not words:
            return ""
        if tuple(words) in self.full:
            return self.full[tuple(words)]
        if len(words) > 1 and (words[0], words[-1]) in self.full:
            return self.full[(words[0], words[-1])]
        if len(words) == 1:
            return self.single.get(words[0], "")
        return ""


def _aggregate_thread(conn: sqlite3.Connection, tid: str) -> None:
    t = store.get_thread(conn, tid)
    if t is None:
        return
    rows = conn.execute(
        "SELECT em.entities_json, em.phrases_json FROM messages m JOIN extract_messages em "
        "USING (message_id) WHERE m.thread_id = ?", (tid,)).fetchall()
    people = _People(t.participants)
    groups: dict[str, dict[str, Any]] = {}
    phrases: dict[str, list[Any]] = {}
    for r in rows:
        for text, label, _s, _e in json.loads(r[0]):
            addr = people.resolve(text, label) if label in ("PERSON", "EMAIL") else ""
            if addr:
                key, lab = f"person:{addr}", "PERSON"
            else:
                key, lab = f"{label.lower()}:{_norm(text)}", label
            g = groups.setdefault(key, {"label": lab, "count": 0, "forms": Counter(),
                                        "addr": addr})
            g["count"] += 1
            g["forms"][" ".join(text.split())] += 1
        for k, text, count in json.loads(r[1]):
            p = phrases.setdefault(k, [text, 0])
            p[1] += count
    conn.execute("DELETE FROM extract_thread_entities WHERE thread_id = ?", (tid,))
    conn.execute("DELETE FROM extract_thread_phrases WHERE thread_id = ?", (tid,))
    ent_rows = []
    for key, g in groups.items():
        forms = [f for f, _ in g["forms"].most_common()]
        if g["addr"]:
            a = people.by_addr[g["addr"]]
            display = " ".join(name_words(a.name)) if a.name else \
                (name_from_address(a.addr) or a.addr)
        else:
            display = forms[0]
        ent_rows.append((tid, key, g["label"], display, g["count"], g["addr"],
                         json.dumps(forms[:10])))
    conn.executemany("INSERT INTO extract_thread_entities VALUES (?,?,?,?,?,?,?)", ent_rows)
    conn.executemany("INSERT INTO extract_thread_phrases VALUES (?,?,?,?)",
                     [(tid, k, v[0], v[1]) for k, v in phrases.items()])


def thread_keyphrases(conn: sqlite3.Connection, tid: str, limit: int = 10,
                      ) -> list[Keyphrase]:
    """5-10 phrases: tf in the thread x idf over the KB's threads, longer phrases favoured;
    people's names and phrases inside a better one are left out."""
    rows = conn.execute("SELECT phrase, text, tf FROM extract_thread_phrases WHERE thread_id = ?",
                        (tid,)).fetchall()
    if not rows:
        return []
    n = conn.execute("SELECT COUNT(DISTINCT thread_id) FROM extract_thread_phrases").fetchone()[0]
    keys = [r[0] for r in rows]
    df: dict[str, int] = {}
    for i in range(0, len(keys), 500):
        chunk = keys[i:i + 500]
        q = ",".join("?" * len(chunk))
        df.update({r[0]: r[1] for r in conn.execute(
            f"SELECT phrase, COUNT(*) FROM extract_thread_phrases WHERE phrase IN ({q}) "
            "GROUP BY phrase", chunk)})
    names = {_norm(r[0]) for r in conn.execute(
        "SELECT variants_json FROM extract_thread_entities WHERE thread_id = ? AND "
        "label = 'PERSON'", (tid,)) for r in [[v] for v in json.loads(r[0])]}
    scored = []
    for key, text, tf in rows:
        if key in names:
            continue
        nw = len(key.split())
        idf = math.log((n + 1) / (df.get(key, 1) + 0.5))
        score = (1 + math.log(tf)) * idf * (1 + 0.5 * (nw - 1))
        if nw == 1 and tf < 2 and n > 20:
            score *= 0.5
        # a lone word said once ("signed", "ready") reads badly: it only fills up to five
        strong = nw > 1 or tf > 1 or text[:1].isupper()
        scored.append((score, key, text, strong))
    scored.sort(reverse=True)
    out: list[Keyphrase] = []
    chosen: list[str] = []
    for want_strong in (True, False):
        for score, key, text, strong in scored:
            if score <= 0 or len(out) >= (limit if want_strong else 5):
                break
            if strong != want_strong or key in chosen:
                continue
            if any(key in c.split() or f" {key} " in f" {c} " or c in key for c in chosen):
                continue
            chosen.append(key)
            out.append(Keyphrase(text, round(score, 3)))
    return out


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


# ------------------------------------------------------------------------ people
def _refresh_people(conn: sqlite3.Connection, model: topics_mod.TopicModel | None,
                    tids: Sequence[str] | None) -> int:
    """Recompute the people of the given threads (all people when None)."""
    threads = conn.execute("SELECT thread_id, participants_json FROM threads").fetchall()
    part_of: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    for tid, pj in threads:
        addrs = []
        for p in json.loads(pj):
            addr = (p.get("addr") if isinstance(p, dict) else p[1] if len(p) > 1 else "") or ""
            name = (p.get("name") if isinstance(p, dict) else p[0]) or ""
            if addr:
                addrs.append(addr.lower())
                if name and not names.get(addr.lower()):
                    names[addr.lower()] = name
        part_of[tid] = addrs
    everyone = {a for addrs in part_of.values() for a in addrs}
    if tids is None:
        wanted = everyone
        conn.execute("DELETE FROM extract_people")
    else:
        wanted = {a for t in tids for a in part_of.get(t, [])}
        gone = [r[0] for r in conn.execute("SELECT addr FROM extract_people")
                if r[0] not in everyone]
        conn.executemany("DELETE FROM extract_people WHERE addr = ?", [(a,) for a in gone])
    by_person: dict[str, list[str]] = defaultdict(list)
    for tid, addrs in part_of.items():
        for a in addrs:
            if a in wanted:
                by_person[a].append(tid)
    now = time.time()
    for addr in wanted:
        rows = conn.execute(
            "SELECT m.body_new, m.sender_name, COALESCE(em.words, 0) FROM messages m "
            "LEFT JOIN extract_messages em USING (message_id) WHERE m.sender_addr = ?",
            (addr,)).fetchall()
        words = sum(r[2] for r in rows)
        topic_pairs: list[list[Any]] = []
        if model is not None and rows:
            sims = model.similarities([r[0] for r in rows])
            weights = [max(1, r[2]) for r in rows]
            vec = sum(w * s for w, s in zip(weights, sims, strict=True))
            total = float(vec.sum()) or 1.0
            order = vec.argsort()[::-1][:5]
            topic_pairs = [[int(i), round(float(vec[i]) / total, 4)] for i in order if vec[i] > 0]
        co: Counter[str] = Counter()
        for tid in by_person.get(addr, []):
            co.update(a for a in part_of[tid] if a != addr)
        name = next((r[1] for r in rows if r[1]), "") or names.get(addr, "")
        conn.execute("INSERT OR REPLACE INTO extract_people VALUES (?,?,?,?,?,?,?,?)",
                     (addr, name, len(by_person.get(addr, [])), len(rows), words,
                      json.dumps(topic_pairs), json.dumps(co.most_common(10)), now))
    return len(wanted)


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
