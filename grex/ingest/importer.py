"""Offline import: mbox files (Google Takeout too), Maildirs, .eml files and folders of them.

``scan`` yields RawMessage records (fetching); ``import_messages`` parses and saves them
(saving). Directories are read as notmuch reads them: every regular file below, including
files outside cur/ and new/, except Maildir tmp/ folders and dot-files. A file that starts
with an mbox "From " line is split into its messages. Importing the same copy twice adds
nothing: a copy is keyed by where it was found plus the hash of its bytes.
"""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing
import os
import re
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from grex import store
from grex.errors import ImportSourceError, ParseError
from grex.ingest import catalog
from grex.ingest.parse import parse_message
from grex.models import ImportReport, Location, Message, Quarantined, RawMessage

BATCH = 500
POOL_THRESHOLD = 256  # fewer messages than this are parsed in-process
_FROM_LINE = re.compile(rb"^From \S*.*$")
# a From_ line by its full shape: "From ADDR DATE" with an asctime date (pipermail writes the
# address as "user at host"; some writers add a zone or trailing words after the year)
_FROM_SHAPE = re.compile(
    rb"^From (?:\S+(?: at \S+)?)? +(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),? +)?"
    rb"(?:(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +\d{1,2}"
    rb"|\d{1,2} +(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec))(?: +\d{4})?"
    rb" +\d{1,2}:\d\d(?::\d\d)?(?: +[A-Za-z]{1,5})?(?: +\d{4})?(?:\s.*)?$")
_BOM = b"\xef\xbb\xbf"
_SKIP_DIRS = {"tmp", ".notmuch", ".git", "__pycache__"}

Progress = Callable[[int], None]


def _is_mbox(head: bytes) -> bool:
    head = head.removeprefix(_BOM)
    return head.startswith(b"From ") and b"\n" in head and _FROM_LINE.match(head.split(b"\n")[0])\
        is not None


class _Separators:
    """Which "From " lines of one mbox start a message. When the file's first From_ line has
    the full shape (address and asctime date), every line of that shape does, blank line
    before it or not (MimeKit's and gmime's mboxes omit it), and no other line does: an
    unescaped "From debugging I see..." in a pipermail body stays body text. A file whose
    first From_ line lacks the shape falls back to the classic rule (a "From " line after a
    blank line)."""

    def __init__(self) -> None:
        self.strict: bool | None = None

    def starts(self, line: bytes, prev_blank: bool) -> bool:
        if not line.startswith(b"From "):
            return False
        bare = line.rstrip(b"\r\n")
        if self.strict is None:
            if not prev_blank or not _FROM_LINE.match(bare):
                return False
            self.strict = _FROM_SHAPE.match(bare) is not None
            return True
        if self.strict:
            return _FROM_SHAPE.match(bare) is not None
        return prev_blank and _FROM_LINE.match(bare) is not None


def iter_mbox(path: Path) -> Iterator[tuple[int, bytes]]:
    """Messages of an mbox as (index, bytes), streaming; '>From ' quoting is undone (mboxrd)."""
    current: list[bytes] = []
    index = -1
    prev_blank = True
    separators = _Separators()
    with path.open("rb") as f:
        for n, line in enumerate(f):
            if n == 0:
                line = line.removeprefix(_BOM)
            if separators.starts(line, prev_blank):
                if index >= 0 and any(x.strip() for x in current):
                    yield index, _finish(current)
                index += 1
                current = []
                prev_blank = False
                continue
            if index < 0:
                if line.strip():
                    index = 0  # no leading From_ line: treat the text as one message
                else:
                    continue
            if line.startswith(b">") and line.lstrip(b">").startswith(b"From "):
                line = line[1:]
            current.append(line)
            prev_blank = line in (b"\n", b"\r\n")
    if index >= 0 and any(x.strip() for x in current):
        yield index, _finish(current)


def iter_mbox_starts(f: Iterable[bytes]) -> Iterator[int]:
    """The line numbers where an mbox's messages start (the rule iter_mbox splits by)."""
    separators = _Separators()
    prev_blank = True
    for n, line in enumerate(f):
        if n == 0:
            line = line.removeprefix(_BOM)
        if separators.starts(line, prev_blank):
            yield n
        prev_blank = line in (b"\n", b"\r\n")


def _finish(lines: list[bytes]) -> bytes:
    data = b"".join(lines)
    if data.endswith(b"\n\n"):  # the blank line before the next From_ belongs to mbox
        data = data[:-1]
    return data


def _folder_of(root: Path, file: Path) -> str:
    rel = file.parent.relative_to(root) if file.is_relative_to(root) else Path()
    parts = [p for p in rel.parts if p not in ("cur", "new")]
    return "/".join(parts)


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            if p.is_file() and not p.is_symlink():
                yield p


