"""The KB directory: its layout, opening the catalog, and the one-writer lock."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from grex.config import CONFIG_NAME, DEFAULT_TOML
from grex.errors import KBError, KBLocked, KBNotFound
from grex.store.schema import CATALOG, CORE_MIGRATIONS, ensure_schema

# ------------------------------------------------------------------ the KB directory

# Worker processes forked while a writer holds the lock (parsing, spaCy, Whoosh) must not
# inherit it: an flock belongs to the open file, so an orphaned worker would keep the KB
# locked after its parent was killed. Children close the inherited descriptors at once.
_HELD_LOCK_FDS: set[int] = set()


def _close_lock_fds_in_child() -> None:
    for fd in list(_HELD_LOCK_FDS):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD_LOCK_FDS.clear()


os.register_at_fork(after_in_child=_close_lock_fds_in_child)


@dataclass(frozen=True)
class KB:
    path: Path

    @property
    def raw_dir(self) -> Path:
        return self.path / "raw"

    @property
    def catalog_path(self) -> Path:
        return self.path / CATALOG

    @property
    def index_dir(self) -> Path:
        return self.path / "index"

    @property
    def site_dir(self) -> Path:
        return self.path / "site"

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def quarantine_dir(self) -> Path:
        return self.path / "quarantine"

    @property
    def models_dir(self) -> Path:
        return self.path / "models"

    @property
    def lock_path(self) -> Path:
        return self.path / "lock"

    @property
    def lock_info_path(self) -> Path:
        return self.path / "lock.json"

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_NAME

    @classmethod
    def init(cls, path: Path | str) -> KB:
        """Create a KB (idempotent: an existing KB is left as it is)."""
        kb = cls(Path(path).absolute())
        try:
            for d in (kb.path, kb.raw_dir / "cur", kb.raw_dir / "new", kb.raw_dir / "tmp",
                      kb.quarantine_dir, kb.logs_dir):
                d.mkdir(parents=True, exist_ok=True)
            if not kb.config_path.exists():
                kb.config_path.write_text(DEFAULT_TOML, encoding="utf-8")
        except OSError as e:
            raise KBError(f"cannot create the knowledge base at {kb.path}: {e.strerror}") from None
        conn = kb.connect()
        conn.close()
        return kb

    @classmethod
    def open(cls, path: Path | str) -> KB:
        kb = cls(Path(path).absolute())
        if not kb.catalog_path.is_file():
            raise KBNotFound(f"no knowledge base at {kb.path}",
                             hint="run `grex init` or pass --kb PATH")
        return kb

    def connect(self, *, readonly: bool = False) -> sqlite3.Connection:
        """A catalog connection: WAL, foreign keys, a busy timeout; schema ensured."""
        try:
            if readonly:
                conn = sqlite3.connect(f"file:{self.catalog_path}?mode=ro", uri=True,
                                       timeout=30, isolation_level=None,
                                       check_same_thread=False)
            else:
                conn = sqlite3.connect(self.catalog_path, timeout=30, isolation_level=None,
                                       check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 30000")
            if not readonly:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                ensure_schema(conn, "core", CORE_MIGRATIONS)
        except sqlite3.DatabaseError as e:
            raise KBError(f"the catalog {self.catalog_path} can't be opened: {e}",
                          hint="`grex doctor` checks it") from None
        return conn

    # -------------------------------------------------------------- the writer lock

    @contextlib.contextmanager
    def writer_lock(self, *, wait: bool = False, timeout: float | None = None,
                    command: str = "") -> Iterator[None]:
        """Hold the one-writer lock. Raises KBLocked at once (or after ``timeout`` with wait)."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        _HELD_LOCK_FDS.add(fd)
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                    if not wait or (deadline is not None and time.monotonic() > deadline):
                        holder = self.lock_holder()
                        who = (f" by pid {holder.get('pid')} ({holder.get('command', '?')}, "
                               f"since {holder.get('since', '?')})") if holder else ""
                        raise KBLocked(f"the knowledge base is locked{who}",
                                       hint="another sync is running; retry later or use --wait"
                                       ) from None
                    time.sleep(0.1)
            info = {"pid": os.getpid(), "host": socket.gethostname(),
                    "command": command or " ".join(sys.argv[:3]),
                    "since": datetime.now(UTC).isoformat(timespec="seconds")}
            tmp = self.lock_info_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(info), encoding="utf-8")
            os.replace(tmp, self.lock_info_path)
            try:
                yield
            finally:
                with contextlib.suppress(OSError):
                    self.lock_info_path.unlink()
        finally:
            _HELD_LOCK_FDS.discard(fd)
            os.close(fd)  # closing releases the flock

    def lock_holder(self) -> dict[str, Any] | None:
        """Who holds (or last held and died holding) the lock, if recorded."""
        try:
            return json.loads(self.lock_info_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def is_locked(self) -> bool:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        except OSError:
            return True
        finally:
            os.close(fd)


