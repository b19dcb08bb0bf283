"""Per-thread aggregates: entities (one per person), keyphrases with document frequencies."""

from __future__ import annotations

import json
import math
import re
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from grex import store
from grex.extract.names import NOT_NAMES, name_from_address, name_words
from grex.extract.records import (
    Keyphrase,
)
from grex.models import Address


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