def scan(paths: Iterable[Path | str]) -> Iterator[RawMessage]:
    """Every message found under the paths, as raw bytes with their location."""
    for given in paths:
        path = Path(given).expanduser()
        if not path.exists():
            raise ImportSourceError(f"{given}: no such file or directory")
        path = path.absolute()
        files = [path] if path.is_file() else list(_walk(path))
        root = path if path.is_dir() else path.parent
        for file in files:
            try:
                with file.open("rb") as f:
                    head = f.read(1024)
            except OSError as e:
                raise ImportSourceError(f"{file}: cannot read: {e.strerror}") from None
            folder = _folder_of(root, file)
            if _is_mbox(head):
                for i, data in iter_mbox(file):
                    yield RawMessage(data, Location(f"mbox:{file}#{i}", folder or file.stem))
            else:
                try:
                    data = file.read_bytes()
                except OSError as e:
                    raise ImportSourceError(f"{file}: cannot read: {e.strerror}") from None
                yield RawMessage(data, Location(f"file:{file}", folder))


def count_messages(paths: Iterable[Path | str]) -> int | None:
    """A cheap total for a progress bar: files, with mboxes counted by From_ lines."""
    total = 0
    for given in paths:
        path = Path(given).expanduser()
        if not path.exists():
            return None
        for file in ([path] if path.is_file() else _walk(path)):
            try:
                with file.open("rb") as f:
                    head = f.read(1024)
                    if _is_mbox(head):
                        f.seek(0)
                        total += sum(1 for _ in iter_mbox_starts(f))
                    else:
                        total += 1
            except OSError:
                continue
    return total


def _mtime(source: str) -> datetime | None:
    if source.startswith("file:"):
        try:
            return datetime.fromtimestamp(os.stat(source[5:]).st_mtime, UTC)
        except OSError:
            return None
    return None


def parse_raw(raw: RawMessage) -> Message:
    return parse_message(raw.data, fallback_date=_mtime(raw.location.source))


def _parse_job(raw: RawMessage) -> tuple[RawMessage, Message | None, str]:
    try:
        return raw, parse_raw(raw), ""
    except ParseError as e:
        return raw, None, str(e)


def _parsed(raws: Iterable[RawMessage], workers: int
            ) -> Iterator[tuple[RawMessage, Message | None, str]]:
    """Parse in worker processes once there is enough to parse; in-process otherwise."""
    it = iter(raws)
    head = list(itertools.islice(it, POOL_THRESHOLD))
    if workers <= 1 or len(head) < POOL_THRESHOLD:
        yield from map(_parse_job, itertools.chain(head, it))
        return
    ctx = multiprocessing.get_context("fork" if sys.version_info < (3, 12) else "forkserver")
    with ctx.Pool(workers) as pool:
        yield from pool.imap(_parse_job, itertools.chain(head, it), chunksize=32)


def default_workers() -> int:
    """GREX_IMPORT_WORKERS, else the CPU count (at most 4)."""
    env = os.environ.get("GREX_IMPORT_WORKERS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(4, os.cpu_count() or 1))


def import_messages(kb: store.KB, conn: sqlite3.Connection, raws: Iterable[RawMessage], *,
                    subject_merge: bool = False, progress: Progress | None = None,
                    workers: int | None = None) -> ImportReport:
    """Parse and save messages in batches; a bad message is quarantined, never fatal.

    Copies already recorded (same source, same bytes) are skipped before parsing. Parsing
    runs in ``workers`` processes (default: the CPU count, at most 4) for large imports;
    saving stays in this process, one transaction per batch.
    """
    seen = added = duplicates = unchanged = changed = merged = 0
    quarantined: list[Quarantined] = []
    batch: list[tuple[RawMessage, Message]] = []

    def flush() -> None:
        nonlocal added, duplicates, unchanged, changed, merged
        if not batch:
            return
        res = catalog.add_messages(kb, conn, batch, subject_merge=subject_merge)
        added += len(res.added)
        duplicates += res.duplicates
        unchanged += res.unchanged
        changed += res.threads_changed
        merged += res.threads_merged
        if progress:
            progress(len(batch))
        batch.clear()

    def fresh() -> Iterator[RawMessage]:
        nonlocal seen, unchanged
        for raw in raws:
            seen += 1
            digest = hashlib.sha256(raw.data).hexdigest()
            if store.has_location(conn, raw.location.source, digest):
                unchanged += 1
                if progress:
                    progress(1)
                continue
            yield raw

    for raw, msg, error in _parsed(fresh(), default_workers() if workers is None else workers):
        if msg is None:
            quarantined.append(store.quarantine(kb, conn, raw, error))
            if progress:
                progress(1)
            continue
        batch.append((raw, msg))
        if len(batch) >= BATCH:
            flush()
    flush()
    return ImportReport(seen=seen, added=added, duplicates=duplicates, unchanged=unchanged,
                        quarantined=tuple(quarantined), threads_changed=changed,
                        threads_merged=merged)
