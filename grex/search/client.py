"""The client side of a KB's resident search server (grex.search.server).

`grex search` asks the server listening on ``KB/run/search.sock`` first: it sends its
arguments, environment and terminal facts, and prints the bytes the server formatted
(the same code formats them in-process: grex.cli.search.run_fast) with its exit code.
When no server answers (none running, a stale socket, a crash, a mismatch) the search runs
in-process as before and, unless disabled, starts the server in the background for next
time. The server only ever saves time: it never changes what a search prints.

This module is imported by every `grex` process before anything else, so it imports the
standard library's light modules only (no Whoosh, Rich, Typer or grex.cli).

Environment: ``GREX_SEARCH_SERVER=0`` neither uses nor starts a server; ``=1`` uses and
starts one even under CI / pytest (where the default is off); unset: on, except when
``CI`` or ``PYTEST_CURRENT_TEST`` is set. ``GREX_SEARCH_SERVER_IDLE``: seconds a server
waits for a search before it exits (default 600).
"""

from __future__ import annotations

import _socket  # the socket module's C core: `socket` itself costs ~2.5 ms to import
import marshal
import os
import sys

RUN_DIR = "run"
SOCKET_NAME = "search.sock"
LOCK_NAME = "search.lock"
LOG_NAME = "search.log"
PROTOCOL = 2  # 2: marshal (1 was JSON)
ENV = "GREX_SEARCH_SERVER"
IDLE_ENV = "GREX_SEARCH_SERVER_IDLE"
CONNECT_TIMEOUT = 2.0  # seconds to connect and send
ANSWER_TIMEOUT = 60.0  # seconds to wait for the answer before searching in-process
MAX_MESSAGE = 64 << 20

_spawn = [True]  # False once a server said it cannot answer this process (mismatch)


def mode() -> bool | None:
    """True: on (explicitly), False: off, None: the default (on unless CI / pytest)."""
    value = os.environ.get(ENV, "").strip().lower()
    if value in ("0", "off", "false", "no"):
        return False
    if value in ("1", "on", "true", "yes"):
        return True
    return None


def enabled() -> bool:
    m = mode()
    if m is None:
        return not (os.environ.get("CI") or os.environ.get("PYTEST_CURRENT_TEST"))
    return m


def grex_dir() -> str:
    """The grex package this process runs (client and server must run the same one)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def kb_of(argv: list[str]) -> str | None:
    """The absolute KB path of a `grex [--kb P] [-q] search ...` command line, else None
    (another command, --debug: those never go to the server)."""
    kb_flag: str | None = None
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        opt = argv[i]
        if opt == "--kb" and i + 1 < len(argv):
            kb_flag = argv[i + 1]
            i += 2
            continue
        if opt.startswith("--kb="):
            kb_flag = opt[len("--kb="):]
        elif opt not in ("--quiet", "-q"):
            return None
        i += 1
    if i >= len(argv) or argv[i] != "search":
        return None
    if not kb_flag:  # grex.config.resolve_kb_path, without importing grex.config
        from grex.paths import kb_path

        kb_flag = kb_path(None)[0]
    path = os.path.expanduser(kb_flag)
    return path if os.path.isabs(path) else os.path.join(os.getcwd(), path)


def socket_path(kb: str) -> str:
    return os.path.join(kb, RUN_DIR, SOCKET_NAME)


def _terminal_size() -> list[int] | None:
    for fd in (0, 1, 2):  # as Rich looks for it
        try:
            size = os.get_terminal_size(fd)
        except (AttributeError, ValueError, OSError):
            continue
        return [size.columns, size.lines]
    return None


def _isatty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError, OSError):
        return False


def _encoding(stream: object) -> str:
    return (getattr(stream, "encoding", "utf-8") or "utf-8").lower()


def send_message(sock: object, obj: object) -> None:
    # marshal, not json: it is built in (json's import is ~2 ms of a served search), and
    # both ends run the same Python (the server refuses any other, see grex.search.server)
    data = marshal.dumps(obj)  # type: ignore[arg-type]
    sock.sendall(len(data).to_bytes(4, "big") + data)  # type: ignore[attr-defined]


def recv_message(sock: object) -> object:
    """The next message; ValueError when it is not one (too large, not marshal data)."""
    head = _recv_exactly(sock, 4)
    size = int.from_bytes(head, "big")
    if size > MAX_MESSAGE:
        raise ValueError("message too large")
    try:
        return marshal.loads(_recv_exactly(sock, size))
    except (EOFError, TypeError) as exc:
        raise ValueError(f"not a message: {exc}") from None


def _recv_exactly(sock: object, n: int) -> bytes:
    chunks: list[bytes] = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))  # type: ignore[attr-defined]
        if not chunk:
            raise EOFError("the search server closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def peer_uid(sock: object) -> int:
    creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED,  # type: ignore[attr-defined]
                            12)
    return int.from_bytes(creds[4:8], sys.byteorder)  # struct ucred {pid, uid, gid}


def connect(path: str, timeout: float = CONNECT_TIMEOUT) -> object:
    """A connected Unix socket (a path longer than sun_path allows goes through
    /proc/self/fd). Raises OSError."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        if len(path.encode()) < 100:
            sock.connect(path)
        else:
            fd = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY)
            try:
                sock.connect(f"/proc/self/fd/{fd}/{os.path.basename(path)}")
            finally:
                os.close(fd)
    except BaseException:
        sock.close()
        raise
    return sock


