"""grex's search index (Whoosh): schema, documents, the index stage and rebuilds.

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
import re
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import Stemmer
from whoosh import columns, fields
from whoosh.analysis import Token, Tokenizer
from whoosh.support.charset import accent_map

from grex.errors import IndexError_
from grex.models import Message

_snowball = Stemmer.Stemmer("english").stemWord  # Porter2, as Snowball defines it now

SCHEMA_VERSION = 2  # 2: posting blocks of grex.codec, Snowball stemmer of PyStemmer
INDEX_LINK = "index"
GENERATIONS_DIR = "index.d"
META_FILE = "grex-index.json"
EXCERPT_CHARS = 4_000  # stored body text for snippets (the whole body is indexed)
MAX_TOKEN = 64  # longer "words" are base64 / uuencode noise
SEGMENT_LIMIT = 8  # merge the smallest segments when a commit would leave more
WRITER_TIMEOUT = 120.0  # seconds to wait for Whoosh's write lock
READ_RETRIES = 6
PARALLEL_FROM = 2000  # messages: a rebuild of this many uses two processes (on 2+ cores)

TOKEN_PATTERN = r"\w+"


# ---------------------------------------------------------------------------------- schema


_STEM_CACHE: dict[str, str] = {}  # raw word -> indexed term (unbounded, per process)
_FOLD_CACHE: dict[str, str] = {}
_PORTER_CACHE: dict[str, str] = {}  # folded word -> stem ("The", "THE", "the": one stem() call)
_WORD = re.compile(TOKEN_PATTERN)


class WordTokenizer(Tokenizer):
    """``\\w+`` words, lowercased, accents folded, optionally Porter2-stemmed, in one pass.

    The same result as ``RegexTokenizer | LowercaseFilter | CharsetFilter(accent_map) |
    StemFilter(<Snowball English>, cachesize=-1)`` at about twice the speed: Whoosh's analyzers
    are chains of generators, and indexing spends most of its time in them. The word cache
    is module-level (not pickled into the index's schema).
    """

    def __init__(self, stem: bool = True) -> None:
        self.stem = stem
        self.is_morph = stem

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WordTokenizer) and type(other) is type(self) and \
            other.stem == self.stem

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.stem))

    def __call__(self, value: str, positions: bool = False, chars: bool = False,
                 keeporiginal: bool = False, removestops: bool = True, start_pos: int = 0,
                 start_char: int = 0, tokenize: bool = True, mode: str = "", **kwargs: Any):
        t = Token(positions, chars, removestops=removestops, mode=mode, **kwargs)
        if not tokenize:
            t.original = t.text = value
            t.boost = 1.0
            if positions:
                t.pos = start_pos
            if chars:
                t.startchar = start_char
                t.endchar = start_char + len(value)
            yield t
            return
        cache = _STEM_CACHE if self.stem else _FOLD_CACHE
        stem = _stem_folded if self.stem else None
        pos = start_pos
        for m in _WORD.finditer(value):
            word = m.group()
            term = cache.get(word)
            if term is None:
                term = fold(word)
                if len(term) > MAX_TOKEN:
                    term = ""
                elif stem is not None:
                    term = stem(term)
                if len(cache) < 2_000_000:
                    cache[word] = term
            if not term:
                continue
            t.text = term
            t.boost = 1.0
            t.stopped = False
            if keeporiginal:
                t.original = word
            if positions:
                t.pos = pos
                pos += 1
            if chars:
                t.startchar = start_char + m.start()
                t.endchar = start_char + m.end()
            yield t


def fold(text: str) -> str:
    """Lowercase and fold accents, as both analyzers do (for prefixes and keywords)."""
    text = text.lower()
    return text if text.isascii() else text.translate(accent_map)


def _stem_folded(folded: str) -> str:
    """The Snowball English stem of a lowercased, accent-folded word, cached."""
    term = _PORTER_CACHE.get(folded)
    if term is None:
        term = _snowball(folded)
        if len(_PORTER_CACHE) < 2_000_000:
            _PORTER_CACHE[folded] = term
    return term


def stem_term(word: str) -> str:
    """The term one word becomes in a stemmed field ("" when it is dropped)."""
    term = _STEM_CACHE.get(word)
    if term is None:
        term = fold(word)
        term = "" if len(term) > MAX_TOKEN else _stem_folded(term)
        if len(_STEM_CACHE) < 2_000_000:
            _STEM_CACHE[word] = term
    return term


def text_analyzer() -> WordTokenizer:
    """Words, lowercased, accents folded, Porter2-stemmed."""
    return WordTokenizer(stem=True)


def name_analyzer() -> WordTokenizer:
    """Names, addresses, labels of things: like text_analyzer but never stemmed."""
    return WordTokenizer(stem=False)


# Query-time field boosts (BM25F): the subject and the author count most, quoted text least.
BOOSTS = {"subject": 3.0, "body": 1.0, "quoted": 0.3, "from": 1.5, "to": 0.8, "cc": 0.6,
          "attachment": 1.0, "keyword": 1.5, "topic": 1.2, "person": 1.0, "org": 1.0,
          "place": 1.0}

# Fields a bare word searches (notmuch: "bare terms match body and headers"): the message's
# own text. Not topics / keyphrases / entities: they are thread-level or derived from this
# text, and a topic label copied onto every message of a thread would make a bare word
# match messages that never say it (use topic:, keyword:, person:, org:, place:).
DEFAULT_FIELDS = ("subject", "body", "quoted", "from", "to", "cc", "attachment")

# Fields whose words make the snippet highlight.
SNIPPET_FIELDS = ("body", "subject", "quoted")

FACETS = ("topic", "person", "org", "place", "from", "label", "folder")


def make_schema() -> fields.Schema:
    """The index schema. Field boosts are applied at query time (grex.query), so tuning
    them needs no reindex."""
    text = text_analyzer()
    names = name_analyzer()

    def textf(*, stored: bool = False) -> fields.TEXT:
        return fields.TEXT(analyzer=text, phrase=True, stored=stored)

    def namef(*, stored: bool = False) -> fields.TEXT:
        return fields.TEXT(analyzer=names, phrase=True, stored=stored)

    return fields.Schema(
        id=fields.ID(unique=True, stored=True, sortable=True),
        thread_id=fields.ID(stored=True, sortable=True),
        subject=textf(stored=True),
        body=textf(),
        quoted=textf(),
        excerpt=fields.STORED(),
        **{"from": namef(stored=True)},
        to=namef(stored=True),
        cc=namef(stored=True),
        date=fields.DATETIME(stored=True, sortable=True),
        folder=fields.KEYWORD(commas=True, lowercase=True, stored=True),
        label=fields.KEYWORD(commas=True, lowercase=True, stored=True),
        attachment=namef(stored=True),
        mimetype=fields.KEYWORD(commas=True, lowercase=True),
        flag=fields.KEYWORD(commas=True, lowercase=True, stored=True),
        list=fields.ID(),
        person=namef(),
        org=namef(),
        place=namef(),
        keyword=textf(),
        topic=textf(),
        topics=fields.STORED(),
        # facet values per document, read for the matching documents only
        facets=fields.COLUMN(columns.PickleColumn(columns.VarBytesColumn())),
    )


# ------------------------------------------------------------------------------- documents


@dataclass(frozen=True, slots=True)
class Knowledge:
    """What extraction found, as the index uses it (one message, or its thread)."""

    persons: tuple[str, ...] = ()
    orgs: tuple[str, ...] = ()
    places: tuple[str, ...] = ()
    keyphrases: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()

    def merged(self, other: Knowledge | None) -> Knowledge:
        if other is None:
            return self
        return Knowledge(*(_unique(a + b) for a, b in zip(
            (self.persons, self.orgs, self.places, self.keyphrases, self.topics),
            (other.persons, other.orgs, other.places, other.keyphrases, other.topics),
            strict=True)))


@dataclass(frozen=True, slots=True)
class IndexReport:
    """What one run of the index stage did."""

    indexed: int = 0  # documents added or replaced
    deleted: int = 0  # messages removed from the index
    rebuilt: bool = False
    documents: int = 0  # documents in the index after the run
    segments: int = 0
    optimized: bool = False
    seconds: float = 0.0
    skipped: tuple[str, ...] = ()  # message ids that could not be indexed, with why
    knowledge: bool = False  # extraction results were available and indexed

    def summary(self) -> str:
        if self.rebuilt:
            what = f"rebuilt: {self.documents} messages indexed"
        elif not (self.indexed or self.deleted):
            what = "up to date"
        else:
            what = f"{self.indexed} messages indexed, {self.deleted} removed"
        extra = f", {len(self.skipped)} skipped" if self.skipped else ""
        return f"index {what}{extra} ({self.seconds:.1f} s)"


_CLEAN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
SIGNED_TYPES = ("application/pgp-signature", "application/pkcs7-signature",
                "application/x-pkcs7-signature")
ENCRYPTED_TYPES = ("application/pgp-encrypted", "application/pkcs7-mime",
                   "application/x-pkcs7-mime")


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for v in values:
        v = " ".join(str(v).split())
        if v and v.lower() not in {s.lower() for s in seen}:
            seen[v] = None
    return tuple(seen)


def _keyword_value(values: Iterable[str]) -> str:
    # KEYWORD(commas=True): one value per comma-separated item
    return ",".join(v.replace(",", " ").strip() for v in values if v and v.strip())


def _addresses(addrs: Iterable[Any]) -> str:
    return "\n".join(a.display() for a in addrs if a is not None and (a.name or a.addr))


def message_document(
    msg: Message,
    *,
    thread_id: str,
    folders: Iterable[str] = (),
    labels: Iterable[str] = (),
    knowledge: Knowledge | None = None,
    flags: Iterable[str] = (),
) -> dict[str, Any]:
    """The Whoosh document of one message: a pure function of the catalog's data."""
    if not msg.message_id:
        raise ValueError("message without an id")
    k = knowledge or Knowledge()
    body = _CLEAN.sub(" ", msg.body.new or "")
    other = "\n".join(p for p in (msg.body.quoted, msg.body.signature) if p)
    names = [a.filename for a in msg.attachments if a.filename]
    ctypes = {a.content_type.lower() for a in msg.attachments if a.content_type}
    flags = list(flags)
    real_attachments = [a for a in msg.attachments
                        if a.content_type.lower() not in SIGNED_TYPES + ENCRYPTED_TYPES]
    if real_attachments:
        flags.append("attachment")
    if ctypes & set(SIGNED_TYPES) and "signed" not in flags:
        flags.append("signed")
    if ctypes & set(ENCRYPTED_TYPES) and "encrypted" not in flags:
        flags.append("encrypted")
    if msg.in_reply_to or msg.references:
        flags.append("reply")
    sender = _addresses([msg.sender]) if msg.sender else ""
    date = msg.date if msg.date.tzinfo is None else msg.date.astimezone(UTC).replace(tzinfo=None)
    folders = _unique(folders)
    labels = _unique(labels)
    doc: dict[str, Any] = {
        "id": msg.message_id,
        "thread_id": thread_id,
        "subject": _CLEAN.sub(" ", msg.subject or ""),
        "body": body,
        "quoted": _CLEAN.sub(" ", other),
        "excerpt": body[:EXCERPT_CHARS],
        "from": sender,
        "to": _addresses(msg.to),
        "cc": _addresses(msg.cc),
        "date": date,
        "folder": _keyword_value(folders),
        "label": _keyword_value(labels),
        "attachment": "\n".join(names),
        "mimetype": _keyword_value(sorted(ctypes)),
        "flag": _keyword_value(flags),
        "list": msg.list_id or "",
        "person": "\n".join(k.persons),
        "org": "\n".join(k.orgs),
        "place": "\n".join(k.places),
        "keyword": "\n".join(k.keyphrases),
        "topic": "\n".join(k.topics),
        "topics": list(k.topics),
        "facets": {
            "topic": list(k.topics),
            "person": list(k.persons),
            "org": list(k.orgs),
            "place": list(k.places),
            "from": [msg.sender.label] if msg.sender and msg.sender.label else [],
            "label": list(labels),
            "folder": list(folders),
        },
    }
    return {key: value for key, value in doc.items() if value not in ("", None)}


def validate_document(doc: Mapping[str, Any]) -> None:
    """Raise ValueError unless ``doc`` can be written (checked before a multiprocess build,
    whose workers drop their whole share silently on one bad document)."""
    schema_names = _schema_names()
    for key, value in doc.items():
        if key not in schema_names:
            raise ValueError(f"unknown field {key!r}")
        if key == "date":
            if not isinstance(value, datetime):
                raise ValueError("date is not a datetime")
        elif key in ("excerpt", "topics", "facets"):
            continue
        elif not isinstance(value, str):
            raise ValueError(f"field {key!r} is not text")
    if not doc.get("id") or not doc.get("thread_id"):
        raise ValueError("document without id or thread_id")


_NAMES: list[frozenset[str]] = []


def _schema_names() -> frozenset[str]:
    if not _NAMES:
        _NAMES.append(frozenset(make_schema().names()))
    return _NAMES[0]


# ------------------------------------------------------------------------ knowledge source


def knowledge_source(conn: Any) -> Callable[[str], Knowledge | None] | None:
    """A function thread_id -> Knowledge when grex.extract is present, else None.

    Imported here, never at module level: grex.extract pulls in spaCy lazily, and the
    search path must not import it at all.
    """
    try:
        from grex import extract  # noqa: PLC0415
    except ImportError:
        return None
    fn = getattr(extract, "thread_knowledge", None)
    ran = getattr(extract, "has_results", None)
    if fn is None or (ran is not None and not ran(conn)):
        return None  # no extraction, or it never ran here: no question to ask per thread

    def get(thread_id: str) -> Knowledge | None:
        try:
            found = fn(conn, thread_id)
        except Exception:  # noqa: BLE001 - extraction tables absent or not yet filled
            return None
        return to_knowledge(found) if found is not None else None

    return get


def to_knowledge(found: Any) -> Knowledge:
    """Adapt what grex.extract returns (a dataclass or a mapping) to Knowledge."""

    def attr(name: str, default: Any = ()) -> Any:
        if isinstance(found, Mapping):
            return found.get(name, default)
        return getattr(found, name, default)

    persons: list[str] = list(attr("persons", ()) or attr("people", ()) or ())
    orgs: list[str] = list(attr("orgs", ()) or attr("organizations", ()) or ())
    places: list[str] = list(attr("places", ()) or attr("locations", ()) or ())
    for ent in attr("entities", ()) or ():
        text, label = _entity(ent)
        if not text:
            continue
        label = label.upper()
        if label in ("PERSON", "PER"):
            persons.append(text)
        elif label in ("ORG", "ORGANIZATION"):
            orgs.append(text)
        elif label in ("GPE", "LOC", "PLACE", "FAC", "LOCATION"):
            places.append(text)
    keyphrases = [_text(k) for k in attr("keyphrases", ()) or ()]
    topics = [_text(t) for t in attr("topics", ()) or ()]
    return Knowledge(_unique(persons), _unique(orgs), _unique(places), _unique(keyphrases),
                     _unique(topics))


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return str(value.get("label") or value.get("text") or value.get("name") or "")
    if isinstance(value, tuple | list) and value:
        return str(value[0])
    for name in ("label", "text", "name", "phrase"):
        if hasattr(value, name):
            return str(getattr(value, name))
    return str(value)


def _entity(ent: Any) -> tuple[str, str]:
    if isinstance(ent, Mapping):
        return str(ent.get("text", "")), str(ent.get("label", "") or ent.get("type", ""))
    if isinstance(ent, tuple | list) and len(ent) >= 2:
        return str(ent[0]), str(ent[1])
    return str(getattr(ent, "text", "")), str(getattr(ent, "label", "") or
                                               getattr(ent, "type", ""))


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
    from grex.parse import mime_security  # noqa: PLC0415

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
        ix = wix.open_dir(str(gen))
        counted = ix.doc_count()
        if counted != documents and procs > 1:
            # a multiprocess writer drops a failed worker's share silently: start again
            shutil.rmtree(gen, ignore_errors=True)
            gen.mkdir()
            documents, skipped, used = _build(wix, kb, gen, conn, total, 1, limitmb, None)
            ix = wix.open_dir(str(gen))
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

    ix = wix.open_dir(str(gen))
    toc = ix._read_toc()
    segments = list(toc.segments)
    for part in parts:
        pix = wix.open_dir(str(part))
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
    from grex.index_bulk import BulkWriter  # noqa: PLC0415

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
    from whoosh import index as wix  # noqa: PLC0415

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
    from grex.index_bulk import BulkWriter  # noqa: PLC0415

    ix = wix.open_dir(str(current))
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
    ix = wix.open_dir(str(current))
    report = IndexReport(indexed=indexed, deleted=len(deletes), documents=ix.doc_count(),
                         segments=len(ix._segments()), optimized=optimize,
                         seconds=time.monotonic() - started, skipped=tuple(skipped),
                         knowledge=build.used_knowledge)
    ix.close()
    return report
