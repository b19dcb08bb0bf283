"""A KB's resident search server, started as `python -m grex.cli.serve KB`.

Why: a `grex search` process spends most of its time starting Python, importing grex's
CLI and Whoosh and opening the index cold; the search itself takes milliseconds. Like
`mu server`, one process per KB keeps the index open and answers `grex search` clients
(grex.search.client) over a Unix socket, ``KB/run/search.sock``.

* Same output: the answer is formatted by the code the in-process path runs (the
  ``frontend`` the CLI hands in: grex.cli.search's parse_fast_argv and run_fast, so this
  library module never imports the CLI), on Rich consoles built from the client's environment and
  terminal facts; the client prints those bytes and exits with the code returned.
* Security: ``KB/run`` is mode 0700, the socket 0600, and a peer of another uid
  (SO_PEERCRED) is refused.
* One server per KB: an fcntl lock (``KB/run/search.lock``) held for the server's life; a
  second one exits at once. The socket is bound under a temporary name and renamed into
  place, so a client sees the old socket, the new one or none, never a half-made one.
* Fresh results: every search re-resolves ``KB/index`` (a `grex reindex` swaps in a new
  generation) and refreshes the searcher when a commit made it stale (grex.search._open);
  the catalog is opened per search (read-only; no transaction stays open, so writers are
  never blocked). Reading takes no lock.
* Exits when idle for GREX_SEARCH_SERVER_IDLE seconds (default 600), when the KB or its
  socket goes away (or another server replaced it), and when grex's code changed on disk
  (after answering "search in-process" to that client, which then starts a new server).
* Concurrent clients: one thread per connection; searches run one at a time (a Whoosh
  searcher is not shared between threads).
* Never a failure: anything unexpected is answered with "search in-process" (or the
  connection just closes); the client then runs the search itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import signal
import socket
import stat
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from grex.search.client import (
    IDLE_ENV,
    LOCK_NAME,
    LOG_NAME,
    PROTOCOL,
    RUN_DIR,
    SOCKET_NAME,
    grex_dir,
    peer_uid,
    recv_message,
    send_message,
)

DEFAULT_IDLE = 600.0
TICK = 1.0  # seconds between housekeeping checks
LOG_LIMIT = 1 << 20


def same_python(req: dict[str, Any]) -> bool:
    """Whether a client runs the server's Python: the same interpreter file (the console
    script names it python3.11, `python3 -m grex` python3: one file) in the same
    environment (a venv's python is a link to its base interpreter, with its own prefix)."""
    exe = req.get("python")
    if not isinstance(exe, str) or req.get("prefix", sys.prefix) != sys.prefix:
        return False
    return exe == sys.executable or os.path.realpath(exe) == os.path.realpath(sys.executable)


class _ClientStream(io.StringIO):
    """Where a Rich console writes the client's stdout / stderr: it answers isatty() and
    .encoding as the client's stream does, so Rich styles (or not) as in-process."""

    def __init__(self, tty: bool, encoding: str) -> None:
        super().__init__()
        self._tty = tty
        self._encoding = encoding

    def isatty(self) -> bool:
        return self._tty

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._encoding


class Server:
    def __init__(self, kb: Path, idle: float, frontend: Any) -> None:
        self.frontend = frontend
        self.kb = kb
        self.run_dir = kb / RUN_DIR
        self.sock_path = self.run_dir / SOCKET_NAME
        self.idle = idle
        self.search_lock = threading.Lock()
        self.state_lock = threading.Lock()
        self.active = 0
        self.last = time.monotonic()
        self.stop = threading.Event()
        self.stop_reason = ""
        self.sock: socket.socket | None = None
        self.inode = 0
        self.code: dict[str, tuple[int, int]] = {}
        self.log_file: Any = None
        self.lock_fd = -1

    # ------------------------------------------------------------------------- lifecycle

    def log(self, text: str) -> None:
        if self.log_file is not None:
            with contextlib.suppress(OSError, ValueError):
                self.log_file.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} [{os.getpid()}] "
                                    f"{text}\n")
                self.log_file.flush()

    def prepare(self) -> bool:
        """The run directory (ours, 0700) and the server lock; False: not for us to run
        (another server holds the lock, or the directory is not safe)."""
        if not (self.kb / "catalog.sqlite").is_file():
            return False
        self.run_dir.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(self.run_dir)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            return False
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(self.run_dir, 0o700)
        fd = os.open(self.run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + 3.0  # a server exiting for new code lets go soon
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    return False
                time.sleep(0.1)
        self.lock_fd = fd
        log_path = self.run_dir / LOG_NAME
        with contextlib.suppress(OSError):
            if log_path.exists() and log_path.stat().st_size > LOG_LIMIT:
                log_path.unlink()
        self.log_file = os.fdopen(os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                                          0o600), "a", encoding="utf-8")
        return True

    def warm(self) -> None:
        """Import what a search needs and open the index, before clients can connect."""
        from grex.search import opening as gs
        from grex.search import searcher as _searcher  # noqa: F401  (the first search is warm)

        gs.LONG_LIVED[0] = True
        with contextlib.suppress(Exception):  # no index yet: the first search says so
            gs.warm(self.kb)
        self.code = self._code_files()

    def _code_files(self) -> dict[str, tuple[int, int]]:
        """Every Python file of the grex this server runs, imported yet or not: an upgrade
        that touches a module only a later request would import still retires us."""
        out: dict[str, tuple[int, int]] = {}
        root = Path(grex_dir())
        for path in sorted(root.rglob("*.py")):
            with contextlib.suppress(OSError):
                st = path.stat()
                out[str(path)] = (st.st_mtime_ns, st.st_size)
        return out

    def code_changed(self) -> bool:
        for path, sig in self.code.items():
            try:
                st = os.stat(path)
            except OSError:
                return True
            if (st.st_mtime_ns, st.st_size) != sig:
                return True
        return False

    def bind(self) -> None:
        tmp = self.run_dir / f".search-{os.getpid()}.sock"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.getcwd()
        os.chdir(self.run_dir)  # relative names: a deep KB path may not fit in sun_path
        try:
            sock.bind(tmp.name)
            os.chmod(tmp.name, 0o600)
            sock.listen(64)
            os.replace(tmp.name, SOCKET_NAME)
        finally:
            os.chdir(old)
        self.inode = os.stat(self.sock_path).st_ino
        sock.settimeout(TICK)
        self.sock = sock

    def still_ours(self) -> str:
        """Why to stop ("" to go on): the KB or our socket went away, or grex's code changed
        (an upgrade: its clients may not even speak our protocol any more)."""
        try:
            if os.stat(self.sock_path).st_ino != self.inode:
                return "another server replaced the socket"
        except OSError:
            return "the socket is gone"
        if not (self.kb / "catalog.sqlite").is_file():
            return "the KB is gone"
        if self.code_changed():
            return "grex's code changed"
        return ""

    def serve_forever(self) -> str:
        assert self.sock is not None
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                with self.state_lock:
                    idle = self.active == 0 and time.monotonic() - self.last > self.idle
                if idle:
                    return f"idle for {self.idle:g} s"
                reason = self.still_ours()
                if reason:
                    return reason
                continue
            except OSError as exc:
                return f"accept failed: {exc}"
            with self.state_lock:
                self.active += 1
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()
        return self.stop_reason or "stopped"

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                if os.stat(self.sock_path).st_ino == self.inode:
                    self.sock_path.unlink()
            self.sock.close()

    # -------------------------------------------------------------------------- requests

    def handle(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(30)
            if peer_uid(conn) != os.getuid():
                self.log("refused a client of another uid")
                return
            request = recv_message(conn)
            send_message(conn, self.answer(request))
        except Exception as exc:  # noqa: BLE001 - the client falls back in-process
            self.log(f"request failed: {type(exc).__name__}: {exc}")
        finally:
            conn.close()
            with self.state_lock:
                self.active -= 1
                self.last = time.monotonic()

    def answer(self, req: Any) -> dict[str, Any]:
        if not isinstance(req, dict) or req.get("v") != PROTOCOL:
            return {"fallback": "protocol", "spawn": False}
        if req.get("grex") != grex_dir() or not same_python(req):
            return {"fallback": "another grex or Python", "spawn": False}
        if os.path.abspath(str(req.get("kb", ""))) != os.path.abspath(self.kb):
            return {"fallback": "another KB", "spawn": False}
        if self.code_changed():
            self.stop_reason = "grex's code changed"
            self.stop.set()
            return {"fallback": "code changed", "spawn": True}
        parsed = self.frontend.parse_fast_argv(list(req.get("argv") or []))
        if parsed is None:
            return {"fallback": "not a plain search", "spawn": False}
        _kb_flag, quiet, opts = parsed
        env = {str(k): str(v) for k, v in (req.get("env") or {}).items()}
        out, err = self._consoles(req, env)
        try:
            with self.search_lock:
                code, _kb = self.frontend.run_fast(str(req["kb"]), quiet, opts, out=out,
                                                   err=err, env=env)
        except Exception:  # noqa: BLE001 - let the client meet it in-process
            self.log("search raised:\n" + traceback.format_exc())
            return {"fallback": "unexpected error", "spawn": False}
        return {"code": code, "out": out.file.getvalue(), "err": err.file.getvalue()}

    def _consoles(self, req: dict[str, Any], env: dict[str, str]) -> tuple[Any, Any]:
        from rich.console import Console

        tty = list(req.get("tty") or [False, False])
        enc = list(req.get("encoding") or ["utf-8", "utf-8"])
        size = req.get("size")
        width = height = None
        if size:
            width, height = int(size[0]) or None, int(size[1]) or None
        cols, lines = env.get("COLUMNS", ""), env.get("LINES", "")
        if cols.isdigit():
            width = int(cols)
        if lines.isdigit():
            height = int(lines)
        kw: dict[str, Any] = {"highlight": False, "soft_wrap": True, "_environ": env}
        if width and height:
            kw.update(width=width, height=height)
        out = Console(file=_ClientStream(bool(tty[0]), str(enc[0])), **kw)
        err = Console(file=_ClientStream(bool(tty[1]), str(enc[1])), stderr=True, **kw)
        return out, err


def serve(kb: Path, frontend: Any, idle: float | None = None) -> int:
    """Serve searches of ``kb`` until idle; ``frontend`` parses a client's argv and runs
    the search as the CLI does (``parse_fast_argv``, ``run_fast``)."""
    if idle is None:
        try:
            idle = float(os.environ.get(IDLE_ENV, "") or DEFAULT_IDLE)
        except ValueError:
            idle = DEFAULT_IDLE
    server = Server(kb.absolute(), idle, frontend)
    if not server.prepare():
        return 0

    def terminate(signum: int, _frame: Any) -> None:  # exit cleanly: remove the socket
        server.stop_reason = f"signal {signum}"
        server.stop.set()

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    try:
        server.warm()
        server.bind()
        server.log(f"serving {kb} (idle exit after {idle:g} s)")
        reason = server.serve_forever()
        server.log(f"exiting: {reason}")
    except Exception:  # noqa: BLE001
        server.log("crashed:\n" + traceback.format_exc())
        return 1
    finally:
        server.close()
    return 0
