"""`grex sync --dry-run`, `grex why`, and the Gmail protocol corner (criteria only)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from grex.config import Account
from grex.errors import ConfigError
from grex.ingest import imap as gsync
from tests.fixtures_imap import grex_cli, kb_state, write_accounts

SHARE = ("grex-share",)


@pytest.mark.imap
def test_dry_run_lists_what_would_happen_and_changes_nothing(imap_user, tmp_path):
    root = imap_user.deliver(subject="Roadmap", keywords=SHARE)
    imap_user.deliver(subject="Re: Roadmap", in_reply_to=root, references=(root,))
    imap_user.deliver(subject="private")
    kb = write_accounts(tmp_path / "kb", [imap_user.account("work")])
    before = kb_state(kb)
    r = grex_cli(kb, "sync", "--dry-run")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert sum(ln.startswith("+ work/INBOX") for ln in lines) == 2
    assert any("Roadmap" in ln and "keyword grex-share" in ln for ln in lines)
    assert any(f"thread of {root}" in ln for ln in lines)
    assert "private" not in r.stdout
    assert lines[-1] == "Dry run: 2 would fetch, 0 updated, 0 removed, 0 quarantined"
    assert kb_state(kb) == before
    # after a real sync and an unshare, the dry run says what would leave
    assert grex_cli(kb, "sync", "--no-later").returncode == 0
    imap_user.set_keywords("INBOX", imap_user.uids("INBOX")[:1], list(SHARE), add=False)
    r = grex_cli(kb, "sync", "--dry-run", "--json")
    out = json.loads(r.stdout)
    assert out["removed"] == 2 and out["new"] == 0
    assert {p["action"] for p in out["accounts"][0]["plan"]} == {"remove"}


@pytest.mark.imap
def test_why_names_every_sharer_and_rule(imap_server, tmp_path):
    ann, bob = imap_server.new_user(), imap_server.new_user()
    root = ann.deliver(subject="Launch", keywords=SHARE, message_id="launch@test.grex")
    ann.deliver(subject="Re: Launch", in_reply_to=root, references=(root,),
                message_id="launch-re@test.grex")
    bob.deliver("Projects/launch", subject="Launch", message_id=root, keywords=SHARE)
    kb = write_accounts(tmp_path / "kb", [
        ann.account("ann"), bob.account("bob", folders=["Projects/*"])])
    assert grex_cli(kb, "sync", "--no-later").returncode == 0
    conn = sqlite3.connect(kb / "catalog.sqlite")
    (tid,) = conn.execute("SELECT thread_id FROM messages WHERE message_id = ?",
                          (root,)).fetchone()
    conn.close()
    r = grex_cli(kb, "why", tid)
    assert r.returncode == 0, r.stderr
    assert "Shared by: ann, bob" in r.stdout
    assert "<launch@test.grex> in ann/INBOX uid 1: keyword grex-share" in r.stdout
    assert "<launch@test.grex> in bob/Projects/launch uid 1: keyword grex-share" in r.stdout
    assert "<launch-re@test.grex> in ann/INBOX uid 2: thread of launch@test.grex" in r.stdout
    out = json.loads(grex_cli(kb, "why", root, "--json").stdout)  # a Message-ID works too
    assert out["shared_by"] == ["ann", "bob"] and len(out["entries"]) == 3
    missing = grex_cli(kb, "why", "nonexistent-thread")
    assert missing.returncode == 1 and "no thread" in missing.stderr


def _account(**kw: object) -> Account:
    return Account(name="g", host="imap.gmail.com", **kw)  # type: ignore[arg-type]


def test_seed_criteria_plain_and_gmail():
    assert gsync.seed_criteria(_account()) == "KEYWORD grex-share"
    assert gsync.seed_criteria(_account(), gmail=True) == 'X-GM-LABELS "grex-share"'
    assert gsync.seed_criteria(_account(share_keyword="", search="SINCE 1-Jan-2024")) \
        == "SINCE 1-Jan-2024"
    assert gsync.seed_criteria(_account(share_keyword="")) == "ALL"
    assert gsync.seed_criteria(_account(share_keyword="Team Share"), gmail=True) \
        == 'X-GM-LABELS "Team Share"'
    with pytest.raises(ConfigError, match="not a valid IMAP keyword"):
        gsync.seed_criteria(_account(share_keyword="Team Share"))


def test_thread_criteria_quote_and_skip_hostile_ids():
    crit = gsync.thread_criteria(["a@x", 'b"c@y'])
    assert crit.count("OR ") == 5
    assert 'HEADER References "<b\\"c@y>"' in crit
    assert gsync.thread_criteria(["bad\r\nid@x"]) == ""
    assert gsync.gmail_thread_criteria([1, 2]) == "OR X-GM-THRID 1 X-GM-THRID 2"
