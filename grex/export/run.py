"""The export stage: catalog (+ extraction, + search for ``--only``) -> static site.

``export_html`` is what ``grex export html`` calls; ``run_export`` is the pipeline stage
(used when ``[export] html_dir`` is configured), which also advances the "export" cursor.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from grex import store
from grex.config import Config
from grex.errors import ExportError, GrexError
from grex.export.build import BuildOptions, build_site
from grex.export.model import (
    EntityTag,
    Knowledge,
    Site,
    ThreadInput,
    TopicTag,
)
from grex.export.publish import Pending, live_version, publish, versions_dir
from grex.export.render import render_site
from grex.export.text import safe_filename

Progress = Callable[[int], Any]


@dataclass(frozen=True, slots=True)
class ExportOptions:
    out_dir: Path
    only: str = ""  # a search query: export just the threads it matches
    redact: bool = False
    attachments: bool = False
    title: str = "grex knowledge base"
    base_url: str = ""  # absolute URL the site is served from (sitemap.xml, feed)


@dataclass(frozen=True, slots=True)
class ExportReport:
    out_dir: str
    version_dir: str
    threads: int
    messages: int
    people: int
    topics: int
    orgs: int
    files: int
    pages: int  # HTML pages among the files
    written: int
    unchanged: int
    removed: int
    bytes: int
    attachments: int
    swapped: bool
    seconds: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    def summary(self) -> str:
        change = (f"{self.written} files written, {self.unchanged} unchanged, "
                  f"{self.removed} removed" if self.swapped else "nothing changed")
        return (f"{self.threads} threads, {self.people} people, {self.topics} topics -> "
                f"{self.out_dir} ({self.files} files, {self.bytes / 1e6:.1f} MB; {change}) "
                f"in {self.seconds:.1f} s")


# ---------------------------------------------------------------- reading the catalog


def _knowledge_reader(conn: sqlite3.Connection) -> tuple[Callable[[str], Knowledge], str]:
    """A function thread_id -> Knowledge, and a note when extraction is not available."""
    try:
        from grex.extract import thread_knowledge
    except ImportError:
        return (lambda _tid: Knowledge()), "extraction is not built in: no topics or entities"

    def read(tid: str) -> Knowledge:
        try:
            data = thread_knowledge(conn, tid)
        except sqlite3.OperationalError:  # extraction's tables not created yet
            return Knowledge()
        return knowledge_from(data)

    return read, ""


def _label(v: Any, *keys: str) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, Mapping):
        for k in keys:
            if v.get(k):
                return str(v[k])
        return ""
    for k in keys:
        if getattr(v, k, None):
            return str(getattr(v, k))
    if isinstance(v, tuple | list) and v:
        return str(v[0])
    return ""


# Entity kinds not worth a link: they are contact details (and --redact masks them anyway).
_SKIP_KINDS = frozenset({"EMAIL", "PHONE", "URL", "CARDINAL", "ORDINAL", "QUANTITY", "PERCENT",
                         "MONEY", "TIME", "DATE"})


def _attr(v: Any, name: str) -> Any:
    return v.get(name) if isinstance(v, Mapping) else getattr(v, name, None)


def _weight(t: Any) -> float | None:
    w = t[2] if isinstance(t, tuple | list) and len(t) > 2 else _attr(t, "weight")
    return float(w) if isinstance(w, int | float) else None


def _strong_topics(topics: list[Any], *, share: float = 0.25, most: int = 3) -> list[Any]:
    """A thread's topics worth a link: extraction gives every thread a weight on every
    topic (summing to 1); keep the strongest, and others with at least ``share``."""
    weighted = [(w, t) for t in topics if (w := _weight(t)) is not None]
    if len(weighted) != len(topics):
        return topics[:most]
    weighted.sort(key=lambda wt: -wt[0])
    return [t for i, (w, t) in enumerate(weighted[:most]) if i == 0 or w >= share]


def knowledge_from(data: Any) -> Knowledge:
    """Extraction's ``thread_knowledge`` result -> Knowledge. Accepts grex.extract's
    ThreadKnowledge (entities with text/label/addr, keyphrases with text, topics as
    (id, label, weight)) or the same shape as a mapping; missing parts stay empty."""
    if data is None:
        return Knowledge()

    def get(key: str) -> list[Any]:
        return list(_attr(data, key) or [])

    topics = []
    for t in _strong_topics(get("topics")):
        if isinstance(t, tuple | list) and len(t) >= 2:
            key, label = str(t[0]), str(t[1])
        else:
            label = _label(t, "label", "name", "title")
            ident = next((v for v in (_attr(t, k) for k in ("id", "topic_id", "key", "slug"))
                          if v is not None and not isinstance(t, str)), None)
            key = str(ident) if ident is not None else label
        if label.strip():
            topics.append(TopicTag(key=key, label=label.strip()))
    entities = []
    for e in get("entities"):
        if isinstance(e, tuple | list):
            text, kind, addr = (str(e[0]), str(e[1]) if len(e) > 1 else "", "")
        else:
            text = str(_attr(e, "text") or _attr(e, "name") or "")
            kind = str(_attr(e, "label") or _attr(e, "kind") or _attr(e, "type") or "")
            addr = str(_attr(e, "addr") or "")
            key = str(_attr(e, "key") or "")
            if not addr and key.startswith("person:") and "@" in key:
                addr = key[len("person:"):]
        kind = kind.upper()
        if text.strip() and kind not in _SKIP_KINDS:
            entities.append(EntityTag(label=text.strip(), kind=kind, addr=addr.lower()))
    keyphrases = [k for k in (_label(k, "text", "phrase", "label") for k in get("keyphrases"))
                  if k.strip()]
    related = [r for r in (_label(r, "root_message_id", "root") for r in get("related")) if r]
    return Knowledge(topics=tuple(topics), entities=tuple(entities),
                     keyphrases=tuple(keyphrases), related=tuple(related))


def select_threads(conn: sqlite3.Connection, query: str, kb: store.KB) -> set[str]:
    """Thread ids a search query matches (``--only``), with the search stage's own query
    language and index. Raises QueryError for a bad query, IndexError_ without an index."""
    try:
        from grex import search as search_mod
    except ImportError:
        raise ExportError(
            "--only needs grex's search stage, which this build does not have",
            hint="export without --only",
        ) from None
    n = int(conn.execute("SELECT COUNT(*) FROM threads").fetchone()[0])
    result = search_mod.search(kb, query, limit=max(n, 1), conn=conn, suggest=False)
    return {store.resolve_thread_id(conn, h.thread_id) or h.thread_id for h in result.hits}


def read_threads(conn: sqlite3.Connection, *, only: set[str] | None = None,
                 knowledge: Callable[[str], Knowledge] = lambda _t: Knowledge(),
                 progress: Progress | None = None) -> Iterator[ThreadInput]:
    for t in store.iter_threads(conn):
        if only is not None and t.thread_id not in only:
            continue
        msgs = store.get_messages(conn, t.message_ids)
        ordered = tuple(msgs[i] for i in t.message_ids if i in msgs)
        if progress:
            progress(1)
        if not ordered:
            continue
        yield ThreadInput(thread=t, messages=ordered, knowledge=knowledge(t.thread_id))


# ---------------------------------------------------------------- attachments


def _b64(payload: Any) -> bytes | None:
    try:
        return base64.b64decode(payload)
    except (ValueError, TypeError):
        return None


def attachment_payloads(raw: bytes) -> Iterator[bytes]:
    """Every attachment payload we can find in a raw message, decoded: mail-parser's view
    (what grex.ingest.parse recorded) and the standard library's, so a sha256 can be matched."""
    try:
        import mailparser

        logging.getLogger("mailparser").setLevel(logging.CRITICAL)
        for att in mailparser.parse_from_bytes(raw).attachments:
            payload = att.get("payload") or ""
            if att.get("binary"):
                decoded = _b64(payload)
                if decoded is not None:
                    yield decoded
            elif isinstance(payload, bytes):
                yield payload
            elif payload:
                yield str(payload).encode(att.get("charset") or "utf-8", "replace")
    except Exception:  # noqa: BLE001 - hostile input: fall back to the stdlib parser
        pass
    import email
    import email.policy

    try:
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        for part in msg.walk():
            if part.is_multipart():
                continue
            data = part.get_payload(decode=True)
            if isinstance(data, bytes):
                yield data
    except Exception:  # noqa: BLE001
        return


