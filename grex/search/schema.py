"""The index schema and analyzers: fields, boosts, the tokenizer and the stemmer."""

from __future__ import annotations

import re
import sys
from typing import Any

import Stemmer
from whoosh import columns, fields
from whoosh.analysis import Token, Tokenizer
from whoosh.support.charset import accent_map

_snowball = Stemmer.Stemmer("english").stemWord  # Porter2, as Snowball defines it now

SCHEMA_VERSION = 2  # 2: posting blocks of grex.search.codec, Snowball stemmer of PyStemmer
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

# Whoosh pickles the schema (our tokenizer) and each segment's codec into the index's TOC
# by module path. Indexes written before grex's one-package-per-stage layout name the old
# modules; they still open (the next commit writes the new names).
MOVED_MODULES = {"grex.index": "grex.search.schema", "grex.codec": "grex.search.codec"}


def open_index(path: object, readonly: bool = False) -> Any:
    """Open a Whoosh index directory grex wrote, whichever layout of grex wrote it."""
    from whoosh import index as wix

    for old, new in MOVED_MODULES.items():
        if old not in sys.modules:
            sys.modules[old] = __import__(new, fromlist=("_",))
    return wix.open_dir(str(path), readonly=readonly)


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
    """The index schema. Field boosts are applied at query time (grex.search.query), so tuning
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


