"""A real Dovecot for the whole test session, started by scripts/imap-test-server.

One server per session (starting one takes ~0.2 s, stopping ~1 s); tests are isolated by
fresh users (`imap_user`), each with its own empty Maildir, not by new servers.

    def test_x(imap_user):
        imap_user.deliver("INBOX", subject="hi", keywords=["grex-share"])
        ...

`imap_server.restart()` restarts the server on the same ports with the same mail.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import itertools
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, make_msgid
from pathlib import Path

import imapclient
import pytest

REPO = Path(__file__).resolve().parents[1]
SERVER_SCRIPT = REPO / "scripts" / "imap-test-server"
LOAD_SCRIPT = REPO / "scripts" / "load-mail"
POOL = 200  # IMAP users created at start; each test takes fresh ones


def _load_script(path: Path, name: str):
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


load_mail = _load_script(LOAD_SCRIPT, "grex_load_mail")


def _parse_env(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


@dataclass
class ImapServer:
    dir: Path
    host: str
    port: int  # IMAPS
    starttls_port: int
    cafile: str
    _users: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def run(self, *args: str) -> str:
        r = subprocess.run([sys.executable, str(SERVER_SCRIPT), *args, str(self.dir)],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"imap-test-server {args}: {r.stderr}")
        return r.stdout

    def restart(self) -> None:
        self.run("restart")

    def new_user(self, prefix: str = "u") -> ImapUser:
        """A user nobody used yet (from the pool created at start: Dovecot checks its
        passwd-file at most once a second, so users added at run time can be refused for
        a moment)."""
        n = next(self._users)
        if n > POOL:
            raise RuntimeError(f"more than {POOL} IMAP users in one session: raise POOL")
        return ImapUser(self, f"u{n}", f"u{n}-secret")

    def log(self) -> str:
        return (self.dir / "log" / "dovecot.log").read_text(errors="replace")


@dataclass
class ImapUser:
    server: ImapServer
    name: str
    password: str

    def client(self) -> imapclient.IMAPClient:
        ctx = ssl.create_default_context(cafile=self.server.cafile)
        c = imapclient.IMAPClient(self.server.host, port=self.server.port, ssl=True,
                                  ssl_context=ctx, timeout=30)
        c.login(self.name, self.password)
        return c

    def account(self, name: str = "test", **fields: object) -> dict[str, object]:
        """An [[accounts]] table for this user (as a dict for grex.toml / Config)."""
        acct: dict[str, object] = {
            "name": name, "host": self.server.host, "port": self.server.port,
            "tls": "imaps", "ca_file": self.server.cafile, "username": self.name,
            "password_command": f"echo {self.password}", "folders": ["INBOX"],
            "share_keyword": "grex-share", "search": "", "whole_thread": True,
            "on_unshare": "remove",
        }
        acct.update(fields)
        return acct

    def load(self, source: Path, folder: str, keywords: tuple[str, ...] = (),
             limit: int | None = None) -> int:
        with self.client() as c:
            return load_mail.append_all(c, folder, load_mail.prepare(source, limit), keywords)

    def deliver(self, folder: str = "INBOX", *, subject: str = "test", body: str = "hello\n",
                message_id: str | None = None, in_reply_to: str | None = None,
                references: tuple[str, ...] = (), keywords: tuple[str, ...] = (),
                sender: str = "Ann Example <ann@example.org>",
                date: datetime | None = None) -> str:
        """Append one message; returns its Message-ID (without brackets)."""
        mid = message_id or make_msgid(domain="test.grex").strip("<>")
        when = date or datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=_next_minute())
        lines = [f"From: {sender}", "To: team@example.org", f"Subject: {subject}",
                 f"Date: {format_datetime(when)}", f"Message-ID: <{mid}>"]
        if in_reply_to:
            lines.append(f"In-Reply-To: <{in_reply_to}>")
        if references:
            lines.append("References: " + " ".join(f"<{r}>" for r in references))
        raw = ("\r\n".join(lines) + "\r\n\r\n" + body.replace("\n", "\r\n")).encode()
        with self.client() as c:
            if not c.folder_exists(folder):
                c.create_folder(folder)
            c.append(folder, raw, flags=list(keywords), msg_time=when)
        return mid

    def uids(self, folder: str, criteria: object = "ALL") -> list[int]:
        with self.client() as c:
            c.select_folder(folder)
            return sorted(c.search(criteria))

    def set_keywords(self, folder: str, uids: list[int], keywords: list[str],
                     add: bool = True) -> None:
        with self.client() as c:
            c.select_folder(folder)
            if add:
                c.add_flags(uids, keywords)
            else:
                c.remove_flags(uids, keywords)

    def delete(self, folder: str, uids: list[int]) -> None:
        with self.client() as c:
            c.select_folder(folder)
            c.delete_messages(uids)
            c.expunge()


_minutes = itertools.count()


def _next_minute() -> int:
    return next(_minutes)


@pytest.fixture(scope="session")
def imap_server() -> Iterator[ImapServer]:
    if not shutil.which("dovecot"):
        pytest.skip("dovecot is not installed (apt-get install dovecot-core dovecot-imapd)")
    # Socket paths are limited to 107 bytes: keep the directory short (not pytest's tmp_path).
    d = Path(tempfile.mkdtemp(prefix="gxi-", dir="/dev/shm" if os.path.isdir("/dev/shm")
                              else "/tmp"))
    users = ",".join(["grex"] + [f"u{i}" for i in range(1, POOL + 1)])
    r = subprocess.run([sys.executable, str(SERVER_SCRIPT), "start", str(d), "--users", users],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        shutil.rmtree(d, ignore_errors=True)
        pytest.fail(f"could not start the Dovecot test server: {r.stderr.strip()}")
    env = _parse_env(r.stdout)
    server = ImapServer(d, env["GREX_IMAP_HOST"], int(env["GREX_IMAP_PORT"]),
                        int(env["GREX_IMAP_STARTTLS_PORT"]), env["GREX_IMAP_CAFILE"])
    try:
        yield server
    finally:
        subprocess.run([sys.executable, str(SERVER_SCRIPT), "stop", str(d)],
                       capture_output=True, timeout=60)
        if not os.environ.get("GREX_KEEP_IMAP_DIR"):
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def imap_user(imap_server: ImapServer) -> ImapUser:
    """A fresh IMAP user with an empty mailbox on the session's Dovecot."""
    return imap_server.new_user()


