"""Round trip: notmuch's own test corpus through a real Dovecot and back equals notmuch's
threads (groundtruth/threads.json, 24 threads over 52 messages)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.corpora import corpus
from tests.fixtures_imap import grex_cli, run_sync, write_accounts

pytestmark = [pytest.mark.imap, pytest.mark.corpus]


def _truth() -> set[frozenset[str]]:
    data = json.loads(corpus("notmuch-default", "groundtruth", "threads.json").read_text())
    assert data["thread_count"] == 24
    return {frozenset(t["message_ids"]) for t in data["threads"]}


def _kb_threads(kb: Path) -> set[frozenset[str]]:
    conn = sqlite3.connect(kb / "catalog.sqlite")
    groups: dict[str, set[str]] = {}
    for tid, mid in conn.execute("SELECT thread_id, message_id FROM messages"):
        groups.setdefault(tid, set()).add(mid)
    conn.close()
    return {frozenset(g) for g in groups.values()}


@pytest.fixture(scope="module")
def notmuch_user(imap_server):
    user = imap_server.new_user()
    n = user.load(corpus("notmuch-default", "maildir"), "Lists/notmuch")
    assert n == 53  # 53 files; one message is stored twice
    return user


def test_whole_folder_round_trip_equals_notmuch(notmuch_user, tmp_path):
    kb = write_accounts(tmp_path / "kb", [notmuch_user.account(
        folders=["Lists/*"], share_keyword="")])
    r = grex_cli(kb, "sync", "--no-later")
    assert r.returncode == 0, r.stderr
    assert "52 new, 1 updated" not in r.stdout  # the twin is the same copy: not "updated"
    assert "52 new" in r.stdout
    assert _kb_threads(kb) == _truth()


def test_sharing_only_roots_brings_every_thread_whole(notmuch_user, tmp_path):
    truth = _truth()
    roots = {json.loads(corpus("notmuch-default", "groundtruth", "threads.json").read_text())
             ["threads"][i]["root_message_ids"][0] for i in range(24)}
    with notmuch_user.client() as c:
        c.select_folder("Lists/notmuch")
        uids = [u for r in sorted(roots) for u in c.search(["HEADER", "Message-ID", f"<{r}>"])]
        c.add_flags(uids, ["grex-share"])
    try:
        kb = write_accounts(tmp_path / "kb", [notmuch_user.account(folders=["Lists/*"])])
        report = run_sync(kb)
        assert report.total("new") == 52
        assert _kb_threads(kb) == truth
        # unsharing one root takes exactly its thread away
        with notmuch_user.client() as c:
            c.select_folder("Lists/notmuch")
            c.remove_flags(uids[:1], ["grex-share"])
        run_sync(kb)
        gone = [t for t in truth if t not in _kb_threads(kb)]
        assert len(gone) == 1 and len(_kb_threads(kb)) == 23
    finally:
        with notmuch_user.client() as c:
            c.select_folder("Lists/notmuch")
            c.remove_flags(c.search("ALL"), ["grex-share"])
