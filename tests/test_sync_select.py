"""What comes in, what goes out: selection, thread completion, increments, unsharing.

Every test talks to the session's real Dovecot as a fresh user (tests/fixtures_imap.py).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.fixtures_imap import ImapUser, kb_state, run_sync, write_accounts

pytestmark = pytest.mark.imap

SHARE = ("grex-share",)


def _mids(kb_path: Path) -> set[str]:
    conn = sqlite3.connect(kb_path / "catalog.sqlite")
    try:
        return {r[0] for r in conn.execute("SELECT message_id FROM messages")}
    finally:
        conn.close()


def _thread(user: ImapUser, folder: str = "INBOX", *, share_root: bool = True,
            subject: str = "plan") -> list[str]:
    """root <- r1 <- r2, with only the root carrying the share keyword."""
    root = user.deliver(folder, subject=subject, keywords=SHARE if share_root else ())
    r1 = user.deliver(folder, subject=f"Re: {subject}", in_reply_to=root, references=(root,))
    r2 = user.deliver(folder, subject=f"Re: {subject}", in_reply_to=r1, references=(root, r1))
    return [root, r1, r2]


def test_keyword_alone_picks_only_marked_messages(imap_user, tmp_path):
    marked = imap_user.deliver(subject="share me", keywords=SHARE)
    imap_user.deliver(subject="private")
    imap_user.deliver(subject="other keyword", keywords=("work",))
    kb = write_accounts(tmp_path / "kb", [imap_user.account(whole_thread=False)])
    report = run_sync(kb)
    assert _mids(kb) == {marked}
    assert report.total("new") == 1


def test_whole_thread_comes_from_every_configured_folder_only(imap_user, tmp_path):
    root, r1, r2 = _thread(imap_user)
    # a reply filed elsewhere (configured), one in an unconfigured folder, and a sibling
    # that only shares the root through References (no In-Reply-To to a message we hold)
    sent = imap_user.deliver("Sent", subject="Re: plan", in_reply_to=r2, references=(root, r2))
    elsewhere = imap_user.deliver("Archive", subject="Re: plan", in_reply_to=root,
                                  references=(root,))
    sibling = imap_user.deliver("Sent", subject="Re: plan", references=(root,))
    unrelated = imap_user.deliver(subject="plan")  # same subject, no references: not joined
    kb = write_accounts(tmp_path / "kb", [imap_user.account(folders=["INBOX", "Sent"])])
    run_sync(kb)
    got = _mids(kb)
    assert got == {root, r1, r2, sent, sibling}
    assert elsewhere not in got and unrelated not in got


def test_reply_marked_brings_its_ancestors(imap_user, tmp_path):
    root, r1, r2 = _thread(imap_user, share_root=False)
    imap_user.set_keywords("INBOX", imap_user.uids("INBOX")[-1:], list(SHARE))
    kb = write_accounts(tmp_path / "kb", [imap_user.account()])
    run_sync(kb)
    assert _mids(kb) == {root, r1, r2}


def test_whole_folders_by_glob(imap_user, tmp_path):
    a = imap_user.deliver("Projects/alpha", subject="a")
    b = imap_user.deliver("Projects/beta", subject="b")
    imap_user.deliver("INBOX", subject="not in the glob")
    imap_user.deliver("Personal", subject="nor this")
    kb = write_accounts(tmp_path / "kb", [imap_user.account(folders=["Projects/*"],
                                                           share_keyword="")])
    run_sync(kb)
    assert _mids(kb) == {a, b}


def test_search_criteria_select(imap_user, tmp_path):
    budget = imap_user.deliver(subject="Budget for 2025")
    imap_user.deliver(subject="Lunch")
    tagged_lunch = imap_user.deliver(subject="Budget lunch", keywords=SHARE)
    imap_user.deliver(subject="Budget draft")  # matches search, lacks keyword
    kb = write_accounts(tmp_path / "kb", [imap_user.account(
        share_keyword="", search='SUBJECT "budget for"', whole_thread=False)])
    run_sync(kb)
    assert _mids(kb) == {budget}
    kb2 = write_accounts(tmp_path / "kb2", [imap_user.account(
        search='SUBJECT "budget"', whole_thread=False)])
    run_sync(kb2)
    assert _mids(kb2) == {tagged_lunch}


def test_second_sync_fetches_nothing_then_only_what_is_new(imap_user, tmp_path):
    root, r1, r2 = _thread(imap_user)
    imap_user.deliver(subject="noise")
    kb = write_accounts(tmp_path / "kb", [imap_user.account()])
    first = run_sync(kb)
    assert first.total("fetched") == 3
    before = kb_state(kb)
    again = run_sync(kb)
    assert (again.total("fetched"), again.total("new"), again.total("removed")) == (0, 0, 0)
    assert again.accounts[0].changed_folders == 0
    assert kb_state(kb) == before
    # a new reply to the shared thread arrives: only it is fetched
    r3 = imap_user.deliver(subject="Re: plan", in_reply_to=r2, references=(root, r1, r2))
    third = run_sync(kb)
    assert third.total("fetched") == 1 and third.total("new") == 1
    assert _mids(kb) == {root, r1, r2, r3}
    # --all re-verifies every folder but still fetches nothing already held
    full = run_sync(kb, full=True)
    assert full.accounts[0].changed_folders == 1 and full.total("fetched") == 0


def test_unshare_removes_the_thread_and_deleted_messages(imap_user, tmp_path):
    t1 = _thread(imap_user, subject="one")
    t2 = _thread(imap_user, subject="two")
    kb = write_accounts(tmp_path / "kb", [imap_user.account()])
    run_sync(kb)
    assert _mids(kb) == set(t1) | set(t2)
    # unmark thread one; delete the last reply of thread two on the server
    uids = imap_user.uids("INBOX")
    imap_user.set_keywords("INBOX", uids[:1], list(SHARE), add=False)
    imap_user.delete("INBOX", uids[-1:])
    report = run_sync(kb)
    assert _mids(kb) == set(t2[:2])
    assert report.total("removed") == 4
    raw = list((kb / "raw" / "cur").iterdir())
    assert len(raw) == 2  # the bytes of removed messages are gone too


def test_unshare_keep_leaves_messages(imap_user, tmp_path):
    t1 = _thread(imap_user)
    kb = write_accounts(tmp_path / "kb", [imap_user.account(on_unshare="keep")])
    run_sync(kb)
    imap_user.set_keywords("INBOX", imap_user.uids("INBOX")[:1], list(SHARE), add=False)
    report = run_sync(kb)
    assert report.total("removed") == 0
    assert _mids(kb) == set(t1)


def test_uidvalidity_change_rematches_without_duplicates_or_loss(imap_user, tmp_path):
    mids = [imap_user.deliver("Team", subject=f"m{i}") for i in range(5)]
    kb = write_accounts(tmp_path / "kb", [imap_user.account(folders=["Team"],
                                                           share_keyword="")])
    run_sync(kb)
    files_before = sorted(p.name for p in (kb / "raw" / "cur").iterdir())
    # the server loses its UID state: delete the folder, recreate it with the same mail
    # minus one message plus a new one
    with imap_user.client() as c:
        c.select_folder("Team")
        raws = [d[b"BODY[]"] for _, d in sorted(c.fetch(c.search("ALL"), ["BODY.PEEK[]"])
                                                 .items())]
        old_validity = c.folder_status("Team", ["UIDVALIDITY"])[b"UIDVALIDITY"]
        c.unselect_folder()
        c.delete_folder("Team")
        c.create_folder("Team")
        for raw in raws[1:]:
            c.append("Team", raw)
        assert c.folder_status("Team", ["UIDVALIDITY"])[b"UIDVALIDITY"] != old_validity
    new = imap_user.deliver("Team", subject="new one")
    report = run_sync(kb)
    assert report.total("fetched") == 1  # only the new message travels again
    assert report.total("removed") == 1
    assert _mids(kb) == set(mids[1:]) | {new}
    state = kb_state(kb)
    uids_now = imap_user.uids("Team")
    assert sorted(u for (_, _, u, _) in state["sync"]) == uids_now  # type: ignore[union-attr]
    assert len(state["raw"]) == 5  # type: ignore[arg-type]
    assert set(files_before) - set(state["raw"])  # the removed one's file went  # type: ignore
    assert run_sync(kb).total("fetched") == 0


def test_same_thread_from_two_accounts_is_stored_once(imap_server, tmp_path):
    ann, bob = imap_server.new_user("ann"), imap_server.new_user("bob")
    root = ann.deliver(subject="joint", keywords=SHARE, message_id="joint-root@test.grex")
    reply = ann.deliver(subject="Re: joint", in_reply_to=root, references=(root,),
                        message_id="joint-reply@test.grex")
    # bob has the same two messages (same bytes would differ in Date; ids are what matter)
    bob.deliver(subject="joint", message_id=root, keywords=SHARE)
    bob.deliver(subject="Re: joint", in_reply_to=root, references=(root,), message_id=reply,
                keywords=SHARE)
    kb = write_accounts(tmp_path / "kb", [ann.account("ann"), bob.account("bob")])
    report = run_sync(kb)
    assert _mids(kb) == {root, reply}
    assert report.total("new") == 2 and report.total("updated") == 2
    state = kb_state(kb)
    assert {s for _, s in state["locations"]} == {"imap:ann/INBOX", "imap:bob/INBOX"}  # type: ignore[misc]
    assert len(state["locations"]) == 4  # type: ignore[arg-type]
    # one sharer unshares: the thread stays (the other still shares it)
    bob.set_keywords("INBOX", bob.uids("INBOX"), list(SHARE), add=False)
    run_sync(kb)
    assert _mids(kb) == {root, reply}
    assert {s for _, s in kb_state(kb)["locations"]} == {"imap:ann/INBOX"}  # type: ignore[misc]


def test_unparseable_message_is_quarantined_not_fatal(imap_user, tmp_path):
    good = imap_user.deliver(subject="fine", keywords=SHARE)
    with imap_user.client() as c:
        c.append("INBOX", b"this is not an email at all\r\n", flags=list(SHARE))
    kb = write_accounts(tmp_path / "kb", [imap_user.account(whole_thread=False)])
    report = run_sync(kb)
    assert report.total("quarantined") == 1
    assert _mids(kb) == {good}
    assert len(kb_state(kb)["quarantine"]) == 1  # type: ignore[arg-type]


def test_keyword_changes_on_held_messages_are_tracked_with_condstore(imap_user, tmp_path):
    root, r1, r2 = _thread(imap_user)
    kb = write_accounts(tmp_path / "kb", [imap_user.account()])
    run_sync(kb)
    uids = imap_user.uids("INBOX")
    imap_user.set_keywords("INBOX", uids[1:2], ["urgent", "$label1"])
    report = run_sync(kb)
    assert (report.total("fetched"), report.total("updated")) == (0, 1)
    conn = sqlite3.connect(kb / "catalog.sqlite")
    kws = dict(conn.execute("SELECT message_id, keywords FROM sync_message"))
    conn.close()
    assert set(json.loads(kws[r1])) == {"urgent", "$label1"}
    assert json.loads(kws[root]) == ["grex-share"] and json.loads(kws[r2]) == []
    # the catalog's copy follows, so the index's `label:` field does too
    conn = sqlite3.connect(kb / "catalog.sqlite")
    loc = dict(conn.execute("SELECT message_id, keywords_json FROM locations"))
    conn.close()
    assert set(json.loads(loc[r1])) == {"urgent", "$label1"}
    assert run_sync(kb).total("updated") == 0


def test_a_removed_account_stops_sharing_everything_at_once(imap_server, tmp_path):
    ann, bob = imap_server.new_user("ann"), imap_server.new_user("bob")
    joint = ann.deliver(subject="joint", keywords=SHARE, message_id="retire-joint@test.grex")
    bob.deliver(subject="joint", message_id=joint, keywords=SHARE)
    own = bob.deliver(subject="bob only", keywords=SHARE, message_id="retire-bob@test.grex")
    kb = write_accounts(tmp_path / "kb", [ann.account("ann"), bob.account("bob")])
    run_sync(kb)
    assert _mids(kb) == {joint, own}
    write_accounts(kb, [ann.account("ann")])  # bob leaves the team: his block is removed
    plan = run_sync(kb, dry_run=True)
    assert {(p.account, p.message_id, p.reason) for p in plan.accounts[-1].plan} == {
        ("bob", joint, "account no longer configured"),
        ("bob", own, "account no longer configured")}
    assert _mids(kb) == {joint, own}  # a dry run changes nothing
    report = run_sync(kb)
    assert report.total("removed") == 2
    assert _mids(kb) == {joint}  # ann still shares the joint thread
    assert {s for _, s in kb_state(kb)["locations"]} == {"imap:ann/INBOX"}  # type: ignore[misc]
    conn = sqlite3.connect(kb / "catalog.sqlite")
    assert conn.execute("SELECT COUNT(*) FROM sync_folder WHERE account = 'bob'").fetchone() == (0,)
    conn.close()
    assert run_sync(kb).total("removed") == 0
