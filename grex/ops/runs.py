"""Running grex unattended: who holds the writer lock, a record of every run, a rotating log,
and a graceful stop on SIGTERM.

    with ops.writer(kb, wait=False, command="sync") as run:     # KBLocked (exit 75) if busy
        ... do the work, checking run.stop_requested between batches ...
        run.counts.update(new=12, deleted=1)

``writer`` takes the store's exclusive lock, writes a side file naming the holder (pid, host,
command, since) so `grex status` can say who is busy, and keeps a row in the ``runs`` table
that is written when the run starts and again when it ends. A run whose row never ended and
whose process is gone was killed; status says so and the next run goes on from the store.

Readers (search, export, status) never take the lock: SQLite WAL gives them the last
committed state.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import signal
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from grex.errors import GrexError, Interrupted, KBLocked

log = logging.getLogger("grex.ops")
# Library records go to a --log-file when one is set up, never to stderr by accident
# (logging's last-resort handler would print WARNINGs: cron would mail them).
logging.getLogger("grex").addHandler(logging.NullHandler())

LOG_MAX_BYTES = 1_000_000
LOG_BACKUPS = 5

RUNS_SCHEMA = [
    """
    CREATE TABLE runs(
        id INTEGER PRIMARY KEY,
        command TEXT NOT NULL,
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        started_at TEXT NOT NULL,
        ended_at TEXT,
        duration REAL,
        result TEXT NOT NULL DEFAULT 'running',  -- running | ok | failed | interrupted
        counts TEXT NOT NULL DEFAULT '{}',        -- JSON
        error TEXT
    );
    CREATE INDEX runs_command ON runs(command, id);
    CREATE TABLE ops_state(key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------------ log file


def setup_log_file(path: Path, *, max_bytes: int = LOG_MAX_BYTES,
                   backups: int = LOG_BACKUPS, level: int = logging.INFO) -> logging.Handler:
    """Send grex's log records to a size-rotated file (path, path.1 .. path.N).

    Only one writer runs at a time (the KB lock), so one process rotates at a time; a sync
    that is refused the lock logs one line, which at worst lands just before a rotation.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s {socket.gethostname()} pid=%(process)d %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S%z"))
    handler.setLevel(level)
    root = logging.getLogger("grex")
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > level:
        root.setLevel(level)
    return handler


# ------------------------------------------------------------- who holds the lock


@dataclass(frozen=True, slots=True)
class LockHolder:
    """What the store's lock.json says (written by KB.writer_lock, removed on release)."""

    pid: int
    host: str
    command: str
    since: str

    @property
    def local(self) -> bool:
        return self.host == socket.gethostname()


@dataclass(frozen=True, slots=True)
class LockState:
    """What status shows about the writer lock."""

    holder: LockHolder | None  # what lock.json says
    held: bool  # a live process holds the lock now
    stale: bool  # lock.json names a holder that no longer holds the lock (killed)
    pids: tuple[int, ...] = ()  # the processes holding the flock (from /proc/locks)

    def to_dict(self) -> dict[str, Any]:
        return {"holder": asdict(self.holder) if self.holder else None,
                "held": self.held, "stale": self.stale, "pids": list(self.pids)}


def read_holder(kb: Any) -> LockHolder | None:
    try:
        data = json.loads(Path(kb.lock_info_path).read_text(encoding="utf-8"))
        return LockHolder(int(data.get("pid", 0)), str(data.get("host", "?")),
                          str(data.get("command", "?")), str(data.get("since", "")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError, TypeError):
        # A torn or hand-edited record: a holder nobody can vouch for.
        return LockHolder(0, "?", "unreadable lock record", "")


def clear_holder(kb: Any) -> bool:
    """Remove a stale lock.json. Refuses while a live process holds the lock."""
    state = lock_state(kb)
    if state.held or state.holder is None:
        return False
    with suppress(FileNotFoundError):
        Path(kb.lock_info_path).unlink()
    return True


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    with suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def lock_pids(lock_file: Path) -> set[int] | None:
    """Pids holding a lock on ``lock_file`` according to /proc/locks; None where there is no
    /proc/locks (then only the recorded pid's liveness can be checked). Reading it never
    touches the lock, so a status never disturbs a running sync."""
    try:
        table = Path("/proc/locks").read_text()
    except OSError:
        return None
    try:
        st = lock_file.stat()
    except OSError:
        return set()
    want = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    pids = set()
    for line in table.splitlines():
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" (waiters are marked "->")
        parts = line.split()
        if "->" in parts or len(parts) < 6:
            continue
        try:
            major, minor, ino = parts[5].split(":")
            if (int(major, 16), int(minor, 16), int(ino)) == want:
                pids.add(int(parts[4]))
        except ValueError:
            continue
    return pids


def lock_state(kb: Any) -> LockState:
    holder = read_holder(kb)
    pids = lock_pids(Path(kb.lock_path))
    if pids:
        stale = bool(holder and holder.local and holder.pid not in pids)
        return LockState(holder, True, stale, tuple(sorted(pids)))
    if holder is None:
        return LockState(None, False, False)
    if not holder.local:
        # A KB on a share written from another host: the record can't be checked here.
        return LockState(holder, True, False)
    if pids is None:  # no /proc/locks: believe a live pid
        alive = pid_alive(holder.pid)
        return LockState(holder, alive, not alive)
    return LockState(holder, False, True)


# ------------------------------------------------------------------------ the runs table


def ensure_runs(conn: sqlite3.Connection) -> None:
    from grex import store

    store.ensure_schema(conn, "ops", RUNS_SCHEMA)


def start_run(conn: sqlite3.Connection, command: str) -> int:
    ensure_runs(conn)
    with conn:
        cur = conn.execute(
            "INSERT INTO runs(command, pid, host, started_at) VALUES (?, ?, ?, ?)",
            (command, os.getpid(), socket.gethostname(), now_iso()))
    return int(cur.lastrowid or 0)


def end_run(conn: sqlite3.Connection, run_id: int, result: str, counts: dict[str, Any],
            error: str | None, duration: float) -> None:
    with conn:
        conn.execute(
            "UPDATE runs SET ended_at=?, duration=?, result=?, counts=?, error=? WHERE id=?",
            (now_iso(), round(duration, 3), result, json.dumps(counts, sort_keys=True),
             error, run_id))


def set_state(conn: sqlite3.Connection, key: str, value: Any) -> None:
    ensure_runs(conn)
    with conn:
        conn.execute("INSERT INTO ops_state(key, value) VALUES (?, ?) "
                     "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                     (key, json.dumps(value)))


def get_state(conn: sqlite3.Connection, key: str) -> Any:
    try:
        row = conn.execute("SELECT value FROM ops_state WHERE key=?", (key,)).fetchone()
    except sqlite3.OperationalError:  # no ops tables yet: nothing was ever recorded
        return None
    return json.loads(row[0]) if row else None


def record_site_refresh(conn: sqlite3.Connection, html_dir: Path, pages: int | None = None) -> None:
    """Called by the pipeline after run_export refreshed the site."""
    set_state(conn, "site_refreshed", {"at": now_iso(), "html_dir": str(html_dir),
                                       "pages": pages})


def refresh_site(kb: Any, conn: sqlite3.Connection, config: Any, *,
                 progress: Callable[..., None] | None = None, **options: Any) -> dict[str, Any]:
    """The pipeline's export stage: with ``[export] html_dir`` set, bring the static site up
    to date (incrementally: grex.export.run_export follows the "export" cursor) and record
    when, for `grex status`. Without html_dir, or without the export module, it does nothing
    and says why."""
    html = getattr(getattr(config, "export", None), "html_dir", "") or ""
    if not html:
        return {"skipped": "no [export] html_dir in grex.toml"}
    try:
        from grex.export import run_export
    except ImportError as e:
        if e.name and "grex.export".startswith(e.name):
            return {"skipped": "grex.export is not available in this build"}
        raise
    html_dir = Path(html).expanduser()
    if not html_dir.is_absolute():
        html_dir = Path(kb.path) / html_dir
    report = run_export(kb, conn, config, progress=progress, **options)
    if report is None:
        return {"skipped": "no site configured"}
    pages = getattr(report, "files", None)
    record_site_refresh(conn, html_dir, pages if isinstance(pages, int) else None)
    return {"html_dir": str(html_dir), "pages": pages, "report": report}


@dataclass(frozen=True, slots=True)
class RunRecord:
    id: int
    command: str
    pid: int
    host: str
    started_at: str
    ended_at: str | None
    duration: float | None
    result: str  # ok | failed | interrupted | running | killed (derived)
    counts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def _row_to_run(row: sqlite3.Row, holder_pids: set[int]) -> RunRecord:
    result = row["result"]
    if result == "running":
        same_host = row["host"] == socket.gethostname()
        if same_host and not (row["pid"] in holder_pids or pid_alive(row["pid"])):
            result = "killed"
    return RunRecord(row["id"], row["command"], row["pid"], row["host"], row["started_at"],
                     row["ended_at"], row["duration"], result, json.loads(row["counts"] or "{}"),
                     row["error"])


def recent_runs(conn: sqlite3.Connection, command: str | None = None, limit: int = 10,
                live_pids: set[int] | None = None) -> list[RunRecord]:
    try:
        if command:
            rows = conn.execute("SELECT * FROM runs WHERE command=? ORDER BY id DESC LIMIT ?",
                                (command, limit)).fetchall()
        else:
            rows = conn.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?",
                                (limit,)).fetchall()
    except sqlite3.OperationalError:
        return []
    return [_row_to_run(r, live_pids or set()) for r in rows]


def close_killed_runs(conn: sqlite3.Connection, live_pids: set[int] | None = None) -> int:
    """Mark runs whose process died without ending them as 'killed' (doctor --repair)."""
    n = 0
    for run in recent_runs(conn, limit=1000, live_pids=live_pids):
        if run.result == "killed" and run.ended_at is None:
            with conn:
                conn.execute("UPDATE runs SET result='killed', ended_at=COALESCE(ended_at, ?),"
                             " error=COALESCE(error, 'process ended without recording an end')"
                             " WHERE id=? AND result='running'", (now_iso(), run.id))
            n += 1
    return n


# ----------------------------------------------------------------- graceful stop


class StopFlag:
    """Set by SIGTERM during a recorded run; work loops check it between batches. Before the
    run is recorded (starting up, queueing for the lock) and on a second SIGTERM it raises
    Interrupted at once."""

    def __init__(self) -> None:
        self.requested = False
        self.signal: int | None = None
        self.pid = os.getpid()
        self.armed = False  # True while a recorded run is under way

    def __call__(self) -> bool:
        return self.requested

    def _handler(self, signum: int, _frame: Any) -> None:
        if os.getpid() != self.pid:
            # A worker forked during the run (spaCy, Whoosh) inherited this handler: it must
            # die of the signal as usual, not wait for a batch it doesn't run.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        name = signal.Signals(signum).name
        if not self.armed:
            raise Interrupted(f"stopped by {name} before the run started")
        if self.requested:
            raise Interrupted(f"stopped by {name} (second time)")
        self.requested = True
        self.signal = signum
        log.warning("received %s: finishing the current batch, then stopping", name)

    @contextmanager
    def installed(self, signals: tuple[int, ...] = (signal.SIGTERM,)) -> Iterator[StopFlag]:
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {s: signal.signal(s, self._handler) for s in signals}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


# ------------------------------------------------------------------- the writer context


@dataclass
class Run:
    """What a writer records about itself while it works."""

    id: int
    command: str
    stop: StopFlag
    counts: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    @property
    def stop_requested(self) -> bool:
        return self.stop.requested

    def check(self) -> None:
        """Raise Interrupted when a stop was requested: call it between batches."""
        if self.stop.requested:
            name = signal.Signals(self.stop.signal).name if self.stop.signal else "a signal"
            raise Interrupted(f"stopped by {name} after a completed batch",
                              hint="the next sync goes on from what was stored")

    def progress(self, inner: Callable[..., Any] | None = None) -> Callable[..., None]:
        """A progress callback (called by sync after each saved batch) that also stops the
        run there when SIGTERM came: the batch is durable, the rest waits for the next run."""
        def cb(*args: Any) -> None:
            if inner is not None:
                inner(*args)
            self.check()
        return cb


@contextmanager
def writer(kb: Any, *, wait: bool, command: str, timeout: float | None = None,
           stop: StopFlag | None = None,
           conn: sqlite3.Connection | None = None) -> Iterator[Run]:
    """Hold the KB's writer lock for ``command`` and keep a ``runs`` row for the run.

    The store's lock records its holder (lock.json); KBLocked (exit 75) comes at once when
    another writer is busy and ``wait`` is False. ``conn`` (optional) is the caller's catalog
    connection, so the ``runs`` rows never wait on a transaction of the same process.
    SIGTERM sets ``run.stop``: work loops see it (``run.check()`` / ``run.progress``) and
    stop after their current batch. The row ends as ok, failed (an exception escaped) or
    interrupted; a kill leaves it 'running' and status reports it as killed.
    """
    stop = stop or StopFlag()
    # The handler goes in first: a SIGTERM while starting or queueing (--wait) ends the
    # command at once; once the run is recorded it means "stop after this batch".
    with stop.installed(), ExitStack() as stack:
        try:
            stack.enter_context(kb.writer_lock(wait=wait, timeout=timeout, command=command))
        except KBLocked as e:
            log.warning("%s not started: %s", command, e)
            raise
        held = _fds_of(Path(kb.lock_path)) - _LOCK_FDS
        _LOCK_FDS.update(held)
        stack.callback(_LOCK_FDS.difference_update, held)
        if conn is None:
            conn = kb.connect()
            stack.callback(conn.close)
        run = Run(start_run(conn, command), command, stop)
        stop.armed = True
        log.info("%s started (run %d)", command, run.id)
        result, error = "ok", None
        try:
            yield run
            if stop.requested:
                result = "interrupted"
        except BaseException as e:  # record, then let it travel on
            interrupted = isinstance(e, Interrupted | KeyboardInterrupt) or stop.requested
            result = "interrupted" if interrupted else "failed"
            error = f"{type(e).__name__}: {e}"
            raise
        finally:
            duration = time.monotonic() - run.started
            if conn.in_transaction:  # a failed batch left its transaction open: drop it
                conn.rollback()
            end_run(conn, run.id, result, run.counts, error, duration)
            log.log(logging.INFO if result == "ok" else logging.WARNING,
                    "%s %s in %.1fs %s%s", command, result, duration,
                    json.dumps(run.counts, sort_keys=True), f" ({error})" if error else "")
            stop.armed = False


# Descriptors of the writer lock held by this process. A child forked during the run (spaCy's
# and Whoosh's worker pools fork) would share the flock'd open file: if the sync were then
# SIGKILLed, orphaned workers would keep the KB locked until they exit. Children close them.
_LOCK_FDS: set[int] = set()


def _close_lock_fds_in_child() -> None:
    for fd in list(_LOCK_FDS):
        with suppress(OSError):
            os.close(fd)
    _LOCK_FDS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_lock_fds_in_child)


def _fds_of(path: Path) -> set[int]:
    """This process's descriptors open on ``path`` (Linux /proc/self/fd)."""
    try:
        want = path.stat()
        names = os.listdir("/proc/self/fd")
    except OSError:
        return set()
    out = set()
    for name in names:
        with suppress(OSError, ValueError):
            st = os.stat(int(name))
            if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
                out.add(int(name))
    return out


def kb_root(kb: Any) -> Path:
    for attr in ("path", "root"):
        p = getattr(kb, attr, None)
        if p is not None:
            return Path(p)
    raise TypeError(f"{kb!r} has no path")


# ------------------------------------------------------------------- exit codes


# Codes that no exception carries: what the process itself ends with.
_PROCESS_CODES = [
    (0, "-", "success (with `--quiet`, nothing is printed)"),
    (2, "-", "usage error: an unknown option or a bad argument (Typer/Click)"),
    (130, "-", "interrupted by Ctrl-C (SIGINT) before finishing"),
]


def exit_code_table() -> list[tuple[int, str, str]]:
    """(code, exception, meaning) for every GrexError subclass, plus the process codes.

    Built from grex.errors (and the classes other grex modules define under GrexError), so
    the documentation cannot drift from the code: a test compares docs/exit-codes.md with it.
    """
    import re

    import grex.errors as errors

    notes = {}
    for line in (errors.__doc__ or "").splitlines():
        m = re.match(r"[\s│├└─]*([A-Z][A-Za-z_]+)\s{2,}(.+?)\s*(?:\(exit (\d+)[^)]*\))?\s*$",
                     line)
        if m:
            notes[m.group(1)] = m.group(2).strip()
    seen: dict[str, tuple[int, str, str]] = {}

    def walk(cls: type[GrexError]) -> None:
        doc = notes.get(cls.__name__) or (cls.__doc__ or "").strip().split("\n")[0]
        doc = re.sub(r"\s*\(exit \d+[^)]*\)\s*$", "", doc.rstrip(".")).rstrip(".")
        seen[cls.__name__] = (cls.exit_code, cls.__name__, doc)
        for sub in sorted(cls.__subclasses__(), key=lambda c: c.__name__):
            if sub.__module__.startswith("grex") and not sub.__module__.startswith("grex.tests"):
                walk(sub)

    walk(errors.GrexError)
    seen["GrexError"] = (1, "GrexError", "any other error grex reports (one line on stderr)")
    rows = list(seen.values()) + _PROCESS_CODES
    return sorted(rows, key=lambda r: (r[0], r[1]))


def exit_codes_markdown() -> str:
    lines = [
        "# grex exit codes",
        "",
        "Generated from `grex/errors.py` by `python -m grex.ops.runs exit-codes`; a test keeps it",
        "in step with the code. Codes follow BSD sysexits(3) where one fits.",
        "",
        "| code | error | meaning |",
        "| ---: | --- | --- |",
    ]
    for code, name, meaning in exit_code_table():
        lines.append(f"| {code} | {'`' + name + '`' if name != '-' else '-'} | {meaning} |")
    lines += [
        "",
        "Under cron, `grex sync --quiet` prints nothing when it succeeds, so cron mails only",
        "failures; 75 means another writer held the KB lock and this run did not start.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":  # python -m grex.ops.runs exit-codes > docs/exit-codes.md
    import sys as _sys

    if _sys.argv[1:] == ["exit-codes"]:
        _sys.stdout.write(exit_codes_markdown())
