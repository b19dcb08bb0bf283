"""Selection: which UIDs are shared (keywords, folders, Gmail labels, whole threads)."""

from __future__ import annotations

import email.parser
import email.policy
import fnmatch
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from grex.config import Account
from grex.errors import (
    ConfigError,
    FolderError,
)
from grex.ingest.imap.state import _HEADER_FIELDS, HEADER_BATCH, SEARCH_IDS_PER_COMMAND
from grex.ingest.parse import normalize_message_id, parse_id_list

# ---------------------------------------------------------------- selection


@dataclass(frozen=True, slots=True)
class Header:
    uid: int
    message_id: str
    related: tuple[str, ...]  # In-Reply-To + References
    subject: str

    @property
    def ids(self) -> frozenset[str]:
        return frozenset((self.message_id, *self.related)) - {""}


def _gmail(client: Any) -> bool:
    return bool(client.has_capability("X-GM-EXT-1"))


def _astr(value: str) -> str:
    """An IMAP quoted string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def seed_criteria(account: Account, gmail: bool = False) -> str:
    """The raw UID SEARCH criteria choosing a folder's seeds."""
    parts = []
    if account.share_keyword:
        kw = account.share_keyword
        if gmail:
            parts.append(f"X-GM-LABELS {_astr(kw)}")
        else:
            if any(c in kw for c in ' (){%*"\\]') or not kw.isprintable():
                raise ConfigError(f"account {account.name!r}: share_keyword {kw!r} is not a "
                                  "valid IMAP keyword (no spaces or ( ) { % * \" \\ ])")
            parts.append(f"KEYWORD {kw}")
    if account.search.strip():
        parts.append(account.search.strip())
    return " ".join(parts) or "ALL"


def thread_criteria(ids: Iterable[str]) -> str:
    """One UID SEARCH matching any message whose Message-ID, In-Reply-To or References
    holds one of ``ids`` (substring matches on the server; grex re-checks)."""
    items = []
    for i in ids:
        if not i.isascii() or not i.isprintable():
            continue
        q = _astr(f"<{i}>")
        items += [f"HEADER Message-ID {q}", f"HEADER References {q}",
                  f"HEADER In-Reply-To {q}"]
    if not items:
        return ""
    return "OR " * (len(items) - 1) + " ".join(items)


def gmail_thread_criteria(thrids: Iterable[int]) -> str:
    items = [f"X-GM-THRID {t}" for t in thrids]
    return ("OR " * (len(items) - 1) + " ".join(items)) if items else ""


def is_whole_folder(account: Account) -> bool:
    return not account.share_keyword and not account.search.strip()


def selection_fingerprint(account: Account, folders: Sequence[str]) -> str:
    what = [account.share_keyword, account.search, account.whole_thread, list(folders)]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]


def resolve_folders(client: Any, account: Account) -> list[str]:
    """The server folders matching ``account.folders`` (globs; '/' also matches the server's
    delimiter). A literal name that does not exist is a FolderError."""
    listed = client.list_folders()
    names: list[str] = []
    selectable: set[str] = set()
    delim = "/"
    for flags, d, name in listed:
        if d:
            delim = d.decode() if isinstance(d, bytes) else d
        names.append(name)
        if not any(f.lower() == b"\\noselect" for f in flags):
            selectable.add(name)
    out: list[str] = []
    for pattern in account.folders:
        variants = {pattern, pattern.replace("/", delim)}
        # an exact name first: Gmail's "[Gmail]/All Mail" is a name, not a glob
        hit = [n for n in names if n in variants
               or (pattern.upper() == "INBOX" and n.upper() == "INBOX")]
        if not hit and any(ch in pattern for ch in "*?["):
            hit = [n for n in names if any(fnmatch.fnmatchcase(n, v) for v in variants)]
        elif not hit:
            near = ", ".join(sorted(names)[:8])
            raise FolderError(f"account {account.name!r}: folder {pattern!r} does not exist "
                              f"on {account.host}", hint=f"folders there: {near}")
        for n in hit:
            if n in selectable and n not in out:
                out.append(n)
    return out


def _parse_header_block(raw: bytes, uid: int) -> Header:
    msg = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
    mid = normalize_message_id(msg.get("Message-ID"))
    related = parse_id_list(msg.get("In-Reply-To")) + parse_id_list(msg.get("References"))
    subject = str(msg.get("Subject") or "")[:200]
    return Header(uid, mid, tuple(dict.fromkeys(r for r in related if r != mid)), subject)


def fetch_headers(client: Any, uids: Sequence[int]) -> dict[int, Header]:
    """Message-ID, In-Reply-To, References and Subject of ``uids`` in the selected folder."""
    out: dict[int, Header] = {}
    for i in range(0, len(uids), HEADER_BATCH):
        chunk = list(uids[i:i + HEADER_BATCH])
        for uid, data in client.fetch(chunk, [_HEADER_FIELDS]).items():
            raw = next((v for k, v in data.items() if k.startswith(b"BODY[HEADER")), b"")
            out[uid] = _parse_header_block(raw or b"", uid)
    return out


@dataclass
class _Want:
    reason: str
    header: Header | None = None


@dataclass
class _Snapshot:
    uidvalidity: int
    uidnext: int
    messages: int
    highestmodseq: int


