"""The people of the KB: who wrote and received what, refreshed for touched threads."""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from grex.extract import topics as topics_mod


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


