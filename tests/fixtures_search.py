"""Fixtures for search: KBs imported from the notmuch corpora, the CLI in-process and as a
process (with this checkout's grex on the path, not an installed one)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.corpora import corpus as corpus_path
from tests.fixtures_core import Result

REPO = Path(__file__).resolve().parents[1]


def grex_process(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m grex ARGS` as a separate process, importing this checkout's grex."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("GREX_KB", None)
    return subprocess.run([sys.executable, "-m", "grex", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=REPO)


@pytest.fixture
def grex_cli(capsys: pytest.CaptureFixture[str],
             monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """Run ``grex.cli.main`` in-process: grex_cli(kb_path, "search", "--json", "foo")."""
    monkeypatch.delenv("GREX_KB", raising=False)

    def run(kb_path: Path, *args: str) -> Result:
        from grex.cli import main

        capsys.readouterr()
        code = 0
        try:
            main(["--kb", str(kb_path), *args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def _imported(tmp_path_factory: pytest.TempPathFactory, corpus: str) -> Path:
    maildir = corpus_path(corpus, "maildir")
    kb = tmp_path_factory.mktemp(corpus) / "kb"
    done = grex_process("--kb", str(kb), "import", str(maildir))
    assert done.returncode == 0, done.stderr
    return kb


@pytest.fixture(scope="session")
def notmuch_default_kb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A KB with notmuch-default imported by `grex import` (which runs the index stage)."""
    return _imported(tmp_path_factory, "notmuch-default")


@pytest.fixture(scope="session")
def notmuch_lkml_kb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _imported(tmp_path_factory, "notmuch-lkml")


_n = [0]


def write_mail(folder: Path, *, subject: str, body: str, sender: str = "Kerry McGuire "
               "<kerry@example.com>", to: str = "Team <team@example.com>",
               message_id: str | None = None, in_reply_to: str | None = None,
               date: str = "Mon, 04 Mar 2024 09:00:00 +0000",
               attachment: tuple[str, str, bytes] | None = None) -> tuple[str, Path]:
    """Write one message file into a Maildir ``folder``/cur; returns (message id, path)."""
    from email.message import EmailMessage

    _n[0] += 1
    mid = message_id or f"search-test-{_n[0]}.{os.getpid()}@example.com"
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = sender
    msg["To"] = to
    msg["Date"] = date
    msg["Message-ID"] = f"<{mid}>"
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to}>"
        msg["References"] = f"<{in_reply_to}>"
    msg.set_content(body)
    if attachment:
        name, ctype, payload = attachment
        maintype, _, subtype = ctype.partition("/")
        msg.add_attachment(payload, maintype=maintype, subtype=subtype, filename=name)
    for sub in ("cur", "new", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    path = folder / "cur" / f"{_n[0]}.{os.getpid()}.test:2,S"
    path.write_bytes(bytes(msg))
    return mid, path
