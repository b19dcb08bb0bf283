"""Gmail's IMAP extensions (X-GM-EXT-1: X-GM-LABELS, X-GM-THRID).

Dovecot can't show these, so this one protocol corner uses a small in-memory stand-in for
Gmail's server that answers exactly the commands grex sends (STATUS, EXAMINE, UID SEARCH
with X-GM-LABELS / X-GM-THRID, UID FETCH). Everything else in the sync path is real:
the parser, the store, the threading.
"""

from __future__ import annotations

import re
import sqlite3

from grex import store
from grex.config import Account
from grex.ingest import imap as gsync

ALL_MAIL = "[Gmail]/All Mail"


def _mail(mid: str, subject: str, reply_to: str | None = None) -> bytes:
    hdr = (f"From: a@example.org\r\nTo: b@example.org\r\nSubject: {subject}\r\n"
           f"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <{mid}>\r\n")
    if reply_to:
        hdr += f"In-Reply-To: <{reply_to}>\r\nReferences: <{reply_to}>\r\n"
    return (hdr + "\r\nbody\r\n").encode()


class FakeGmail:
    """uid -> (bytes, labels, thread id), in one folder, as Gmail's All Mail shows it."""

    def __init__(self, messages: dict[int, tuple[bytes, tuple[str, ...], int]]) -> None:
        self.messages = messages
        self.searches: list[str] = []

    def has_capability(self, cap: str) -> bool:
        return cap in ("X-GM-EXT-1", "CONDSTORE")

    def list_folders(self):
        return [((b"\\HasNoChildren",), b"/", "INBOX"),
                ((b"\\HasChildren", b"\\Noselect"), b"/", "[Gmail]"),
                ((b"\\All", b"\\HasNoChildren"), b"/", ALL_MAIL)]

    def folder_status(self, folder, what):
        return {b"UIDVALIDITY": 7, b"UIDNEXT": max(self.messages) + 1,
                b"MESSAGES": len(self.messages), b"HIGHESTMODSEQ": 100 + len(self.messages)}

    def select_folder(self, folder, readonly=False):
        assert folder == ALL_MAIL and readonly
        return {b"UIDVALIDITY": 7}

    def search(self, criteria: str):
        self.searches.append(criteria)
        if criteria == "ALL":
            return list(self.messages)
        m = re.fullmatch(r'X-GM-LABELS "(.*)"', criteria)
        if m:
            return [u for u, (_, labels, _) in self.messages.items() if m.group(1) in labels]
        thrids = {int(t) for t in re.findall(r"X-GM-THRID (\d+)", criteria)}
        assert thrids, criteria
        return [u for u, (_, _, t) in self.messages.items() if t in thrids]

    def fetch(self, uids, items, modifiers=None):
        # no MODSEQ bookkeeping here: CHANGEDSINCE answers for every UID asked (allowed:
        # the client must cope with unchanged ones being reported)
        out = {}
        for u in uids:
            data, labels, thrid = self.messages[u]
            d: dict[bytes, object] = {}
            for item in items:
                if item == b"X-GM-THRID":
                    d[b"X-GM-THRID"] = thrid
                elif item == b"X-GM-LABELS":
                    d[b"X-GM-LABELS"] = tuple(lab.encode() for lab in labels)
                elif item == b"FLAGS":
                    d[b"FLAGS"] = (b"\\Seen",)
                elif item == b"BODY.PEEK[]":
                    d[b"BODY[]"] = data
                else:  # header fields
                    d[b"BODY[HEADER.FIELDS (MESSAGE-ID IN-REPLY-TO REFERENCES SUBJECT)]"] = \
                        data.split(b"\r\n\r\n")[0]
            out[u] = d
        return out

    def logout(self):
        pass


def test_gmail_label_and_thread_id_choose_the_conversation(tmp_path):
    gmail = FakeGmail({
        1: (_mail("r@x", "Offsite"), ("Team Share",), 901),
        2: (_mail("a@x", "Re: Offsite", "r@x"), (), 901),
        # Gmail put a subject-only follow-up in the same conversation: it comes too
        3: (_mail("b@x", "Re: Offsite"), ("\\Sent",), 901),
        4: (_mail("z@x", "Unrelated"), (), 902),
    })
    acct = Account(name="gmail", host="imap.gmail.com", folders=(ALL_MAIL,),
                   share_keyword="Team Share")
    kb = store.KB.init(tmp_path / "kb")
    conn = kb.connect()
    report = gsync.sync_account(kb, conn, acct, client_factory=lambda a: gmail)
    assert report.new == 3
    mids = {r[0] for r in conn.execute("SELECT message_id FROM messages")}
    assert mids == {"r@x", "a@x", "b@x"}
    assert 'X-GM-LABELS "Team Share"' in gmail.searches
    assert any("X-GM-THRID 901" in s for s in gmail.searches)
    assert not any("HEADER" in s for s in gmail.searches)  # no header searches on Gmail
    labels = dict(sqlite3.connect(kb.catalog_path).execute(
        "SELECT message_id, keywords_json FROM locations"))
    assert "Team Share" in labels["r@x"]
    # the label is removed: the conversation leaves at the next sync
    gmail.messages[1] = (gmail.messages[1][0], (), 901)
    gmail.messages[5] = (_mail("n@x", "new, unlabelled"), (), 903)  # the folder changed
    report = gsync.sync_account(kb, conn, acct, client_factory=lambda a: gmail)
    assert report.removed == 3
    assert conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0