def collect_attachments(kb: store.KB, conn: sqlite3.Connection,
                        inputs: Iterable[ThreadInput]) -> dict[str, bytes]:
    """sha256 -> bytes for every attachment of ``inputs`` whose bytes can be recovered from
    the raw message in the KB (and hash to what the catalog recorded)."""
    out: dict[str, bytes] = {}
    for it in inputs:
        for m in it.messages:
            wanted = {a.sha256 for a in m.attachments} - set(out)
            if not wanted:
                continue
            row = conn.execute("SELECT raw_path FROM messages WHERE message_id = ?",
                               (m.message_id,)).fetchone()
            if row is None:
                continue
            try:
                raw = store.read_raw(kb, row["raw_path"])
            except OSError:
                continue
            for payload in attachment_payloads(raw):
                sha = hashlib.sha256(payload).hexdigest()
                if sha in wanted:
                    out[sha] = payload
                    wanted.discard(sha)
                if not wanted:
                    break
    return out


def _link_attachments(site: Site, payloads: Mapping[str, bytes]) -> tuple[Site, dict[str, bytes]]:
    files: dict[str, bytes] = {}
    threads = []
    for t in site.threads:
        msgs = []
        for m in t.messages:
            atts = []
            for a in m.attachments:
                if a.sha256 in payloads:
                    name = safe_filename(a.filename)
                    path = f"att/{a.sha256[:16]}/{name}"
                    files[path] = payloads[a.sha256]
                    a = replace(a, href=path, download_name=name)
                atts.append(a)
            msgs.append(replace(m, attachments=tuple(atts)))
        threads.append(replace(t, messages=tuple(msgs)))
    return replace(site, threads=tuple(threads)), files


