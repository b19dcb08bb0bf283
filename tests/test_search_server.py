"""The resident search server (grex.search.server) with real processes: a `grex search`
answered by it prints exactly what the in-process search prints, sees index changes,
survives a killed server, and the server goes away when idle."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.fixtures_search import REPO, write_mail

pytestmark = pytest.mark.slow

SOCK = Path("run") / "search.sock"


def grex(*args: str, server: str = "1", extra: dict[str, str] | None = None,
         importtime: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "GREX_SEARCH_SERVER": server,
           "GREX_SEARCH_SERVER_IDLE": "60", **(extra or {})}  # a server a client starts
    env.pop("GREX_KB", None)
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "grex", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env,
                          cwd=REPO)


def start_server(kb: Path, idle: float = 300) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "GREX_SEARCH_SERVER_IDLE": str(idle)}
    proc = subprocess.Popen([sys.executable, "-m", "grex.cli.serve", str(kb)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: server_pid(kb) == proc.pid or proc.poll() is not None, 60)
    assert server_pid(kb) == proc.pid, (kb / "run" / "search.log").read_text()
    return proc


def server_pid(kb: Path) -> int | None:
    """The pid of the process listening on the KB's socket (None: nobody)."""
    import socket
    import struct

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(kb / SOCK))
        creds = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return int(struct.unpack("3i", creds)[0])
    except OSError:
        return None
    finally:
        s.close()


def wait_for(cond: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def served(kb: Path, *args: str) -> bool:
    """True when `grex search` was answered by the server: the process imported neither
    Whoosh nor grex's CLI."""
    done = grex("--kb", str(kb), "search", *args, importtime=True)
    assert done.returncode == 0, done.stderr
    return "grex.search.client" in done.stderr and "whoosh" not in done.stderr and \
        "grex.cli" not in done.stderr


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


@pytest.fixture(scope="module")
def kb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("server")
    maildir = root / "mail"
    first, _ = write_mail(maildir, subject="Budget review for Q3",
                          body="The budget draft is attached; the café numbers look low.")
    write_mail(maildir, subject="Re: Budget review for Q3", in_reply_to=first,
               sender="Ana Souza <ana@example.org>",
               body="Thanks. The budget needs a second pass before Friday.")
    write_mail(maildir, subject="Hiking trip", body="Who is coming to the mountains? Budget "
               "is fifty euros each.", sender="Bo Chen <bo@example.net>",
               date="Tue, 05 Mar 2024 10:00:00 +0000")
    write_mail(maildir, subject="Server outage", body="The database server went down at "
               "noon; running the restore now.", date="Wed, 06 Mar 2024 11:00:00 +0000")
    kb = root / "kb"
    done = grex("--kb", str(kb), "import", str(maildir), server="0")
    assert done.returncode == 0, done.stderr
    return kb


@pytest.fixture
def server(kb: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_server(kb)
    yield proc
    stop(proc)


QUERIES = [
    ("--json", "budget"),
    ("budget",),
    ("--json", "--messages", "--facet", "from", "budget OR server"),
    ("--json", "date:2024-03-05..", "-hiking"),
    ("bugdet",),  # did you mean
    ("budget AND (",),  # malformed: error with a caret, exit 2
    ("--facet", "colour", "budget"),  # unknown facet: exit 2
]


def test_served_output_is_the_in_process_output(kb: Path, server: object) -> None:
    assert served(kb, "budget")
    for args in QUERIES:
        args_kb = ["--kb", str(kb), "search", *args]
        local = grex(*args_kb, server="0")
        remote = grex(*args_kb)
        assert (remote.returncode, remote.stdout, remote.stderr) == \
            (local.returncode, local.stdout, local.stderr), args
    bad = grex("--kb", str(kb), "search", "budget AND (")
    assert bad.returncode == 2 and "^" in bad.stderr and "Error:" in bad.stderr
    assert grex("--kb", str(kb), "search", "--json", "budget").stdout.count('"thread_id"') == 2


def test_concurrent_clients(kb: Path, server: object) -> None:
    want = grex("--kb", str(kb), "search", "--json", "budget", server="0").stdout
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda _: grex("--kb", str(kb), "search", "--json", "budget"),
                             range(8)))
    assert all(o.returncode == 0 and o.stdout == want for o in outs)


