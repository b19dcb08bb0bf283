"""Rebuild what the catalog derives from the raw store: parsed fields and threads."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from grex import store
from grex.config import Config
from grex.errors import ParseError
from grex.ingest import catalog
from grex.ingest.parse import parse_message


def rebuild_catalog(kb: store.KB, conn: sqlite3.Connection, config: Config, *,
                    progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Re-parse each message from its raw file (same Message-ID kept) and re-thread all."""
    rows = conn.execute("SELECT message_id, raw_path, thread_id FROM messages").fetchall()
    reparsed = 0
    for i in range(0, len(rows), 500):
        with store.transaction(conn):
            for r in rows[i:i + 500]:
                try:
                    data = store.read_raw(kb, r["raw_path"])
                    m = parse_message(data)
                except (OSError, ParseError):
                    continue
                if m.message_id != r["message_id"]:
                    continue  # a synthetic id of an older parser: keep the row as it is
                store.replace_parsed(conn, m)
                reparsed += 1
        if progress:
            progress(len(rows[i:i + 500]))
    changed, _ = catalog.rethread_all(conn, subject_merge=config.threading.subject_merge)
    return {"reparsed": reparsed, "threads": changed}