# ---------------------------------------------------------------- the stage


def site_salt(out_dir: Path) -> str:
    """A random salt kept beside the site's versions (never served), created on first use:
    redacted person pages stay at the same address from one export to the next."""
    path = versions_dir(Path(os.path.abspath(out_dir))) / "salt"
    try:
        return path.read_text("ascii").strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    salt = secrets.token_hex(16)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(salt, "ascii")
    os.replace(tmp, path)
    return salt


def export_html(kb: store.KB, conn: sqlite3.Connection, options: ExportOptions, *,
                progress: Progress | None = None) -> ExportReport:
    """Export the KB (or the threads ``options.only`` matches) as a static site."""
    started = time.monotonic()
    notes: list[str] = []
    live_version(Path(os.path.abspath(options.out_dir)))  # refuse a foreign OUT_DIR up front
    only = select_threads(conn, options.only, kb) if options.only else None
    knowledge, note = _knowledge_reader(conn)
    if note:
        notes.append(note)

    inputs = list(read_threads(conn, only=only, knowledge=knowledge, progress=progress))
    site = build_site(inputs, BuildOptions(
        title=options.title, redact=options.redact, base_url=options.base_url,
        person_salt=site_salt(Path(options.out_dir)) if options.redact else "",
        thread_aliases=store.thread_aliases(conn),
    ))
    extra: dict[str, bytes] = {}
    n_att = 0
    if options.attachments:
        payloads = collect_attachments(kb, conn, inputs)
        site, extra = _link_attachments(site, payloads)
        n_att = len(extra)
        wanted = sum(len(m.attachments) for it in inputs for m in it.messages)
        if wanted > n_att:
            notes.append(f"{wanted - n_att} attachments could not be recovered from the raw "
                         "messages and are listed without a download")

    def files() -> Iterator[tuple[str, bytes | Pending]]:
        yield from render_site(site)
        yield from sorted(extra.items())

    try:
        pub = publish(options.out_dir, files())
    except OSError as e:
        raise ExportError(f"cannot write the site at {options.out_dir}: {e.strerror or e}") \
            from None
    return ExportReport(
        out_dir=str(pub.out_dir), version_dir=str(pub.version_dir), threads=len(site.threads),
        messages=site.n_messages, people=len(site.people), topics=len(site.topics),
        orgs=len(site.orgs), files=pub.files, pages=pub.pages, written=pub.written,
        unchanged=pub.unchanged, removed=pub.removed, bytes=pub.bytes, attachments=n_att,
        swapped=pub.swapped,
        seconds=round(time.monotonic() - started, 3), notes=tuple(notes),
    )


