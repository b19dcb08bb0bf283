"""grex's search index (Whoosh): the index stage, its generations and rebuilds.

The schema and analyzers are in ``grex.search.schema``, the documents in
``grex.search.documents``; the bulk writer of full builds in ``grex.search.bulk``.

Granularity: **one Whoosh document per message**, carrying its thread id.

* Queries keep notmuch's and mu's meaning: a query matches *messages* (``from:``, ``date:``,
  ``id:`` are properties of one message); a thread matches when one of its messages does.
  A thread-level document would make ``from:alice date:2024-01..`` match a thread where
  Alice wrote in 2019 and someone else in 2024.
* Updates stay proportional to what changed: a new reply is one ``update_document``, while a
  thread document would re-index the whole conversation on every reply (quadratic for long
  threads).
* Snippets, dates and ``--messages`` come straight from the matching message.

Thread results are built at search time (grex.search): messages are grouped by the
``thread_id`` column, a thread scores as its best message, and its matched message ids are
the matching messages of that thread. Thread-level knowledge (topics) is copied onto each
message document of the thread, so a thread's topics can be searched and shown without the
catalog.

Text fields: ``body`` holds what the message adds (Body.new), ``quoted`` holds quoted text
and the signature with a low field boost, so a reply that only quotes a term ranks below
the message that wrote it. Analyzer: ``\\w+`` tokens, lowercase, accent folding, Snowball
English (Porter2) stemming by PyStemmer, in C (whoosh's default Porter stemmer mis-stems
"running" -> "runn"; its pure-Python Porter2 took 15 % of an index build and is an older
version of the algorithm: "added" -> "ad"), unbounded stem cache; no stop list (``"Mac OS
X"`` and ``"to be or not"`` stay searchable). Names and addresses use the same analyzer
without stemming, so ``from:redhat.com`` is the phrase ``redhat com`` and matches every
address at that domain.

On disk: ``KB/index`` is a symlink to one generation directory ``KB/index.d/gen-NNNNNN``.
A rebuild writes a new generation and swaps the symlink with one ``rename()``, so a reader
opens either the old complete index or the new complete one, never half of one. Readers
resolve the symlink once (``realpath``) and keep using that directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from grex.errors import IndexError_
from grex.models import Message
from grex.search.documents import (
    IndexReport,
    Knowledge,
    knowledge_source,
    message_document,
    validate_document,
)
from grex.search.schema import (
    GENERATIONS_DIR,
    INDEX_LINK,
    META_FILE,
    PARALLEL_FROM,
    SCHEMA_VERSION,
    SEGMENT_LIMIT,
    WRITER_TIMEOUT,
    make_schema,
    open_index,
)

# ------------------------------------------------------------------------ directories


def index_link(kb_path: Path) -> Path:
    return Path(kb_path) / INDEX_LINK


def current_index_dir(kb_path: Path) -> Path | None:
    """The generation directory ``KB/index`` points at (resolved once), or None."""
    link = index_link(kb_path)
    if not link.exists():
        return None
    real = Path(os.path.realpath(link))
    if not (real / META_FILE).exists():
        return None
    return real


def read_meta(index_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((index_dir / META_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _new_generation(kb_path: Path) -> Path:
    gens = Path(kb_path) / GENERATIONS_DIR
    gens.mkdir(exist_ok=True)
    numbers = [int(p.name[4:]) for p in gens.glob("gen-*") if p.name[4:].isdigit()]
    path = gens / f"gen-{max(numbers, default=0) + 1:06d}"
    path.mkdir()
    return path


def _write_meta(index_dir: Path, **extra: Any) -> None:
    meta = {"schema_version": SCHEMA_VERSION, "granularity": "message",
            "analyzer": "regex-w+/lower/accent/snowball-english", **extra}
    tmp = index_dir / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, index_dir / META_FILE)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_tree(path: Path) -> None:
    # Whoosh never fsyncs; a fresh generation is fsynced before it is swapped in.
    for p in path.iterdir():
        if p.is_file():
            with contextlib.suppress(OSError):
                fd = os.open(p, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
    _fsync_dir(path)


def swap_in(kb_path: Path, gen_dir: Path) -> None:
    """Point ``KB/index`` at ``gen_dir`` atomically; drop generations older than the
    previous one (a reader that resolved the previous one may still be using it)."""
    kb_path = Path(kb_path)
    link = index_link(kb_path)
    previous = Path(os.path.realpath(link)) if link.is_symlink() else None
    if link.exists() and not link.is_symlink():
        # a plain directory (older layout or created by `grex init`): move it aside first
        aside = kb_path / GENERATIONS_DIR / f"old-{int(time.time() * 1000)}"
        aside.parent.mkdir(exist_ok=True)
        os.replace(link, aside)
        previous = aside
    tmp = kb_path / f".{INDEX_LINK}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(os.path.relpath(gen_dir, kb_path), tmp)
    os.replace(tmp, link)
    _fsync_dir(kb_path)
    keep = {gen_dir.resolve()} | ({previous.resolve()} if previous else set())
    for p in (kb_path / GENERATIONS_DIR).iterdir():
        if p.resolve() not in keep and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


# ------------------------------------------------------------------------------ writing


def _store() -> Any:
    from grex import store  # noqa: PLC0415 - the writer side needs the catalog

    return store


def _writer(ix: Any, cls: Any = None, **kwargs: Any) -> Any:
    """A Whoosh writer that waits for the write lock instead of failing at once."""
    from whoosh.index import LockError  # noqa: PLC0415

    try:
        if cls is not None:
            return cls(ix, timeout=WRITER_TIMEOUT, delay=0.05, **kwargs)
        return ix.writer(timeout=WRITER_TIMEOUT, delay=0.05, **kwargs)
    except LockError as exc:
        raise IndexError_("the search index is being written by another process",
                          hint="wait for it to finish and retry") from exc


def _locations(conn: Any, ids: list[str] | None) -> dict[str, tuple[list[str], list[str]]]:
    """message id -> (folders, labels), for ``ids`` (None: every message)."""
    out: dict[str, tuple[list[str], list[str]]] = {}
    if ids is None:
        rows = conn.execute("SELECT message_id, folder, keywords_json FROM locations")
        chunks: Iterable[Any] = [rows]
    else:
        chunks = (conn.execute("SELECT message_id, folder, keywords_json FROM locations "
                               f"WHERE message_id IN ({','.join('?' * len(c))})", c)
                  for c in (ids[i:i + 500] for i in range(0, len(ids), 500)))
    for rows in chunks:
        for r in rows:
            folders, labels = out.setdefault(r[0], ([], []))
            if r[1]:
                folders.append(r[1])
            with contextlib.suppress(ValueError):
                labels.extend(str(k) for k in json.loads(r[2] or "[]"))
    return out


def _thread_ids(conn: Any, ids: list[str] | None) -> dict[str, tuple[str, str]]:
    """message id -> (thread id, raw path)."""
    sql = "SELECT message_id, thread_id, raw_path FROM messages"
    if ids is None:
        return {r[0]: (r[1] or r[0], r[2]) for r in conn.execute(sql)}
    out: dict[str, tuple[str, str]] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        out.update({r[0]: (r[1] or r[0], r[2]) for r in conn.execute(
            f"{sql} WHERE message_id IN ({','.join('?' * len(chunk))})", chunk)})
    return out


def mime_flags(raw: bytes) -> tuple[str, ...]:
    """"signed" / "encrypted" of a raw message (for catalog rows stored before the parser
    kept them)."""
    from grex.ingest import mime_security  # noqa: PLC0415

    return mime_security(raw)


class _DocBuilder:
    """Message -> document, with thread ids, locations, MIME flags and thread knowledge."""

    def __init__(self, kb: Any, conn: Any, ids: list[str] | None) -> None:
        self.raw_dir = Path(kb.path) / "raw"
        self.rows = _thread_ids(conn, ids)
        self.where = _locations(conn, ids)
        self.knowledge = knowledge_source(conn)
        self._cache: dict[str, Knowledge | None] = {}
        self.used_knowledge = False

    def _flags(self, raw_path: str) -> tuple[str, ...]:
        if not raw_path:
            return ()
        try:
            with open(self.raw_dir / raw_path, "rb") as fh:
                return mime_flags(fh.read(4 << 20))
        except OSError:
            return ()

    def __call__(self, msg: Message) -> dict[str, Any]:
        tid, raw_path = self.rows.get(msg.message_id, (msg.message_id, ""))
        k = None
        if self.knowledge is not None:
            if tid not in self._cache:
                self._cache[tid] = self.knowledge(tid)
                if len(self._cache) > 5000:
                    self._cache.pop(next(iter(self._cache)))
            k = self._cache[tid]
            self.used_knowledge = self.used_knowledge or k is not None
        folders, labels = self.where.get(msg.message_id, ([], []))
        flags = msg.security if msg.security is not None else self._flags(raw_path)
        return message_document(msg, thread_id=tid, folders=folders, labels=labels,
                                knowledge=k, flags=flags)


class _Ticker:
    """Progress in steps: tick() per document, progress(n, total) every ``step``."""

    def __init__(self, progress: Callable[..., None] | None, total: int | None,
                 step: int = 250) -> None:
        self.progress, self.total, self.step, self.pending = progress, total, step, 0

    def __call__(self, n: int = 1) -> None:
        if self.progress is None:
            return
        self.pending += n
        if self.pending >= self.step:
            self.flush()

    def flush(self) -> None:
        if self.progress is not None and self.pending:
            self.progress(self.pending, self.total)
            self.pending = 0


def _progress_every(progress: Callable[..., None] | None, total: int | None,
                    step: int = 250) -> _Ticker:
    return _Ticker(progress, total, step)


def rebuild_index(kb: Any, conn: Any, *, progress: Callable[..., None] | None = None,
                  procs: int | None = None, limitmb: int = 256) -> IndexReport:
    """Build a complete new index generation from the catalog and swap it in atomically.

    The caller holds the KB writer lock. The cursor is set to the change-feed position read
    *before* the build, and only after the swap: changes that land meanwhile are replayed
    by the next incremental run (updates are idempotent).
    """
    from whoosh import index as wix  # noqa: PLC0415

    store = _store()
    started = time.monotonic()
    kb_path = Path(kb.path)
    seq = store.last_seq(conn)
    total = int(conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
    if procs is None:
        procs = 2 if total >= PARALLEL_FROM and (os.cpu_count() or 1) >= 2 else 1
    gen = _new_generation(kb_path)
    try:
        documents, skipped, used = _build(wix, kb, gen, conn, total, procs, limitmb, progress)
        ix = open_index(str(gen))
        counted = ix.doc_count()
        if counted != documents and procs > 1:
            # a multiprocess writer drops a failed worker's share silently: start again
            shutil.rmtree(gen, ignore_errors=True)
            gen.mkdir()
            documents, skipped, used = _build(wix, kb, gen, conn, total, 1, limitmb, None)
            ix = open_index(str(gen))
            counted = ix.doc_count()
        if counted != documents:
            raise IndexError_(f"the new index holds {counted} documents, expected {documents}",
                              hint="the previous index is still in use; retry `grex reindex`")
        segments = len(ix._segments())
        ix.close()
        _write_meta(gen, documents=documents, seq=seq, procs=procs,
                    built_at=datetime.now(UTC).isoformat(timespec="seconds"))
        _fsync_tree(gen)
        swap_in(kb_path, gen)
    except BaseException:
        shutil.rmtree(gen, ignore_errors=True)
        raise
    store.set_cursor(conn, "index", seq)
    return IndexReport(indexed=documents, rebuilt=True, documents=documents, segments=segments,
                       seconds=time.monotonic() - started, skipped=tuple(skipped),
                       knowledge=used)


def _build(wix: Any, kb: Any, gen: Path, conn: Any, total: int, procs: int, limitmb: int,
           progress: Callable[..., None] | None) -> tuple[int, list[str], bool]:
    """Write every catalog message into the new generation ``gen``.

    With ``procs`` > 1 the messages (in id order) are cut into ``procs`` runs of equal size:
    this process indexes the first into ``gen`` while worker processes each index one into
    a directory of their own, from the catalog (nothing but ids crosses processes); then
    their segments are moved into ``gen`` and listed in one table of contents. Document
    numbers keep the message-id order of a one-process build. A failed worker fails the
    build (no share is dropped silently, unlike Whoosh's multiprocess writer).
    """
    ids = [r[0] for r in conn.execute("SELECT message_id FROM messages ORDER BY message_id")]
    procs = max(1, min(procs, len(ids)))
    if procs == 1:
        return _build_part(wix, kb, conn, gen, ids, limitmb, progress, total)
    from concurrent.futures import ProcessPoolExecutor  # noqa: PLC0415

    size = -(-len(ids) // procs)
    runs = [ids[i:i + size] for i in range(0, len(ids), size)]
    parts = [gen / f"part-{n}" for n in range(1, len(runs))]
    with ProcessPoolExecutor(max_workers=len(parts), mp_context=_mp_context()) as pool:
        futures = [pool.submit(_build_worker, str(kb.path), str(part), run, limitmb)
                   for part, run in zip(parts, runs[1:], strict=True)]
        # progress: the workers go at this process's pace, so each document here counts
        # for one per run; the rest is reported when they are done
        documents, skipped, used = _build_part(wix, kb, conn, gen, runs[0], limitmb,
                                               progress, total, weight=len(runs))
        for fut in futures:
            d, s, u = fut.result()  # re-raises a worker's error
            documents, used = documents + d, used or u
            skipped.extend(s)
    _join_parts(wix, gen, parts)
    if progress is not None and total and len(runs[0]) * len(runs) < total:
        progress(total - len(runs[0]) * len(runs), total)
    return documents, skipped, used


def _mp_context() -> Any:
    """fork where it is safe (POSIX, no other thread alive): no re-import of ``__main__``
    (a script calling rebuild_index without a ``__main__`` guard would run again in a
    spawned worker) and no start-up imports; spawn otherwise."""
    import multiprocessing  # noqa: PLC0415
    import threading  # noqa: PLC0415

    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _build_worker(kb_path: str, part: str, ids: list[str],
                  limitmb: int) -> tuple[int, list[str], bool]:
    """One worker's share of a parallel build (runs in a fresh process)."""
    from whoosh import index as wix  # noqa: PLC0415

    store = _store()
    kb = store.KB.open(Path(kb_path))
    conn = kb.connect(readonly=True)
    try:
        Path(part).mkdir()
        return _build_part(wix, kb, conn, Path(part), ids, limitmb, None, None)
    finally:
        conn.close()


def _join_parts(wix: Any, gen: Path, parts: list[Path]) -> None:
    """Move the parts' segment files into ``gen`` and list all segments in one new TOC."""
    from whoosh.index import TOC  # noqa: PLC0415

    ix = open_index(str(gen))
    toc = ix._read_toc()
    segments = list(toc.segments)
    for part in parts:
        pix = open_index(str(part))
        segments.extend(pix._segments())
        pix.close()
        for f in part.iterdir():
            if f.is_file() and not f.name.endswith(".toc") and "LOCK" not in f.name:
                os.replace(f, gen / f.name)
        shutil.rmtree(part)
    TOC(toc.schema, segments, toc.generation + 1).write(ix.storage, ix.indexname)
    ix.close()


def _iter_catalog(conn: Any, ids: list[str], chunk: int = 500) -> Iterable[Message]:
    store = _store()
    for i in range(0, len(ids), chunk):
        part = ids[i:i + chunk]
        found = store.get_messages(conn, part)
        for mid in part:
            msg = found.get(mid)
            if msg is not None:
                yield msg


def _build_part(wix: Any, kb: Any, conn: Any, gen: Path, ids: list[str], limitmb: int,
                progress: Callable[..., None] | None, total: int | None,
                weight: int = 1) -> tuple[int, list[str], bool]:
    """Index the messages ``ids`` into a new index at ``gen`` (a new segment whenever the
    held postings reach ``limitmb``)."""
    from grex.search.bulk import BulkWriter  # noqa: PLC0415

    ix = wix.create_in(str(gen), make_schema())
    build = _DocBuilder(kb, conn, ids)
    tick = _progress_every(progress, total)
    documents = 0
    skipped: list[str] = []
    writer = _writer(ix, cls=BulkWriter, limitmb=limitmb)
    try:
        for msg in _iter_catalog(conn, ids):
            try:
                doc = build(msg)
                validate_document(doc)
            except (ValueError, TypeError) as exc:
                skipped.append(f"{msg.message_id}: {exc}")
                continue
            writer.add_document(**doc)
            documents += 1
            tick(weight)
            if writer.full:
                writer.commit(merge=False)
                writer = _writer(ix, cls=BulkWriter, limitmb=limitmb)
        tick.flush()
        writer.commit(merge=False)
    except BaseException:
        with contextlib.suppress(Exception):
            writer.cancel()
        raise
    finally:
        ix.close()
    return documents, skipped, build.used_knowledge


DELETED_SHARE = 1 / 3  # a segment with more deleted documents than this is rewritten


def _merge_policy(merged: list[Any]) -> Callable[[Any, list[Any]], list[Any]]:
    """A Whoosh merge function (``commit(mergetype=...)``): Whoosh's own MERGE_SMALL
    (tiny segments, such as one sync's, go into the new one), then, while more than
    SEGMENT_LIMIT segments would be left, the smallest of the others too, and any segment
    that is mostly deleted documents (unshared mail). Large segments are left alone:
    Whoosh merges posting by posting in Python (about 4 ms a document), so merging
    everything (optimize) would cost minutes at 100k messages on every sync that passed
    the limit. The merged segments are appended to ``merged``."""

    def policy(writer: Any, segments: list[Any]) -> list[Any]:
        from whoosh.reading import SegmentReader  # noqa: PLC0415
        from whoosh.writing import MERGE_SMALL  # noqa: PLC0415

        rest = MERGE_SMALL(writer, segments)
        merged.extend(seg for seg in segments if seg not in rest)
        by_size = sorted(rest, key=lambda seg: seg.doc_count())
        chosen = [seg for seg in by_size
                  if seg.deleted_count() > DELETED_SHARE * max(1, seg.doc_count_all())]
        keep = [seg for seg in by_size if seg not in chosen]
        # the new segment counts as one (what is merged goes into it)
        while len(keep) + 1 > SEGMENT_LIMIT and keep:
            chosen.append(keep.pop(0))
        for seg in chosen:
            reader = SegmentReader(writer.storage, writer.schema, seg)
            writer.add_reader(reader)
            reader.close()
        merged.extend(chosen)
        return keep

    return policy


def run_index(kb: Any, conn: Any, config: Any = None, *, rebuild: bool = False,
              progress: Callable[..., None] | None = None,
              procs: int | None = None) -> IndexReport:
    """The index stage: bring the index up to date with the catalog's change feed.

    Rebuilds when asked, when there is no index, or when it was built by another schema
    version. Otherwise: upserted messages are replaced by id (each id once per writer:
    two updates of one id in one Whoosh writer leave duplicates), deleted messages and
    threads are removed, messages of changed threads are re-indexed (their thread id or
    thread knowledge changed). The cursor moves only after the commit. The caller holds
    the KB writer lock.
    """
    if config is not None and not getattr(getattr(config, "index", None), "enabled", True):
        return IndexReport()
    kb_path = Path(kb.path)
    current = current_index_dir(kb_path)
    if rebuild or current is None or read_meta(current).get("schema_version") != SCHEMA_VERSION:
        return rebuild_index(kb, conn, progress=progress, procs=procs)

    store = _store()
    started = time.monotonic()
    changes, last = store.changes_since(conn, "index")
    if not changes:
        return IndexReport(seconds=time.monotonic() - started)
    upserts: dict[str, None] = {}
    deletes: set[str] = set()
    dead_threads: set[str] = set()
    live_threads: set[str] = set()
    for ch in changes:
        if ch.kind == "message":
            if ch.op == "delete":
                deletes.add(ch.key)
                upserts.pop(ch.key, None)
            else:
                upserts[ch.key] = None
                deletes.discard(ch.key)
        elif ch.kind == "thread":
            (dead_threads if ch.op == "delete" else live_threads).add(ch.key)
    for tid in live_threads:
        for r in conn.execute("SELECT message_id FROM messages WHERE thread_id = ?", (tid,)):
            if r[0] not in deletes:
                upserts[r[0]] = None
    ids = list(upserts)
    messages = store.get_messages(conn, ids) if ids else {}
    deletes.update(mid for mid in ids if mid not in messages)  # gone since it was logged
    build = _DocBuilder(kb, conn, [mid for mid in ids if mid in messages])
    from grex.search.bulk import BulkWriter  # noqa: PLC0415

    ix = open_index(str(current))
    writer = _writer(ix, cls=BulkWriter, limitmb=128)
    tick = _progress_every(progress, len(messages))
    indexed = 0
    skipped: list[str] = []
    try:
        for mid in deletes:
            writer.delete_by_term("id", mid)
        for tid in dead_threads - live_threads:
            writer.delete_by_term("thread_id", tid)
        for mid in ids:
            msg = messages.get(mid)
            if msg is None:
                continue
            try:
                doc = build(msg)
                validate_document(doc)
            except (ValueError, TypeError) as exc:
                skipped.append(f"{mid}: {exc}")
                writer.delete_by_term("id", mid)
                continue
            writer.update_document(**doc)
            indexed += 1
            tick()
        tick.flush()
        merged: list[Any] = []
        writer.commit(mergetype=_merge_policy(merged))
        optimize = bool(merged)
    except BaseException:
        with contextlib.suppress(Exception):
            writer.cancel()
        raise
    store.set_cursor(conn, "index", last)
    ix = open_index(str(current))
    report = IndexReport(indexed=indexed, deleted=len(deletes), documents=ix.doc_count(),
                         segments=len(ix._segments()), optimized=optimize,
                         seconds=time.monotonic() - started, skipped=tuple(skipped),
                         knowledge=build.used_knowledge)
    ix.close()
    return report