# ---------------------------------------------------------------- KB helpers for sync tests


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_accounts(kb_path: Path, accounts: list[dict[str, object]]) -> Path:
    """Create the KB (if needed) with a grex.toml holding exactly these [[accounts]]."""
    from grex import store
    from grex.ingest import imap as gsync

    kb = store.KB.init(kb_path)
    conn = kb.connect()
    gsync.ensure_schema(conn)
    conn.close()
    text = ""
    for a in accounts:
        text += "[[accounts]]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in a.items())
        text += "\n"
    (kb_path / "grex.toml").write_text(text)
    return kb_path


def run_sync(kb_path: Path, **options: object):
    """Sync in-process, as `grex sync --no-later` does; returns the SyncReport."""
    from grex import store
    from grex.config import load_config
    from grex.ingest import imap as gsync

    config = load_config(kb_path, env={})
    kb = store.KB.open(kb_path)
    conn = kb.connect()
    try:
        with kb.writer_lock(wait=True, timeout=60):
            return gsync.sync(kb, conn, config, **options)  # type: ignore[arg-type]
    finally:
        conn.close()


def kb_state(kb_path: Path) -> dict[str, object]:
    """What a user could tell apart about a KB: messages, threads, copies, sync rows, files."""
    import sqlite3

    conn = sqlite3.connect(kb_path / "catalog.sqlite")
    q = lambda sql: sorted(tuple(r) for r in conn.execute(sql))  # noqa: E731
    threads: dict[str, list[str]] = {}
    for tid, mid in conn.execute("SELECT thread_id, message_id FROM messages"):
        threads.setdefault(tid, []).append(mid)
    state = {
        "messages": q("SELECT message_id, content_hash FROM messages"),
        "threads": sorted(tuple(sorted(v)) for v in threads.values()),
        "locations": q("SELECT message_id, source FROM locations"),
        "sync": q("SELECT account, folder, uid, message_id FROM sync_message"),
        "folders": q("SELECT account, folder, uidvalidity, uidnext, messages, highestmodseq"
                     " FROM sync_folder"),
        "raw": sorted(p.name for p in (kb_path / "raw" / "cur").iterdir()),
        "quarantine": q("SELECT content_hash, source FROM quarantine"),
    }
    conn.close()
    return state


def grex_cli(kb_path: Path, *args: str, env: dict[str, str] | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `python -m grex --kb KB ARGS` as a user would, in a clean GREX_* environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GREX_")}
    clean.update(env or {})
    return subprocess.run([sys.executable, "-m", "grex", "--kb", str(kb_path), *args],
                          capture_output=True, text=True, timeout=timeout, env=clean,
                          cwd=REPO)