def test_index_changes_and_reindex_are_seen(kb: Path, server: object,
                                            tmp_path: Path) -> None:
    assert '"total": 0' in grex("--kb", str(kb), "search", "--json", "zeppelin").stdout
    write_mail(tmp_path / "more", subject="Zeppelin tickets", body="Two zeppelin tickets.")
    done = grex("--kb", str(kb), "import", str(tmp_path / "more"), server="0")
    assert done.returncode == 0, done.stderr
    hit = grex("--kb", str(kb), "search", "--json", "zeppelin")
    assert '"total": 1' in hit.stdout
    before = os.path.realpath(kb / "index")
    done = grex("--kb", str(kb), "reindex", server="0")
    assert done.returncode == 0, done.stderr
    assert os.path.realpath(kb / "index") != before  # a new generation was swapped in
    assert served(kb, "zeppelin")
    assert grex("--kb", str(kb), "search", "--json", "zeppelin").stdout == \
        grex("--kb", str(kb), "search", "--json", "zeppelin", server="0").stdout


def test_killed_server_leaves_a_stale_socket_then_the_client_restarts_it(kb: Path) -> None:
    proc = start_server(kb)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert (kb / SOCK).exists()  # stale: nobody listens
    old = os.stat(kb / SOCK).st_ino
    want = grex("--kb", str(kb), "search", "--json", "budget", server="0")
    got = grex("--kb", str(kb), "search", "--json", "budget")  # falls back, starts one
    assert (got.returncode, got.stdout, got.stderr) == (0, want.stdout, want.stderr)
    assert wait_for(lambda: (kb / SOCK).exists() and os.stat(kb / SOCK).st_ino != old, 60)
    assert served(kb, "budget")
    stop_by_socket(kb)


def stop_by_socket(kb: Path) -> None:
    """Stop a server this test started through a client (its pid: the socket's peer)."""
    pid = server_pid(kb)
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    assert wait_for(lambda: not (kb / SOCK).exists(), 30)


def test_idle_server_exits_and_removes_its_socket(kb: Path) -> None:
    proc = start_server(kb, idle=1)
    assert proc.wait(30) == 0
    assert not (kb / SOCK).exists()
    assert (kb / "run").stat().st_mode & 0o777 == 0o700


def test_disabled_and_default_under_tests_start_no_server(kb: Path) -> None:
    assert not (kb / SOCK).exists()
    done = grex("--kb", str(kb), "search", "budget", server="0")
    assert done.returncode == 0
    env_default = grex("--kb", str(kb), "search", "budget", server="",
                       extra={"PYTEST_CURRENT_TEST": "x"})
    assert env_default.returncode == 0
    time.sleep(1.0)
    assert not (kb / SOCK).exists()


def test_second_server_for_the_same_kb_exits(kb: Path, server: object) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    second = subprocess.run([sys.executable, "-m", "grex.cli.serve", str(kb)], env=env,
                            timeout=60, capture_output=True)
    assert second.returncode == 0
    assert served(kb, "budget")


def test_garbage_on_the_socket_does_not_stop_the_server(kb: Path, server: object) -> None:
    import socket

    for junk in (b"\x00\x00\x00\x05hello", b"\xff\xff\xff\xff", b"{\"v\": 1}", b""):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(kb / SOCK))
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(30)
            # no answer: the connection is just closed (reset when bytes were unread)
            with contextlib.suppress(ConnectionResetError):
                assert s.recv(1 << 16) == b"", junk
    assert served(kb, "budget")


