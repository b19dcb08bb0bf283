"""`grex doctor`: check what a scheduled sync depends on, one line per check; `--repair`
fixes what can be fixed from the KB itself.

    config        grex.toml and the environment load; accounts and folders are set
    credentials   each account has a password (never shown)
    server        TLS handshake, login, the capabilities sync relies on
    catalog       PRAGMA integrity_check
    raw files     orphans both ways: raw files without rows (re-imported on --repair),
                  rows without raw files (reported: the server copy is needed)
    index         the index holds exactly the catalog's messages (rebuilt on --repair)
    lock          a lock record whose process is gone (cleared on --repair)
    runs          runs that never ended (closed as killed on --repair)

Checks never raise: each returns OK, WARN or FAIL with a one-line detail.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from grex import ops

OK, WARN, FAIL = "OK", "WARN", "FAIL"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    level: str  # OK | WARN | FAIL
    detail: str
    repaired: bool = False

    def line(self) -> str:
        return f"{self.level:<4}  {self.name:<12} {self.detail}" + (
            " [repaired]" if self.repaired else "")


def _guard(name: str, fn: Callable[[], Check | list[Check]]) -> list[Check]:
    try:
        out = fn()
    except Exception as e:  # a check must report, never crash the doctor
        return [Check(name, FAIL, f"check failed: {type(e).__name__}: {e}")]
    return out if isinstance(out, list) else [out]


# ------------------------------------------------------------------ individual checks


def check_catalog(kb: Any) -> Check:
    conn = kb.connect()
    try:
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
        fk = conn.execute("PRAGMA foreign_key_check").fetchall()
    except sqlite3.DatabaseError as e:
        return Check("catalog", FAIL, f"the catalog can't be read: {e}")
    finally:
        conn.close()
    if rows != ["ok"]:
        return Check("catalog", FAIL, "integrity_check: " + "; ".join(rows[:3]))
    if fk:
        return Check("catalog", WARN, f"{len(fk)} foreign key violation(s)")
    return Check("catalog", OK, "integrity_check ok")


def check_lock(kb: Any, repair: bool) -> Check:
    root = ops.kb_root(kb)
    state = ops.lock_state(root, ops._lock_file(kb))
    if state.stale and state.holder:
        h = state.holder
        what = f"stale lock record: pid {h.pid} on {h.host} ({h.command}, since {h.since}) is gone"
        if repair:
            ops.clear_holder(root)
            return Check("lock", OK, what + "; record cleared", repaired=True)
        return Check("lock", WARN, what + " (--repair clears it)")
    if state.held and state.holder:
        h = state.holder
        return Check("lock", OK, f"held by `grex {h.command}` pid {h.pid} since {h.since}")
    return Check("lock", OK, "free")


def check_runs(kb: Any, repair: bool) -> Check:
    conn = kb.connect()
    try:
        state = ops.lock_state(ops.kb_root(kb), ops._lock_file(kb))
        live = {state.holder.pid} if state.held and state.holder else set()
        killed = [r for r in ops.recent_runs(conn, None, 1000, live) if r.result == "killed"]
        if not killed:
            return Check("runs", OK, "every finished run recorded its end")
        what = f"{len(killed)} run(s) ended without recording it (killed): " + ", ".join(
            f"#{r.id} {r.command} {r.started_at}" for r in killed[:3])
        if repair:
            ops.close_killed_runs(conn)
            return Check("runs", OK, what + "; closed as killed", repaired=True)
        return Check("runs", WARN, what)
    finally:
        conn.close()


def check_index(kb: Any, repair: bool,
                rebuild: Callable[[Any], Any] | None = None) -> Check:
    from grex import status

    conn = kb.connect()
    try:
        health = status.index_health(ops.kb_root(kb), conn, status._tables(conn))
    finally:
        conn.close()
    if health is None:
        return Check("index", WARN, "search is not installed in this build")
    if health.ok and health.exists:
        return Check("index", OK, f"{health.documents} document(s); {health.detail}")
    if health.ok:
        return Check("index", OK, health.detail)
    if repair and rebuild is not None:
        rebuild(kb)
        return Check("index", OK, f"was: {health.detail}; rebuilt from the catalog",
                     repaired=True)
    return Check("index", FAIL if health.exists else WARN, health.detail)


def run_checks(kb: Any, *, repair: bool = False,
               extra: Iterable[tuple[str, Callable[[], Check | list[Check]]]] = (),
               rebuild_index: Callable[[Any], Any] | None = None) -> list[Check]:
    """Run every check in order; ``extra`` adds (name, fn) checks (config, credentials, server,
    raw files) that need more than the KB object."""
    checks: list[Check] = []
    for name, fn in extra:
        checks += _guard(name, fn)
    checks += _guard("catalog", lambda: check_catalog(kb))
    checks += _guard("lock", lambda: check_lock(kb, repair))
    checks += _guard("runs", lambda: check_runs(kb, repair))
    checks += _guard("index", lambda: check_index(kb, repair, rebuild_index))
    return checks


def worst(checks: Iterable[Check]) -> str:
    levels = [c.level for c in checks]
    return FAIL if FAIL in levels else WARN if WARN in levels else OK

