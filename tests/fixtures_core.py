"""Fixtures for the foundation: a fresh KB, a mail builder, and the CLI."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from grex import store

_counter = itertools.count(1)
BASE_DATE = datetime(2024, 3, 4, 9, 0, tzinfo=UTC)


def build_mail(
    *,
    subject: str = "Hello",
    body: str = "Just text.",
    sender: str = "Kerry McGuire <kerry.mcguire@example.com>",
    to: str = "Team <team@example.com>",
    cc: str | None = None,
    message_id: str | None = "auto",
    in_reply_to: str | None = None,
    references: list[str] | None = None,
    date: datetime | None = None,
    html: str | None = None,
    attachments: list[tuple[str, str, bytes]] = (),  # type: ignore[assignment]
    headers: dict[str, str] | None = None,
) -> tuple[str, bytes]:
    """One RFC 5322 message as (message-id without brackets, bytes)."""
    n = next(_counter)
    msg = EmailMessage()
    mid = f"msg{n}.{os.getpid()}@test.example" if message_id == "auto" else message_id
    msg["Subject"] = subject
    msg["From"] = sender
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    if date is not False:  # type: ignore[comparison-overlap]
        msg["Date"] = format_datetime(date or BASE_DATE + timedelta(minutes=n))
    if mid:
        msg["Message-ID"] = f"<{mid}>"
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to}>"
    if references:
        msg["References"] = " ".join(f"<{r}>" for r in references)
    for k, v in (headers or {}).items():
        msg[k] = v
    msg.set_content(body)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    for filename, ctype, payload in attachments:
        maintype, _, subtype = ctype.partition("/")
        msg.add_attachment(payload, maintype=maintype, subtype=subtype, filename=filename)
    return mid or "", bytes(msg)


@dataclass
class Mailbox:
    """A Maildir that tests deliver mail into, as a mail client would have it."""

    path: Path
    ids: list[str] = field(default_factory=list)

    def deliver(self, folder: str = "", **kw: Any) -> str:
        mid, data = build_mail(**kw)
        d = self.path / folder / "cur" if folder else self.path / "cur"
        for sub in ("cur", "new", "tmp"):
            (d.parent / sub).mkdir(parents=True, exist_ok=True)
        (d / f"{next(_counter)}.grex-test:2,S").write_bytes(data)
        self.ids.append(mid)
        return mid

    def deliver_raw(self, data: bytes, name: str | None = None) -> Path:
        (self.path / "cur").mkdir(parents=True, exist_ok=True)
        p = self.path / "cur" / (name or f"{next(_counter)}.raw:2,")
        p.write_bytes(data)
        return p


@pytest.fixture
def mailbox(tmp_path: Path) -> Mailbox:
    return Mailbox(tmp_path / "Maildir")


@pytest.fixture
def kb(tmp_path: Path) -> store.KB:
    return store.KB.init(tmp_path / "kb")


@pytest.fixture
def conn(kb: store.KB):  # type: ignore[no-untyped-def]
    c = kb.connect()
    yield c
    c.close()


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@pytest.fixture
def grex(kb: store.KB, monkeypatch: pytest.MonkeyPatch,
         capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run the real CLI entry point in-process against the test KB: grex("threads", "--json").

    It goes through ``grex.cli.main``, the one error handler, so exit codes and the
    ``Error: ...`` line are what a user sees.
    """
    monkeypatch.delenv("GREX_KB", raising=False)

    def run(*args: str, kb_path: Path | None = None) -> Result:
        from grex.cli import main

        capsys.readouterr()
        code = 0
        try:
            main(["--kb", str(kb_path or kb.path), *args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def run_grex(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
             cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as a separate process, exactly as a user (or cron) runs it."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "grex", *args], capture_output=True,
                          text=True, timeout=timeout, env=full_env, cwd=cwd)
