"""What a newcomer meets first: help, --version, global options where they type them, and
one exit code and message for a name that names nothing (or several things)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.fixtures_core import Mailbox, run_grex


def _threads(grex, mailbox: Mailbox, n: int) -> list[str]:  # type: ignore[no-untyped-def]
    for i in range(n):
        mailbox.deliver(subject=f"Topic number {i}", body=f"Body {i}.")
    r = grex("import", "--no-later", str(mailbox.path))
    assert r.exit_code == 0, r.stderr
    return [t["thread_id"] for t in grex("threads", "--json").json()]


def test_help_shows_placeholders_not_python_types() -> None:
    for args in (["--help"], ["-h"], ["import", "--help"], ["search", "-h"],
                 ["export", "html", "--help"], ["who", "--help"]):
        done = run_grex(*args)
        assert done.returncode == 0, (args, done.stderr)
        text = done.stdout
        assert "Usage: grex" in text, args
        assert not re.search(r"<(int|str|float|list\[|Path|path)", text), (args, text)
        assert not re.search(r"\{\w+\}", text), (args, text)
    assert "PATHS..." in run_grex("import", "--help").stdout
    assert "--limit LIMIT" in run_grex("search", "--help").stdout


def test_version() -> None:
    from grex import __version__

    for flag in ("--version", "-V"):
        done = run_grex(flag)
        assert (done.returncode, done.stdout.strip()) == (0, f"grex {__version__}")


def test_global_options_after_the_command(tmp_path: Path, grex,  # type: ignore[no-untyped-def]
                                          kb, mailbox: Mailbox) -> None:
    _threads(grex, mailbox, 2)
    env = {"GREX_SEARCH_SERVER": "0"}
    before = run_grex("--kb", str(kb.path), "threads", "--json", env=env)
    assert before.returncode == 0, before.stderr
    for args in (["threads", "--json", "--kb", str(kb.path)],
                 ["threads", f"--kb={kb.path}", "--json"]):
        done = run_grex(*args, env=env)
        assert (done.returncode, done.stdout) == (0, before.stdout), (args, done.stderr)
    # after `--` everything is the command's
    from grex.launch import hoist_globals

    assert hoist_globals(["search", "a", "--kb", "K", "--debug"]) == \
        ["--kb", "K", "--debug", "search", "a"]
    assert hoist_globals(["search", "--", "--kb", "K"]) == ["search", "--", "--kb", "K"]


def test_unknown_and_ambiguous_thread_ids(grex, mailbox: Mailbox) -> None:  # type: ignore[no-untyped-def]
    ids = _threads(grex, mailbox, 40)
    assert grex("reindex").exit_code == 0
    for args in (["show", "ffffffffffffffff"], ["related", "ffffffffffffffff"]):
        r = grex(*args)
        assert r.exit_code == 2 and "no thread" in r.stderr, (args, r.stderr)
    # a prefix that several ids share: ambiguous, with candidates; a unique prefix works
    by_first: dict[str, list[str]] = {}
    for t in ids:
        by_first.setdefault(t[:2], []).append(t)
    shared = next(p for p, ts in by_first.items() if len(ts) > 1)
    r = grex("show", shared)
    assert r.exit_code == 2 and "ambiguous" in r.stderr
    assert all(t in r.stderr for t in by_first[shared][:10])
    unique = next(t for t in ids if sum(x.startswith(t[:6]) for x in ids) == 1)
    r = grex("show", unique[:6], "--json")
    assert r.exit_code == 0 and r.json()["thread_id"] == unique


def test_empty_who_and_unknown_entity_type_are_usage_errors(grex, mailbox: Mailbox) -> None:  # type: ignore[no-untyped-def]
    _threads(grex, mailbox, 1)
    r = grex("who", " ")
    assert r.exit_code == 2 and "Error:" in r.stderr
    r = grex("entities", "--type", "NO_SUCH_TYPE")
    assert r.exit_code == 2 and "NO_SUCH_TYPE" in r.stderr


def test_default_kb_is_per_user_outside_a_checkout(tmp_path: Path) -> None:
    from grex.paths import default_kb, kb_path

    outside = tmp_path / "work"
    outside.mkdir()
    env = {"XDG_DATA_HOME": str(tmp_path / "data")}
    assert default_kb(env, cwd=str(outside)) == str(tmp_path / "data" / "grex" / "default")
    assert default_kb({"HOME": "/h"}, cwd=str(outside)).endswith("/.local/share/grex/default")
    checkout = tmp_path / "src"
    (checkout / "grex").mkdir(parents=True)
    (checkout / "grex" / "__init__.py").write_text("")
    (checkout / "indexes").mkdir()
    (checkout / "docs").mkdir()
    assert default_kb(env, cwd=str(checkout / "docs")) == str(checkout / "indexes" / "default")
    assert kb_path("~/kb", env)[1] == "--kb" and kb_path(None, {"GREX_KB": "/k"}) == ("/k",
                                                                                   "GREX_KB")
    # a command run outside a checkout with no --kb uses (and creates) the per-user KB
    done = run_grex("init", env={**env, "GREX_KB": ""}, cwd=outside)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "data" / "grex" / "default" / "grex.toml").is_file()
