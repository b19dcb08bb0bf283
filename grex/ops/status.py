"""`grex status`: what state the KB is in, read without taking the writer lock.

Everything here reads the last committed state (SQLite WAL) and the side files; nothing
waits for a running sync, nothing writes.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from grex.ops import runs as ops


@dataclass(frozen=True, slots=True)
class IndexHealth:
    exists: bool
    documents: int | None  # documents in the index
    catalog: int  # messages in the catalog
    pending: int | None  # catalog changes the index has not taken in yet
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class SiteState:
    html_dir: str
    refreshed_at: str | None
    pages: int | None
    pending: int | None  # catalog changes the site has not taken in yet


@dataclass(frozen=True, slots=True)
class Status:
    kb: str
    last_sync: ops.RunRecord | None
    runs: list[ops.RunRecord]
    counts: dict[str, int | None]  # messages, threads, people, topics (None: not built)
    quarantined: list[dict[str, Any]]  # source, reason, at
    quarantined_total: int
    index: IndexHealth | None
    lock: ops.LockState
    site: SiteState | None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lock"] = self.lock.to_dict()
        return d


def _is_sync(command: str) -> bool:
    words = command.split()
    return bool(words) and words[words[0] == "grex" and len(words) > 1:][0] == "sync"


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _count(conn: sqlite3.Connection, tables: set[str], *candidates: str) -> int | None:
    for t in candidates:
        if t in tables:
            return int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0])
    return None


def _pending(conn: sqlite3.Connection, tables: set[str], cursor_name: str) -> int | None:
    """Changes in the feed after a stage's cursor (None when the stage never ran)."""
    if "changes" not in tables:
        return None
    from grex import store

    try:
        if not store.has_cursor(conn, cursor_name):
            return None  # it will start from the whole catalog
        changes, _last = store.changes_since(conn, cursor_name)
    except (sqlite3.Error, AttributeError):
        return None
    return len(changes)


def _quarantine(conn: sqlite3.Connection, tables: set[str],
                limit: int) -> tuple[list[dict[str, Any]], int]:
    """The newest quarantined messages (source, reason, when, where the bytes are kept)."""
    if "quarantine" not in tables:
        return [], 0
    total = int(conn.execute("SELECT count(*) FROM quarantine").fetchone()[0])
    rows = conn.execute("SELECT source, reason, path, at FROM quarantine ORDER BY at DESC "
                        "LIMIT ?", (limit,)).fetchall()
    return [{"source": r["source"], "reason": r["reason"], "path": r["path"],
             "at": datetime.fromtimestamp(r["at"], UTC).isoformat(timespec="seconds")}
            for r in rows], total


def index_health(kb_root: Path, conn: sqlite3.Connection, tables: set[str]) -> IndexHealth | None:
    """Compare the index with the catalog: same set of message ids, cursor caught up."""
    catalog = _count(conn, tables, "messages") or 0
    try:
        from grex import search as gindex
    except ImportError:
        return None
    doc_ids = _index_doc_ids(gindex, kb_root)
    if doc_ids is None:
        return IndexHealth(False, None, catalog, None, catalog == 0,
                           "no index yet" + (" (run `grex reindex`)" if catalog else ""))
    pending = _pending(conn, tables, "index")
    cat_ids = {r[0] for r in conn.execute("SELECT message_id FROM messages")}
    missing, extra = len(cat_ids - doc_ids), len(doc_ids - cat_ids)
    if pending:
        # A sync committed messages the index has not taken in yet (maybe running now).
        ok, detail = True, f"{pending} catalog change(s) not indexed yet"
    elif missing or extra:
        ok = False
        detail = (f"{missing} catalog message(s) missing from the index, {extra} indexed "
                  "message(s) no longer in the catalog (run `grex doctor --repair`)")
    else:
        ok, detail = True, "index matches the catalog"
    return IndexHealth(True, len(doc_ids), catalog, pending, ok, detail)


def _index_doc_ids(gindex: Any, kb_root: Path) -> set[str] | None:
    """Message ids stored in the current index generation, or None when there is none."""
    current = getattr(gindex, "current_index_dir", None)
    idx_dir = current(kb_root) if current else None
    if idx_dir is None:
        return None
    from whoosh import index as windex

    try:
        ix = gindex.open_index(idx_dir, readonly=True)
    except windex.EmptyIndexError:
        return None
    try:
        with ix.searcher() as s:
            return {f["id"] for f in s.all_stored_fields() if f.get("id")}
    finally:
        ix.close()


def site_state(conn: sqlite3.Connection, tables: set[str],
               html_dir: Path | None) -> SiteState | None:
    rec = ops.get_state(conn, "site_refreshed")
    if html_dir is None and not rec:
        return None
    html = Path(rec["html_dir"]) if rec and html_dir is None else html_dir
    at, pages = (rec.get("at"), rec.get("pages")) if rec else (None, None)
    if at is None and html is not None and (html / "index.html").exists():
        at = datetime.fromtimestamp((html / "index.html").stat().st_mtime, UTC) \
            .isoformat(timespec="seconds")
    return SiteState(str(html), at, pages, _pending(conn, tables, "export"))


def gather_status(kb: Any, html_dir: Path | None = None, quarantine_limit: int = 20) -> Status:
    """Read the KB's state without the writer lock (never waits for a running sync)."""
    root = Path(kb.path)
    if html_dir is not None and not html_dir.expanduser().is_absolute():
        html_dir = root / html_dir  # [export] html_dir is relative to the KB
    lock = ops.lock_state(kb)
    conn = kb.connect(readonly=True)
    try:
        tables = _tables(conn)
        live = set(lock.pids) | ({lock.holder.pid} if lock.held and lock.holder else set())
        runs = ops.recent_runs(conn, None, 10, live)
        syncs = [r for r in runs if _is_sync(r.command)] \
            or ops.recent_runs(conn, "grex sync", 1, live) or ops.recent_runs(conn, "sync", 1, live)
        counts = {
            "messages": _count(conn, tables, "messages"),
            "threads": _count(conn, tables, "threads"),
            "people": _count(conn, tables, "extract_people"),
            "topics": _count(conn, tables, "extract_topics"),
        }
        quarantined, qtotal = _quarantine(conn, tables, quarantine_limit)
        index = index_health(root, conn, tables)
        site = site_state(conn, tables, html_dir)
    finally:
        conn.close()
    warnings = []
    if lock.stale and lock.holder and not lock.held:
        warnings.append(f"stale lock record: pid {lock.holder.pid} ({lock.holder.command}) is "
                        "gone; `grex doctor --repair` clears it")
    last = syncs[0] if syncs else None
    if last and last.result == "killed":
        warnings.append(f"the last sync (run {last.id}, pid {last.pid}) was killed before it "
                        "finished; the next sync goes on from what it stored")
    if last and last.result == "interrupted":
        warnings.append(f"the last sync (run {last.id}) was interrupted; "
                        "the next sync completes it")
    if index and not index.ok:
        warnings.append(f"index: {index.detail}")
    return Status(str(root), last, runs, counts, quarantined, qtotal, index, lock, site, warnings)