def _status(client: Any, folder: str, condstore: bool) -> _Snapshot:
    what = [b"UIDVALIDITY", b"UIDNEXT", b"MESSAGES"] + ([b"HIGHESTMODSEQ"] if condstore else [])
    st = client.folder_status(folder, what)
    return _Snapshot(int(st[b"UIDVALIDITY"]), int(st[b"UIDNEXT"]), int(st[b"MESSAGES"]),
                     int(st.get(b"HIGHESTMODSEQ", 0)))


class _Selector:
    """Finds the chosen (folder, uid) set of one account on an open connection."""

    def __init__(self, client: Any, account: Account, folders: Sequence[str]) -> None:
        self.client = client
        self.account = account
        self.folders = list(folders)
        self.gmail = _gmail(client)
        self.headers: dict[tuple[str, int], Header] = {}
        self.uidvalidity: dict[str, int] = {}
        self._selected: str | None = None

    def select(self, folder: str) -> None:
        if self._selected != folder:
            info = self.client.select_folder(folder, readonly=True)
            self.uidvalidity[folder] = int(info[b"UIDVALIDITY"])
            self._selected = folder

    def search(self, folder: str, criteria: str) -> list[int]:
        self.select(folder)
        return sorted(int(u) for u in self.client.search(criteria))

    def headers_for(self, folder: str, uids: Iterable[int]) -> dict[int, Header]:
        missing = sorted(u for u in uids if (folder, u) not in self.headers)
        if missing:
            self.select(folder)
            for uid, h in fetch_headers(self.client, missing).items():
                self.headers[(folder, uid)] = h
        return {u: self.headers[(folder, u)] for u in uids if (folder, u) in self.headers}

    def seeds(self, folders: Sequence[str]) -> dict[tuple[str, int], _Want]:
        criteria = seed_criteria(self.account, self.gmail)
        if is_whole_folder(self.account):
            return {(f, u): _Want(f"whole folder {f}") for f in folders
                    for u in self.search(f, "ALL")}
        bits = []
        if self.account.share_keyword:
            bits.append(("label " if self.gmail else "keyword ") + self.account.share_keyword)
        if self.account.search.strip():
            bits.append(f"search {self.account.search.strip()!r}")
        reason = " and ".join(bits)
        return {(f, u): _Want(reason) for f in folders for u in self.search(f, criteria)}

    def complete_threads(self, chosen: dict[tuple[str, int], _Want]) -> None:
        """Add every message of the configured folders connected to a chosen one."""
        if not chosen:
            return
        if self.gmail:
            self._complete_gmail(chosen)
            return
        by_folder: dict[str, list[int]] = {}
        for f, u in chosen:
            by_folder.setdefault(f, []).append(u)
        origin: dict[str, str] = {}  # thread id -> the shared message it came from
        comp: set[str] = set()
        for f, uids in by_folder.items():
            for u, h in self.headers_for(f, uids).items():
                label = h.message_id or f"{f}/{u}"
                for i in h.ids:
                    origin.setdefault(i, label)
                comp |= h.ids
        pool: set[tuple[str, int]] = set()
        if self.client.has_capability("THREAD=REFERENCES"):
            for f, uids in by_folder.items():
                self.select(f)
                wanted = set(uids)
                for group in self.client.thread("REFERENCES", "ALL"):
                    members = set(_flatten(group))
                    if members & wanted:
                        pool |= {(f, u) for u in members - wanted}
        searched: set[str] = set()
        frontier = set(comp)
        while True:
            if frontier:
                ids = sorted(frontier)
                for f in self.folders:
                    for at in range(0, len(ids), SEARCH_IDS_PER_COMMAND):
                        crit = thread_criteria(ids[at:at + SEARCH_IDS_PER_COMMAND])
                        if crit:
                            pool |= {(f, u) for u in self.search(f, crit)}
                searched |= frontier
                frontier = set()
            pool -= set(chosen)
            for f in {f for f, _ in pool}:
                self.headers_for(f, [u for g, u in pool if g == f])
            grew = True
            while grew:
                grew = False
                for key in sorted(pool - set(chosen)):
                    cand = self.headers.get(key)
                    if cand is None or not (cand.ids & comp):
                        continue
                    via = next(iter(sorted(cand.ids & comp)))
                    chosen[key] = _Want(f"thread of {origin.get(via, via)}", cand)
                    for i in cand.ids - comp:
                        origin[i] = origin.get(via, via)
                    comp |= cand.ids
                    frontier |= cand.ids - searched
                    grew = True
            if not frontier:
                return

    def _complete_gmail(self, chosen: dict[tuple[str, int], _Want]) -> None:
        thrids: dict[int, str] = {}
        for f in {f for f, _ in chosen}:
            self.select(f)
            uids = [u for g, u in chosen if g == f]
            for uid, data in self.client.fetch(uids, [b"X-GM-THRID"]).items():
                thrids.setdefault(int(data[b"X-GM-THRID"]), f"{f}/{uid}")
        ids = sorted(thrids)
        for f in self.folders:
            for i in range(0, len(ids), SEARCH_IDS_PER_COMMAND):
                crit = gmail_thread_criteria(ids[i:i + SEARCH_IDS_PER_COMMAND])
                for u in self.search(f, crit):
                    chosen.setdefault((f, u), _Want("same Gmail thread (X-GM-THRID)"))


def _flatten(group: Any) -> Iterator[int]:
    if isinstance(group, int):
        yield group
    else:
        for g in group:
            yield from _flatten(g)


