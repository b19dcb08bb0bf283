"""The search index shipped with the site: small JavaScript files, loaded on demand.

A page opened from file:// cannot fetch() JSON, but it can load scripts, so every part of
the index is a script that hands its data to the page. ``assets/search/meta.js`` is loaded
with search.html; the rest is loaded by search.js (a ``<script>`` element per file) only
when a query needs it, so the first result does not wait for the whole index.

Format (version 2)::

    assets/search/meta.js     window.GREX_SEARCH = {
        "v": 2, "n": <threads>, "chunk": 128,
        "stop": [...],                  stop words (dropped at build and query time)
        "first": [...], "last": [...],  each thread's first/last day (days since 1970-01-01)
        "shards": {"text": [2, [keys]], "subj": [1, [keys]], "from": ..., "person": ...,
                   "topic": ...}        per field: key length and the shard keys present
    }
    assets/search/<field>-<key>.js   GREX_SEARCH_LOAD("<field>", "<key>", [terms, postings])
    assets/search/docs-<n>.js        GREX_SEARCH_LOAD("docs", n, [[slug, subject, first,
                                         last, authors, n_messages, excerpt], ...])

Threads are numbered by their first message's date (then slug), so replies renumber
nothing; thread ``i`` is row ``i % chunk`` of docs chunk ``i // chunk``; its page is
``t/<slug>.html``.
Fields: ``text`` (subjects, message text without quotes or signatures, attachment names,
topics, key phrases, entities), ``subj`` (the thread's and its messages' subjects),
``from`` (senders' names and addresses), ``person`` (senders and recipients), ``topic``
(topic labels). A shard holds
the terms of one field starting with its key (the key is as long as the field's key
length, or the whole term when shorter); ``terms`` is sorted, so a prefix is a contiguous
range; ``postings[i]`` lists the threads holding ``terms[i]``, delta-encoded in base 36 and
joined by ",": threads 3, 5, 40 -> ``"3,2,z"``. Terms are grex.export.text.tokens (folded,
accents stripped); search.js folds a query the same way.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from grex.export.model import Site, ThreadPage
from grex.export.text import STOPWORDS, tokens

INDEX_VERSION = 2
CHUNK = 128  # rows per docs file: the first page of hits loads few bytes
SHARD_TARGET = 150_000  # bytes: fields bigger than this get two-character shard keys
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PLAIN_KEY = re.compile(r"[a-z0-9]+")


def b36(n: int) -> str:
    if n == 0:
        return "0"
    out = []
    while n:
        n, r = divmod(n, 36)
        out.append(_DIGITS[r])
    return "".join(reversed(out))


_SMALL = [b36(i) for i in range(36 * 36)]  # most gaps between postings are small


def encode_postings(docs: Iterable[int]) -> str:
    prev = 0
    parts = []
    small, limit = _SMALL, len(_SMALL)
    for d in sorted(set(docs)):
        gap = d - prev
        parts.append(small[gap] if gap < limit else b36(gap))
        prev = d
    return ",".join(parts)


def decode_postings(s: str) -> list[int]:
    out, cur = [], 0
    for part in s.split(",") if s else []:
        cur += int(part, 36)
        out.append(cur)
    return out


def shard_file(field: str, key: str) -> str:
    """File name of a shard; keys outside [a-z0-9] are spelled as hex code points (the
    same rule is in search.js)."""
    name = key if _PLAIN_KEY.fullmatch(key) else "x" + "-".join(f"{ord(c):x}" for c in key)
    return f"{field}-{name}.js"


class _Field:
    def __init__(self) -> None:
        self.post: dict[str, set[int]] = defaultdict(set)

    def add(self, doc: int, text: str) -> None:
        post = self.post
        for t in set(tokens(text)):
            post[t].add(doc)

    def shards(self) -> tuple[int, dict[str, tuple[list[str], list[str]]]]:
        encoded = {t: encode_postings(d) for t, d in self.post.items()}
        size = sum(len(t) + len(p) + 6 for t, p in encoded.items())
        keylen = 1 if size <= SHARD_TARGET else 2
        out: dict[str, tuple[list[str], list[str]]] = {}
        for t in sorted(encoded):
            terms, posts = out.setdefault(t[:keylen], ([], []))
            terms.append(t)
            posts.append(encoded[t])
        return keylen, out


def thread_text(page: ThreadPage) -> Iterator[str]:
    yield page.ref.subject
    for m in page.messages:
        yield m.new
        for a in m.attachments:
            yield a.filename
    for t in page.topics:
        yield t.label
    yield from page.keyphrases
    for e in page.entities:
        yield e.label


def _day(d: datetime) -> int:
    return (d.astimezone(UTC) - _EPOCH).days


def _js(value: object) -> str:
    """``value`` as JavaScript. JSON is valid JavaScript; "</" and U+2028/9 are escaped so
    the text can never end a script element or break a line in old parsers."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("</", "<\\/").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _script(call: str, *args: object) -> bytes:
    return f"{call}({','.join(_js(a) for a in args)});\n".encode()


def build_index(site: Site) -> Iterator[tuple[str, bytes]]:
    """The index files, as (path under assets/search/, bytes)."""
    addr_of = {p.ref.slug: p.addr for p in site.people}
    fields = {name: _Field() for name in ("text", "subj", "from", "person", "topic")}
    docs: list[list[object]] = []
    # numbered by when each thread started: a reply does not renumber anything, and new
    # threads (usually the newest) are added at the end, so most shards stay unchanged
    ordered = sorted(site.threads, key=lambda p: (p.ref.first_date, p.ref.slug))
    for n, page in enumerate(ordered):
        r = page.ref
        excerpt = page.excerpt if len(page.excerpt) <= 120 else page.excerpt[:119] + "…"
        authors = ", ".join(r.authors[:3]) + (f" +{len(r.authors) - 3}" if len(r.authors) > 3
                                               else "")
        docs.append([r.slug, r.subject, r.first_date.strftime("%Y-%m-%d"),
                     r.last_date.strftime("%Y-%m-%d"), authors, r.n_messages, excerpt])
        fields["text"].add(n, "\n".join(thread_text(page)))
        fields["subj"].add(n, "\n".join([r.subject, *(m.subject for m in page.messages)]))
        for m in page.messages:
            people = ([m.sender] if m.sender else []) + list(m.to) + list(m.cc)
            for i, p in enumerate(people):
                label = f"{p.label} {addr_of.get(p.slug, '')}"
                fields["person"].add(n, label)
                if i == 0 and m.sender:
                    fields["from"].add(n, label)
        for t in page.topics:
            fields["topic"].add(n, f"{t.label} {t.slug}")
    shards_meta: dict[str, list[object]] = {}
    for name, f in fields.items():
        keylen, shards = f.shards()
        shards_meta[name] = [keylen, sorted(shards)]
        for key, (terms, posts) in sorted(shards.items()):
            yield shard_file(name, key), _script("GREX_SEARCH_LOAD", name, key, [terms, posts])
    for i in range(0, len(docs), CHUNK):
        yield f"docs-{i // CHUNK}.js", _script("GREX_SEARCH_LOAD", "docs", i // CHUNK,
                                               docs[i:i + CHUNK])
    meta = {
        "v": INDEX_VERSION, "n": len(docs), "chunk": CHUNK, "stop": sorted(STOPWORDS),
        "first": [_day(p.ref.first_date) for p in ordered],
        "last": [_day(p.ref.last_date) for p in ordered],
        "shards": shards_meta,
    }
    yield "meta.js", f"window.GREX_SEARCH={_js(meta)};\n".encode()