def run_export(kb: store.KB, conn: sqlite3.Connection, config: Config, *,
               out_dir: Path | str | None = None,
               progress: Callable[..., Any] | None = None) -> ExportReport | None:
    """Pipeline stage: refresh the site at ``out_dir`` or ``[export] html_dir`` (relative to
    the KB). Returns None when no site is configured. Advances the "export" cursor once
    the new site is live."""
    target = out_dir or config.export.html_dir
    if not target:
        return None
    path = Path(target)
    if not path.is_absolute():
        path = kb.path / path
    last = store.last_seq(conn)  # taken before reading: later changes stay outstanding
    options = ExportOptions(
        out_dir=path, redact=config.export.redact, title=config.export.title,
        base_url=getattr(config.export, "base_url", "") or "",
    )
    stamp = _stage_stamp(options, last)
    report = _unchanged_report(path, stamp, store.get_cursor(conn, "export"), last)
    if report is not None:
        return report  # nothing changed since the site that is live: don't read the catalog
    report = export_html(kb, conn, options, progress=progress)
    _save_stage_stamp(path, stamp, report)
    try:
        store.set_cursor(conn, "export", last)
    except sqlite3.OperationalError as e:  # a read-only connection: the site is still fine
        raise GrexError(f"the site was exported but the export cursor was not saved: {e}") \
            from None
    return report


# ----------------------------------------------- skipping an export that would change nothing

_STAMP = "stage.json"


def _stage_stamp(options: ExportOptions, seq: int) -> dict[str, Any]:
    """What the live site was built from: the change-feed position, the options and the
    grex version (a new version may render differently)."""
    from grex import __version__

    return {"seq": seq, "grex": __version__, "title": options.title, "redact": options.redact,
            "base_url": options.base_url}


def _unchanged_report(out_dir: Path, stamp: dict[str, Any], cursor: int,
                      last: int) -> ExportReport | None:
    """The last export's report, when the live site was built from exactly this state."""
    if cursor != last:
        return None
    try:
        live = live_version(Path(os.path.abspath(out_dir)))
        saved = json.loads((versions_dir(Path(os.path.abspath(out_dir))) / _STAMP)
                           .read_text("utf-8"))
    except (OSError, ValueError, ExportError):
        return None
    if live is None or not isinstance(saved, dict) or saved.get("stamp") != stamp \
            or saved.get("version_dir") != str(live.resolve()):
        return None
    try:
        prev = saved["report"]
        return ExportReport(**{**prev, "written": 0, "unchanged": prev["files"], "removed": 0,
                               "swapped": False, "seconds": 0.0,
                               "notes": ("nothing changed since the last export",)})
    except (KeyError, TypeError):
        return None


def _save_stage_stamp(out_dir: Path, stamp: dict[str, Any], report: ExportReport) -> None:
    path = versions_dir(Path(os.path.abspath(out_dir))) / _STAMP
    data = {"stamp": stamp, "version_dir": str(Path(report.version_dir).resolve()),
            "report": {k: v for k, v in asdict(report).items() if k != "notes"}}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data), "utf-8")
    os.replace(tmp, path)
