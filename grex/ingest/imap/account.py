"""One account's run (plan, fetch, unshare, state last), `sync` over all, and `why`."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

from grex import store
from grex.config import Account, Config
from grex.errors import (
    ConfigError,
    ConnectError,
    GrexError,
    KBError,
    SyncError,
)
from grex.ingest.imap.client import _close, _is_transient, connect
from grex.ingest.imap.fetch import _Parsed, _Parser, _text, fetch_raw, location_source, save_batch
from grex.ingest.imap.select import (
    _Selector,
    _Snapshot,
    _status,
    is_whole_folder,
    resolve_folders,
    selection_fingerprint,
)
from grex.ingest.imap.state import (
    HEADER_BATCH,
    MAX_ATTEMPTS,
    SCHEMA,
    AccountReport,
    PlanItem,
    Progress,
    SyncReport,
    WhyEntry,
    WhyReport,
    _checkpoint,
    _Counts,
)
from grex.ingest.imap.unshare import apply_removals
from grex.models import RawMessage

# ---------------------------------------------------------------- one account


def _refresh_keywords(conn: Any, client: Any, sel: _Selector, account: Account,
                      stored: dict[str, Any], current: dict[tuple[str, int], Any],
                      dry_run: bool) -> int:
    """UID FETCH FLAGS CHANGEDSINCE the folder's last HIGHESTMODSEQ over the held UIDs;
    records the new keywords. Returns how many held copies changed."""
    changed = 0
    gmail = sel.gmail
    by_folder: dict[str, list[Any]] = {}
    for (f, _), r in current.items():
        by_folder.setdefault(f, []).append(r)
    for f, rows in by_folder.items():
        st = stored.get(f)
        if st is None or not st["highestmodseq"] or st["uidvalidity"] != sel.uidvalidity[f]:
            continue
        sel.select(f)
        items = [b"FLAGS"] + ([b"X-GM-LABELS"] if gmail else [])
        held = {r["uid"]: r for r in rows}
        uids = sorted(held)
        resp: dict[int, Any] = {}
        for at in range(0, len(uids), HEADER_BATCH):  # imapclient wants int lists
            resp.update(client.fetch(uids[at:at + HEADER_BATCH], items,
                                     modifiers=[f"CHANGEDSINCE {int(st['highestmodseq'])}"]))
        updates = []
        located: list[tuple[str, list[str]]] = []
        for uid, data in resp.items():
            r = held.get(int(uid))
            if r is None:
                continue
            kws = [_text(x) for x in data.get(b"FLAGS", ()) if not _text(x).startswith("\\")]
            kws += [_text(x) for x in data.get(b"X-GM-LABELS", ())]
            if json.dumps(kws) != r["keywords"]:
                updates.append((json.dumps(kws), account.name, f, r["uidvalidity"], r["uid"]))
                located.append((r["message_id"], kws))
        changed += len(updates)
        if updates and not dry_run:
            source = location_source(account.name, f)
            with store.transaction(conn):
                conn.executemany("UPDATE sync_message SET keywords = ? WHERE account = ? AND "
                                 "folder = ? AND uidvalidity = ? AND uid = ?", updates)
                for mid, kws in located:  # the catalog's copy, so `label:` searches follow
                    store.update_location_keywords(conn, mid, source, kws)
    return changed


def _save(kb: Any, conn: Any, account: Account, folder: str, uidvalidity: int,
          pending: tuple[list[tuple[int, RawMessage]], _Parsed], reasons: dict[int, str],
          counts: _Counts, subject_merge: bool) -> int:
    batch, job = pending
    save_batch(kb, conn, account, folder, uidvalidity, batch, reasons, counts,
               subject_merge=subject_merge, parsed=job.result())
    return len(batch)


def _rows(conn: Any, account: str) -> list[Any]:
    return conn.execute("SELECT * FROM sync_message WHERE account = ?", (account,)).fetchall()


def _sync_account(kb: Any, conn: Any, client: Any, account: Account, *, full: bool,
                  dry_run: bool, counts: _Counts, progress: Progress | None,
                  subject_merge: bool = False) -> None:
    condstore = bool(client.has_capability("CONDSTORE"))
    folders = resolve_folders(client, account)
    counts.folders = len(folders)
    fp = selection_fingerprint(account, folders)
    snaps = {f: _status(client, f, condstore) for f in folders}
    stored = {r["folder"]: r for r in conn.execute(
        "SELECT * FROM sync_folder WHERE account = ?", (account.name,))}

    def unchanged(f: str) -> bool:
        r, s = stored.get(f), snaps[f]
        if not condstore and not is_whole_folder(account):
            return False  # keyword changes are invisible without HIGHESTMODSEQ: search again
        return (r is not None and r["selection"] == fp and r["uidvalidity"] == s.uidvalidity
                and r["uidnext"] == s.uidnext and r["messages"] == s.messages
                and (not condstore or r["highestmodseq"] == s.highestmodseq))

    changed = [f for f in folders if full or not unchanged(f)]
    gone = [f for f in stored if f not in folders]
    rows = _rows(conn, account.name)
    gone_rows = [r for r in rows if r["folder"] not in folders]
    counts.changed_folders = len(changed)
    if not changed and not gone and not gone_rows:
        return

    sel = _Selector(client, account, folders)
    cross_folder = account.whole_thread and not is_whole_folder(account)
    scope = folders if (cross_folder and changed) else changed
    desired = sel.seeds(scope)
    if cross_folder:
        sel.complete_threads(desired)
    for f in scope:
        sel.select(f)  # every scoped folder's UIDVALIDITY is known even when nothing matched

    # Existing rows in scope: current (same UIDVALIDITY) or stale (to be re-matched).
    current: dict[tuple[str, int], Any] = {}
    stale: dict[str, dict[str, list[Any]]] = {}
    for r in rows:
        f = r["folder"]
        if f not in scope:
            continue
        if r["uidvalidity"] == sel.uidvalidity[f]:
            current[(f, r["uid"])] = r
        else:
            stale.setdefault(f, {}).setdefault(r["message_id"], []).append(r)

    add: dict[str, list[int]] = {}
    rematch: list[tuple[Any, int]] = []
    for f in scope:
        wanted = sorted(u for g, u in desired if g == f and (g, u) not in current)
        if f in stale and wanted:
            hdrs = sel.headers_for(f, wanted)
            keep_wanted = []
            for u in wanted:
                h = hdrs.get(u)
                mid = h.message_id if h else ""
                old = stale[f].get(mid) if mid else None
                if old:
                    rematch.append((old.pop(), u))
                    if not old:
                        del stale[f][mid]
                else:
                    keep_wanted.append(u)
            wanted = keep_wanted
        if wanted:
            add[f] = wanted

    removals = [r for k, r in current.items() if k not in desired]
    removals += [r for by_mid in stale.values() for rs in by_mid.values() for r in rs]
    removals += gone_rows

    # The plan (what --dry-run shows).
    for f, uids in add.items():
        hdrs = sel.headers_for(f, uids) if dry_run else {}
        for u in uids:
            h = hdrs.get(u) or desired[(f, u)].header
            counts.plan.append(PlanItem("add", account.name, f, u, h.message_id if h else "",
                                        h.subject if h else "", desired[(f, u)].reason))
    for r, u in rematch:
        counts.plan.append(PlanItem("rematch", account.name, r["folder"], u, r["message_id"],
                                    "", f"UIDVALIDITY changed; was uid {r['uid']}"))
    unshare = "remove" if account.on_unshare == "remove" else "keep"
    for r in removals:
        why = ("folder no longer configured" if r["folder"] not in folders
               else "no longer chosen (unshared or deleted on the server)")
        counts.plan.append(PlanItem(unshare, account.name, r["folder"], r["uid"],
                                    r["message_id"], "", why))
    if dry_run:
        counts.new = sum(len(v) for v in add.values())
        counts.removed = len(removals) if unshare == "remove" else 0
        counts.updated = len(rematch)
        return

    # 0. keywords of held copies changed since the last sync (CONDSTORE): cheap, exact.
    if condstore:
        counts.updated += _refresh_keywords(conn, client, sel, account, stored, current,
                                            dry_run)

    # 1. re-matched UIDs: no fetch.
    if rematch:
        with store.transaction(conn):
            conn.executemany(
                "UPDATE sync_message SET uid = ?, uidvalidity = ? WHERE account = ?"
                " AND folder = ? AND uid = ? AND uidvalidity = ?",
                [(u, sel.uidvalidity[r["folder"]], account.name, r["folder"], r["uid"],
                  r["uidvalidity"]) for r, u in rematch])
        counts.updated += len(rematch)

    # 2. fetch and save, batch by batch.
    total = sum(len(v) for v in add.values())
    done = 0
    parser = _Parser(total)
    try:
        for f, uids in add.items():
            reasons = {u: desired[(f, u)].reason for u in uids}
            pending: tuple[list[tuple[int, RawMessage]], _Parsed] | None = None
            for batch in fetch_raw(client, account, f, uids):
                _checkpoint("fetched")
                job = parser.submit(batch)  # parsing overlaps the next FETCH
                if pending:
                    done += _save(kb, conn, account, f, sel.uidvalidity[f], pending, reasons,
                                  counts, subject_merge)
                    if progress:
                        progress(f"{account.name}/{f}", done, total)
                pending = (batch, job)
            if pending:
                done += _save(kb, conn, account, f, sel.uidvalidity[f], pending, reasons,
                              counts, subject_merge)
                if progress:
                    progress(f"{account.name}/{f}", done, total)
            sel._selected = f
    finally:
        parser.close()

    # 3. removals, after every fetch (a message moved between folders never leaves).
    counts.removed += apply_removals(kb, conn, account, removals, unshare=unshare,
                                     subject_merge=subject_merge)

    # 4. folder state last.
    now = time.time()
    with store.transaction(conn):
        _write_state(conn, account, changed, gone, snaps, fp, now)


def _write_state(conn: Any, account: Account, changed: Sequence[str], gone: Sequence[str],
                 snaps: dict[str, _Snapshot], fp: str, now: float) -> None:
    conn.executemany(
        "INSERT OR REPLACE INTO sync_folder (account, folder, uidvalidity, uidnext, messages,"
        " highestmodseq, selection, synced_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(account.name, f, snaps[f].uidvalidity, snaps[f].uidnext, snaps[f].messages,
          snaps[f].highestmodseq, fp, now) for f in changed])
    conn.executemany("DELETE FROM sync_folder WHERE account = ? AND folder = ?",
                     [(account.name, f) for f in gone])
    _checkpoint("state")


def sync_account(kb: Any, conn: Any, account: Account, *, full: bool = False,
                 dry_run: bool = False, progress: Progress | None = None,
                 subject_merge: bool = False,
                 client_factory: Callable[[Account], Any] = connect,
                 sleep: Callable[[float], None] = time.sleep) -> AccountReport:
    """Sync one account, retrying dropped connections with backoff (0.25 s doubling, up to
    6 attempts); each attempt resumes from what the previous one saved."""
    ensure_schema(conn)
    counts = _Counts()
    delay = 0.25
    for attempt in range(1, MAX_ATTEMPTS + 1):
        client = None
        try:
            client = client_factory(account)
            _sync_account(kb, conn, client, account, full=full, dry_run=dry_run,
                          counts=counts, progress=progress, subject_merge=subject_merge)
            break
        except GrexError:
            raise
        except Exception as e:
            if not _is_transient(e):
                if isinstance(e, OSError | sqlite3.Error):
                    raise KBError(f"account {account.name!r}: the knowledge base could not "
                                  f"be written: {type(e).__name__}: {e}") from e
                raise SyncError(f"account {account.name!r}: IMAP error: "
                                f"{type(e).__name__}: {e}") from e
            if attempt == MAX_ATTEMPTS:
                raise ConnectError(f"account {account.name!r}: {e}",
                                   hint=f"gave up after {attempt} attempts") from None
            counts.retries += 1
            counts.plan.clear()
            sleep(delay)
            delay = min(delay * 2, 8.0)
        finally:
            if client is not None:
                _close(client)
    return AccountReport(account.name, counts.folders, counts.changed_folders, counts.new,
                         counts.updated, counts.removed, counts.quarantined, counts.fetched,
                         counts.bytes, counts.retries, tuple(counts.plan))


def ensure_schema(conn: Any) -> None:
    store.ensure_schema(conn, "sync", SCHEMA)


def sync(kb: Any, conn: Any, config: Config, *, account: str | None = None, full: bool = False,
         dry_run: bool = False, progress: Progress | None = None,
         client_factory: Callable[[Account], Any] = connect,
         sleep: Callable[[float], None] = time.sleep) -> SyncReport:
    """Sync every configured account (or the one named). The caller holds the KB's writer
    lock (not needed for ``dry_run``)."""
    ensure_schema(conn)
    accounts = (config.account(account),) if account else config.accounts
    if not accounts:
        raise ConfigError("no accounts configured",
                          hint="add an [[accounts]] table to grex.toml (see docs/sync.md)")
    reports = [sync_account(kb, conn, a, full=full, dry_run=dry_run, progress=progress,
                            subject_merge=config.threading.subject_merge,
                            client_factory=client_factory, sleep=sleep) for a in accounts]
    if account is None:  # only a sync of every account knows which ones were retired
        reports += retire_accounts(kb, conn, {a.name for a in accounts}, dry_run=dry_run,
                                   subject_merge=config.threading.subject_merge)
    return SyncReport(tuple(reports), dry_run)


def retire_accounts(kb: Any, conn: Any, configured: set[str], *, dry_run: bool,
                    subject_merge: bool) -> list[AccountReport]:
    """Copies held for an account that grex.toml no longer lists leave: a member who
    removes their account stops sharing everything at once. Their messages stay in the KB
    where another account (or an import) still shares them."""
    ensure_schema(conn)
    names = [r[0] for r in conn.execute("SELECT DISTINCT account FROM sync_message")
             if r[0] not in configured]
    out = []
    for name in names:
        rows = _rows(conn, name)
        plan = tuple(PlanItem("remove", name, r["folder"], r["uid"], r["message_id"], "",
                              "account no longer configured") for r in rows)
        removed = len(rows) if dry_run else apply_removals(
            kb, conn, Account(name=name, host=""), rows, unshare="remove",
            subject_merge=subject_merge)
        if not dry_run:
            with store.transaction(conn):
                conn.execute("DELETE FROM sync_folder WHERE account = ?", (name,))
        out.append(AccountReport(name, removed=removed, plan=plan))
    return out


# ---------------------------------------------------------------- why


def why(conn: Any, thread_id: str) -> WhyReport:
    """Why a thread is in the KB: which account/folder/UID holds each message and why."""
    ensure_schema(conn)
    thread = store.get_thread(conn, thread_id)
    if thread is None:
        raise GrexError(f"no thread {thread_id!r} in the knowledge base",
                        hint="`grex threads` lists them")
    entries: list[WhyEntry] = []
    others: list[str] = []
    subjects: dict[str, str] = {}
    for mid in thread.message_ids:
        m = store.get_message(conn, mid)
        subjects[mid] = m.subject if m else ""
        for r in conn.execute("SELECT * FROM sync_message WHERE message_id = ?"
                              " ORDER BY account, folder, uid", (mid,)):
            entries.append(WhyEntry(mid, subjects[mid], r["account"], r["folder"], r["uid"],
                                    r["reason"], tuple(json.loads(r["keywords"]))))
        for loc in store.message_locations(conn, mid):
            if not loc.source.startswith("imap:") and loc.source not in others:
                others.append(loc.source)
    shared_by = tuple(sorted({e.account for e in entries}))
    return WhyReport(thread.thread_id, thread.subject, shared_by, tuple(entries), tuple(others))
