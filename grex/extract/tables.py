"""The extraction stage's tables (migrations) and the seeds an NLP pass gets from a thread."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

from grex import store
from grex.extract.records import (
    Seeds,
)
from grex.models import Address

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
