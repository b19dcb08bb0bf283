"""`grex doctor`: check what a scheduled sync depends on, one line per check; `--repair`
fixes what can be fixed from the KB itself.

    config        grex.toml and the environment load; accounts are set
    credentials   each account has a password (never shown, not even its length)
    server        TLS handshake, login, the folders and capabilities sync relies on
    catalog       PRAGMA integrity_check
    raw files     orphans both ways: raw files without a catalog row (re-imported on
                  --repair, or dropped when the change feed says the message was removed),
                  rows without their raw file (reported: only the server has the bytes)
    index         the index holds exactly the catalog's messages (rebuilt on --repair)
    lock          a lock record whose process is gone (cleared on --repair)
    runs          runs that never recorded their end (closed as killed on --repair)

Checks never raise: each returns OK, WARN or FAIL with a one-line detail.
"""

from __future__ import annotations

import contextlib
import sqlite3
import ssl
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from grex import store
from grex.config import Config
from grex.errors import GrexError
from grex.ops import runs as ops

OK, WARN, FAIL = "OK", "WARN", "FAIL"

# Capabilities grex's sync uses when the server has them (none is strictly required).
USEFUL_CAPS = ("CONDSTORE", "UIDPLUS", "THREAD=REFERENCES", "ESEARCH", "ENABLE", "QRESYNC")


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    level: str  # OK | WARN | FAIL
    detail: str
    repaired: bool = False

    def line(self) -> str:
        return f"{self.level:<4}  {self.name:<12} {self.detail}" + (
            " [repaired]" if self.repaired else "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _guard(name: str, fn: Callable[[], Check | list[Check]]) -> list[Check]:
    try:
        out = fn()
    except GrexError as e:
        return [Check(name, FAIL, str(e))]
    except Exception as e:  # noqa: BLE001 - a check must report, never crash the doctor
        return [Check(name, FAIL, f"check failed: {type(e).__name__}: {e}")]
    return out if isinstance(out, list) else [out]


# --------------------------------------------------------------- config and server


def check_credentials(config: Config) -> list[Check]:
    if not config.accounts:
        return [Check("credentials", WARN, "no accounts configured: nothing to sync")]
    out = []
    for a in config.accounts:
        try:
            secret = a.password()
        except GrexError as e:
            out.append(Check("credentials", FAIL, str(e)))
            continue
        where = ("password_command" if a.password_command and not _env_password(a)
                 else "the environment")
        level, note = (OK, "") if secret else (FAIL, " is empty")
        out.append(Check("credentials", level,
                         f"account {a.name!r}: password from {where}{note} (not shown)"))
    return out


def _env_password(account: Any) -> bool:
    import os

    from grex.config import _env_key

    return bool(os.environ.get(f"GREX_IMAP_PASSWORD_{_env_key(account.name)}")
                or os.environ.get("GREX_IMAP_PASSWORD"))


def check_server(config: Config) -> list[Check]:
    """Connect and log in to each account's server; report TLS, folders and capabilities."""
    try:
        from grex import ingest as sync
    except ImportError:
        return [Check("server", WARN, "IMAP sync is not installed in this build")]
    out = []
    for a in config.accounts:
        try:
            client = sync.connect(a)
        except GrexError as e:
            out.append(Check("server", FAIL, f"account {a.name!r}: {e}"))
            continue
        except Exception as e:  # noqa: BLE001 - sync's retryable errors are plain exceptions
            out.append(Check("server", FAIL, f"account {a.name!r}: {a.host}:{a.port}: {e}"))
            continue
        try:
            tls = _tls_version(client)
            caps = {c.decode() if isinstance(c, bytes) else str(c)
                    for c in client.capabilities()}
            missing = [c for c in USEFUL_CAPS if c not in caps]
            try:
                folders = sync.resolve_folders(client, a)
                folder_note = f"{len(folders)} folder(s) match"
                level = OK
            except GrexError as e:
                folder_note, level = str(e), FAIL
            tls_note = f"TLS {tls}" if tls else ("no TLS (loopback, allow_insecure)"
                                                 if a.tls == "none" else "TLS unknown")
            if level == OK and missing:
                level = WARN
            cap_note = ("all capabilities sync uses" if not missing
                        else "missing " + ", ".join(missing) + " (sync is slower)")
            out.append(Check("server", level, f"account {a.name!r}: {a.host}:{a.port}, "
                                              f"{tls_note}, login ok, {folder_note}, {cap_note}"))
        finally:
            with contextlib.suppress(Exception):
                client.logout()
    return out


def _tls_version(client: Any) -> str | None:
    sock = getattr(getattr(client, "_imap", None), "sock", None)
    if isinstance(sock, ssl.SSLSocket):
        return sock.version()
    return None


# ------------------------------------------------------------------------ the KB


def check_catalog(kb: Any) -> Check:
    conn = kb.connect(readonly=True)
    try:
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
    except sqlite3.DatabaseError as e:
        return Check("catalog", FAIL, f"the catalog can't be read: {e}")
    finally:
        conn.close()
    if rows != ["ok"]:
        return Check("catalog", FAIL, "integrity_check: " + "; ".join(rows[:3]))
    return Check("catalog", OK, "integrity_check ok")


def _last_ops(conn: sqlite3.Connection, ids: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        q = ("SELECT key, op FROM changes WHERE kind = 'message' AND key IN "
             f"({','.join('?' * len(chunk))}) ORDER BY seq")
        for r in conn.execute(q, chunk):
            out[r["key"]] = r["op"]
    return out


def check_raw_files(kb: Any, config: Config | None, repair: bool) -> list[Check]:
    """Raw files without rows and rows without raw files."""
    from grex.ingest import parse_message

    conn = kb.connect()
    try:
        rows = {r["raw_path"] for r in conn.execute("SELECT raw_path FROM messages")}
        cur = kb.raw_dir / "cur"
        files = {f"cur/{p.name}" for p in cur.iterdir() if p.is_file()} if cur.is_dir() else set()
        missing = sorted(rows - files)
        orphans = sorted(files - rows)
        out = []
        if missing:
            out.append(Check("raw files", FAIL,
                             f"{len(missing)} catalog row(s) without their raw file, e.g. "
                             f"{missing[0]} (the bytes are gone from the KB; run "
                             "`grex sync --full` or re-import the source)"))
        if not orphans:
            if not missing:
                out.append(Check("raw files", OK, f"{len(files)} raw file(s), each in the "
                                                  "catalog"))
            return out
        # Which orphans were removed on purpose (a crash between the delete and the unlink)?
        ids: dict[str, str] = {}
        for rel in orphans:
            try:
                ids[rel] = parse_message((kb.raw_dir / rel).read_bytes()).message_id
            except (OSError, GrexError, ValueError):
                ids[rel] = ""
        last = _last_ops(conn, [m for m in ids.values() if m])
        deleted = [rel for rel, mid in ids.items() if mid and last.get(mid) == "delete"]
        adopt = [rel for rel in orphans if rel not in deleted]
        what = (f"{len(orphans)} raw file(s) without a catalog row ({len(deleted)} of "
                f"removed messages, {len(adopt)} never recorded)")
        if not repair:
            out.append(Check("raw files", WARN, what + " (--repair re-imports or drops them)"))
            return out
        for rel in deleted:
            with contextlib.suppress(FileNotFoundError):
                (kb.raw_dir / rel).unlink()
        if adopt:
            from grex import pipeline
            from grex.config import Config as _Config

            pipeline.import_paths(kb, conn, config or _Config(kb=Path(kb.path)),
                                  [kb.raw_dir / rel for rel in adopt])
        out.append(Check("raw files", OK, what + f"; dropped {len(deleted)}, re-imported "
                                                 f"{len(adopt)}", repaired=True))
        return out
    finally:
        conn.close()


def check_index(kb: Any, repair: bool) -> Check:
    from grex.ops import status

    conn = kb.connect(readonly=True)
    try:
        health = status.index_health(Path(kb.path), conn, status._tables(conn))
    finally:
        conn.close()
    if health is None:
        return Check("index", WARN, "search is not installed in this build")
    if health.ok:
        docs = f"{health.documents} document(s); " if health.exists else ""
        return Check("index", OK, docs + health.detail)
    if repair:
        from grex import search as gindex

        conn = kb.connect()
        try:
            report = gindex.rebuild_index(kb, conn)
        finally:
            conn.close()
        n = getattr(report, "documents", None)
        return Check("index", OK, f"was: {health.detail}; rebuilt from the catalog"
                                  + (f" ({n} documents)" if n is not None else ""),
                     repaired=True)
    return Check("index", FAIL if health.exists else WARN, health.detail)


def check_lock(kb: Any, repair: bool) -> Check:
    state = ops.lock_state(kb)
    if state.stale and state.holder and not state.held:
        h = state.holder
        what = f"stale lock record: pid {h.pid} on {h.host} ({h.command}, since {h.since}) is gone"
        if repair and ops.clear_holder(kb):
            return Check("lock", OK, what + "; record cleared", repaired=True)
        return Check("lock", WARN, what + " (--repair clears it)")
    if state.held:
        holder = state.holder
        who = f"`{holder.command}` pid {holder.pid} since {holder.since}" if holder else \
            f"pid {', '.join(map(str, state.pids))}"
        return Check("lock", OK, f"held by {who}")
    return Check("lock", OK, "free")


def check_runs(kb: Any, repair: bool) -> Check:
    state = ops.lock_state(kb)
    live = set(state.pids) | ({state.holder.pid} if state.held and state.holder else set())
    conn = kb.connect()
    try:
        killed = [r for r in ops.recent_runs(conn, None, 1000, live)
                  if r.result == "killed" and r.ended_at is None]
        if not killed:
            return Check("runs", OK, "every finished run recorded its end")
        what = f"{len(killed)} run(s) ended without recording it (killed): " + ", ".join(
            f"#{r.id} {r.command} {r.started_at}" for r in killed[:3])
        if repair:
            ops.close_killed_runs(conn, live)
            return Check("runs", OK, what + "; closed as killed", repaired=True)
        return Check("runs", WARN, what + " (the next sync completes their work)")
    finally:
        conn.close()


# ------------------------------------------------------------------------ together


def run_doctor(kb_path: Path, load: Callable[[], Config], *, repair: bool = False,
               server: bool = True) -> list[Check]:
    """Every check in order. ``load`` reads the configuration (its failure is a FAIL line,
    and the checks that need it are skipped). Repairs need the writer lock: when a sync
    holds it, repairs are skipped and said to be."""
    checks: list[Check] = []
    config: Config | None = None
    try:
        config = load()
        where = config.source or "defaults and environment (no grex.toml)"
        checks.append(Check("config", OK, f"{where}: {len(config.accounts)} account(s)"))
    except GrexError as e:
        checks.append(Check("config", FAIL, str(e)))
    if config is not None:
        checks += _guard("credentials", lambda: check_credentials(config))
        if server and config.accounts:
            checks += _guard("server", lambda: check_server(config))
    try:
        kb = store.KB.open(kb_path)
    except GrexError as e:
        return [*checks, Check("catalog", FAIL, str(e))]
    checks += _guard("catalog", lambda: check_catalog(kb))
    if checks[-1].level == FAIL:
        return checks  # the rest reads the catalog
    # Look at the lock before taking it: taking it replaces a stale record with ours.
    lock_check = _guard("lock", lambda: check_lock(kb, False))
    lock_cm: Any = contextlib.nullcontext()
    if repair:
        try:
            lock_cm = kb.writer_lock(wait=False, command="grex doctor --repair")
            lock_cm.__enter__()
        except GrexError as e:
            checks += lock_check
            checks.append(Check("repair", WARN, f"repairs skipped: {e}"))
            repair, lock_cm = False, contextlib.nullcontext()
        else:
            checks += [Check(c.name, OK, c.detail.replace(" (--repair clears it)", "")
                             + "; record cleared", repaired=True) if c.level == WARN else c
                       for c in lock_check]
    else:
        checks += lock_check
    try:
        checks += _guard("runs", lambda: check_runs(kb, repair))
        checks += _guard("raw files", lambda: check_raw_files(kb, config, repair))
        checks += _guard("index", lambda: check_index(kb, repair))
    finally:
        lock_cm.__exit__(None, None, None)
    return checks


def worst(checks: Iterable[Check]) -> str:
    levels = [c.level for c in checks]
    return FAIL if FAIL in levels else WARN if WARN in levels else OK