def ask(argv: list[str]) -> int | None:
    """Run `grex ARGV` through the KB's search server: print its answer and return the
    exit code, or None (no server, or it can't answer: search in-process)."""
    if not enabled():
        return None
    kb = kb_of(argv)
    if kb is None:
        return None
    path = socket_path(kb)
    if not os.path.exists(path):
        return None
    try:
        sock = connect(path)
    except OSError:
        return None  # stale socket (killed server): the in-process path starts a new one
    try:
        if peer_uid(sock) != os.getuid():
            _spawn[0] = False
            return None
        send_message(sock, {
            "v": PROTOCOL, "argv": argv, "kb": kb, "grex": grex_dir(),
            "python": sys.executable, "prefix": sys.prefix, "env": dict(os.environ),
            "tty": [_isatty(sys.stdout), _isatty(sys.stderr)], "size": _terminal_size(),
            "encoding": [_encoding(sys.stdout), _encoding(sys.stderr)],
        })
        sock.settimeout(ANSWER_TIMEOUT)  # type: ignore[attr-defined]
        answer = recv_message(sock)
    except (OSError, EOFError, ValueError):
        return None
    finally:
        sock.close()  # type: ignore[attr-defined]
    if not isinstance(answer, dict) or "code" not in answer:
        if isinstance(answer, dict) and not answer.get("spawn", False):
            _spawn[0] = False
        return None
    try:
        if answer.get("out"):
            sys.stdout.write(answer["out"])
            sys.stdout.flush()
        if answer.get("err"):
            sys.stderr.write(answer["err"])
            sys.stderr.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return int(answer["code"])


def start_server(kb_path: object) -> None:
    """Start the KB's search server in the background (detached; it exits at once when
    one is running already). Nothing happens when disabled."""
    if not _spawn[0] or not enabled():
        return
    kb = os.fspath(kb_path)  # type: ignore[call-overload]
    if not os.path.isdir(kb):
        return
    import contextlib
    import subprocess

    env = dict(os.environ)
    parent = os.path.dirname(grex_dir())
    env["PYTHONPATH"] = parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                  else "")
    env.pop("PYTEST_CURRENT_TEST", None)
    with contextlib.suppress(OSError):
        subprocess.Popen([sys.executable, "-m", "grex.cli.serve", kb], env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True,
                         cwd="/")


__all__ = ["ask", "enabled", "kb_of", "socket_path", "start_server"]
