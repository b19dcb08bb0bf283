"""Fetching: raw bytes by UID in batches, parsed (in workers for large runs), saved."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

from grex import store
from grex.config import Account
from grex.errors import (
    ParseError,
)
from grex.ingest import catalog
from grex.ingest.imap.select import _gmail
from grex.ingest.imap.state import FETCH_BATCH, _checkpoint, _Counts
from grex.ingest.parse import parse_message
from grex.models import Location, Message, RawMessage

# ---------------------------------------------------------------- fetching


def fetch_raw(client: Any, account: Account, folder: str, uids: Sequence[int],
              batch: int | None = None) -> Iterator[list[tuple[int, RawMessage]]]:
    """Yield batches of (uid, RawMessage) for ``uids`` of ``folder`` (BODY.PEEK[]: \\Seen is
    never set). UIDs expunged meanwhile are simply absent. ``batch`` defaults to
    FETCH_BATCH, or GREX_SYNC_BATCH from the environment."""
    batch = batch or int(os.environ.get("GREX_SYNC_BATCH") or FETCH_BATCH)
    gmail = _gmail(client)
    items = [b"BODY.PEEK[]", b"FLAGS"] + ([b"X-GM-LABELS"] if gmail else [])
    source = location_source(account.name, folder)
    client.select_folder(folder, readonly=True)
    for i in range(0, len(uids), batch):
        chunk = list(uids[i:i + batch])
        out = []
        for uid, data in sorted(client.fetch(chunk, items).items()):
            body = data.get(b"BODY[]")
            if body is None:
                continue
            kws = [_text(f) for f in data.get(b"FLAGS", ()) if not _text(f).startswith("\\")]
            kws += [_text(lab) for lab in data.get(b"X-GM-LABELS", ())]
            out.append((int(uid), RawMessage(bytes(body), Location(source, folder,
                                                                   tuple(kws)))))
        yield out


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def location_source(account: str, folder: str) -> str:
    return f"imap:{account}/{folder}"


# ---------------------------------------------------------------- parsing

PARALLEL_MIN = 1000  # messages to fetch before parsing moves to worker processes


def _parse_all(datas: Sequence[bytes]) -> list[Message | str]:
    """Parse raw messages; a failure becomes its reason (the caller quarantines it)."""
    out: list[Message | str] = []
    for data in datas:
        try:
            out.append(parse_message(data))
        except ParseError as e:
            out.append(str(e))
    return out


class _Parsed:
    def __init__(self, futures: list[Any] | None, done: list[Message | str] | None) -> None:
        self._futures = futures
        self._done = done

    def result(self) -> list[Message | str]:
        if self._done is None:
            self._done = [m for f in self._futures or () for m in f.result()]
        return self._done


class _Parser:
    """Parses fetched batches, in this process by default. With GREX_SYNC_WORKERS=N (N > 1)
    a big sync parses in N worker processes, so parsing batch k overlaps fetching batch
    k+1. Off by default: on the 2-core machine it was measured on (shared, loaded), the
    workers made first syncs slower (scripts/bench_sync.py); try it on more cores."""

    def __init__(self, expected: int) -> None:
        self.pool: Any = None
        try:
            self.workers = int(os.environ.get("GREX_SYNC_WORKERS") or 1)
        except ValueError:
            self.workers = 1
        if expected >= PARALLEL_MIN and self.workers > 1:
            import concurrent.futures
            import multiprocessing

            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["grex.ingest.parse"])
            self.pool = concurrent.futures.ProcessPoolExecutor(self.workers, mp_context=ctx)

    def submit(self, batch: Sequence[tuple[int, RawMessage]]) -> _Parsed:
        datas = [raw.data for _, raw in batch]
        if self.pool is None:
            return _Parsed(None, _parse_all(datas))
        step = max(1, -(-len(datas) // self.workers))
        return _Parsed([self.pool.submit(_parse_all, datas[i:i + step])
                        for i in range(0, len(datas), step)], None)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------- saving


def save_batch(kb: Any, conn: Any, account: Account, folder: str, uidvalidity: int,
               batch: Sequence[tuple[int, RawMessage]], reasons: dict[int, str],
               counts: _Counts, *, subject_merge: bool = False,
               parsed: Sequence[Message | str] | None = None) -> None:
    """Store one fetched batch (parsed here unless ``parsed`` is given); its UID rows
    commit in the same transaction as the messages (the raw files are durable first)."""
    pairs: list[tuple[RawMessage, Message]] = []
    uid_mid: list[tuple[int, str]] = []
    kws: dict[int, str] = {uid: json.dumps(list(raw.location.keywords)) for uid, raw in batch}
    bad: list[tuple[RawMessage, str]] = []
    results = parsed if parsed is not None else _parse_all([r.data for _, r in batch])
    for (uid, raw), msg in zip(batch, results, strict=True):
        if isinstance(msg, str):
            bad.append((raw, msg))
            continue
        pairs.append((raw, msg))
        uid_mid.append((uid, msg.message_id))
        counts.bytes += len(raw.data)
    counts.fetched += len(batch)
    now = time.time()
    with store.transaction(conn):
        result = catalog.add_messages(kb, conn, pairs, subject_merge=subject_merge)
        _checkpoint("saved")
        for raw, reason in bad:
            store.quarantine(kb, conn, raw, reason)
        conn.executemany(
            "INSERT OR REPLACE INTO sync_message (account, folder, uidvalidity, uid, message_id,"
            " reason, added_at, keywords) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(account.name, folder, uidvalidity, uid, mid, reasons.get(uid, ""), now, kws[uid])
             for uid, mid in uid_mid])
    counts.new += len(result.added)
    counts.updated += result.duplicates
    counts.quarantined += len(bad)