def test_the_same_interpreter_by_another_name_is_served(kb: Path, server: object,
                                                         tmp_path: Path) -> None:
    """The console script names the interpreter python3.11, `python3 -m grex` python3: one
    file, one environment, so the server answers both."""
    alias = tmp_path / "python-alias"
    alias.symlink_to(sys.executable)
    env = {**os.environ, "PYTHONPATH": str(REPO), "GREX_SEARCH_SERVER": "1"}
    env.pop("GREX_KB", None)
    done = subprocess.run([str(alias), "-X", "importtime", "-m", "grex", "--kb", str(kb),
                           "search", "--json", "budget"], capture_output=True, text=True,
                          timeout=120, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "whoosh" not in done.stderr and "grex.cli" not in done.stderr
    assert done.stdout == grex("--kb", str(kb), "search", "--json", "budget", server="0").stdout


def test_server_exits_when_grex_code_changes(kb: Path, tmp_path: Path) -> None:
    """An upgrade while a server runs: the server notices between requests and exits, so
    the next search starts one with the new code (its clients may speak a new protocol)."""
    import shutil

    copy = tmp_path / "src"
    shutil.copytree(REPO / "grex", copy / "grex",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(copy), "GREX_SEARCH_SERVER_IDLE": "300"}
    proc = subprocess.Popen([sys.executable, "-m", "grex.cli.serve", str(kb)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=tmp_path)  # -m puts the cwd first: not the repo's grex
    try:
        assert wait_for(lambda: server_pid(kb) == proc.pid, 60)
        time.sleep(1.5)
        assert proc.poll() is None  # nothing changed: it keeps serving
        module = copy / "grex" / "search" / "searcher.py"
        module.write_text(module.read_text() + "\n# upgraded\n")
        assert proc.wait(30) == 0
    finally:
        stop(proc)
    assert "exiting: grex's code changed" in (kb / "run" / "search.log").read_text()
    assert not (kb / SOCK).exists()


@pytest.fixture
def launcher(tmp_path: Path) -> Path:
    """grex's fast launcher, written over a copy of pip's console script for grex."""
    from grex.launch import install_launcher

    script = tmp_path / "bin" / "grex"
    script.parent.mkdir()
    script.write_text("#!/usr/bin/python3\nimport re\nimport sys\nfrom grex.launch import main\n"
                      "if __name__ == '__main__':\n    sys.exit(main())\n")
    assert install_launcher(str(script)) == str(script)
    assert os.access(script, os.X_OK)
    return script


def run_launcher(launcher: Path, *args: str, server: str = "1", cwd: Path = REPO,
                 ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GREX_SEARCH_SERVER": server, "PYTHONPROFILEIMPORTTIME": "1"}
    env.pop("PYTHONPATH", None)  # the launcher itself says where grex is
    env.pop("GREX_KB", None)
    return subprocess.run([str(launcher), *args], capture_output=True, text=True,
                          timeout=120, env=env, cwd=cwd)


def imported(stderr: str) -> set[str]:
    return {line.split("|")[-1].strip() for line in stderr.splitlines()
            if line.startswith("import time:")}


def test_fast_launcher_serves_a_search_without_site(kb: Path, server: object,
                                                    launcher: Path) -> None:
    want = grex("--kb", str(kb), "search", "--json", "budget", server="0")
    done = run_launcher(launcher, "--kb", str(kb), "search", "--json", "budget")
    assert (done.returncode, done.stdout) == (0, want.stdout)
    mods = imported(done.stderr)
    assert "grex.search.client" in mods
    assert not mods & {"site", "whoosh", "grex.cli", "typing"}, mods & {"site", "whoosh"}


def test_fast_launcher_hands_everything_else_to_a_normal_python(kb: Path, launcher: Path,
                                                                tmp_path: Path) -> None:
    # a ./grex directory in the working directory must not shadow the installed grex
    (tmp_path / "grex").mkdir()
    (tmp_path / "grex" / "__init__.py").write_text("raise SystemExit('shadowed')\n")
    for args in (["--kb", str(kb), "search", "--json", "budget"],  # no server answers
                 ["--kb", str(kb), "status", "--json"],
                 ["--kb", str(kb), "search", "budget AND ("]):  # an error, exit 2
        want = grex(*args, server="0")
        done = run_launcher(launcher, *args, server="0", cwd=tmp_path)
        assert (done.returncode, done.stdout) == (want.returncode, want.stdout), args
        assert "site" in imported(done.stderr)  # ran in a normal Python
        assert want.stderr in done.stderr.replace("\r", "")


def test_install_launcher_leaves_other_files_alone(tmp_path: Path) -> None:
    from grex.launch import install_launcher

    other = tmp_path / "grex"
    other.write_text("#!/bin/sh\necho another grex\n")
    with pytest.raises(OSError, match="not pip's script"):
        install_launcher(str(other))
    assert other.read_text() == "#!/bin/sh\necho another grex\n"
    with pytest.raises(OSError, match="shebang"):
        install_launcher(str(tmp_path / "new"), python="/opt/my python/bin/python3")
    assert not (tmp_path / "new").exists()
