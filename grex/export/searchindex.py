"""The search index shipped with the site: one JavaScript file that assigns a global.

A page opened from file:// cannot fetch() a JSON file, but it can load a script, so the
index is ``window.GREX_SEARCH = {...};`` in ``assets/search-index.js``, read by
``assets/search.js``. Format (version 1)::

    {
      "v": 1,
      "stop": [...],                      # stop words dropped at build and query time
      "docs": [[href, subject, first, last, authors, n_messages, excerpt], ...],
                                          # one per thread, newest activity first, so a
                                          # smaller doc number means more recent
      "text":   [terms, postings],        # words of subjects, message text (not quotes or
                                          # signatures), topics, key phrases, entities
      "from":   [terms, postings],        # words of senders' names and addresses
      "person": [terms, postings],        # senders and recipients
      "topic":  [terms, postings]         # topic labels
    }

``terms`` is sorted (so a prefix is a contiguous range, found by binary search) and
``postings[i]`` lists the doc numbers holding ``terms[i]``, delta-encoded in base 36 and
joined by ",": docs 3, 5, 40 -> ``"3,2,z"``. Terms are the tokens of grex.export.text.tokens
(folded, accents stripped); search.js folds a query the same way.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable

from grex.export.model import Site, ThreadPage
from grex.export.text import STOPWORDS, tokens

INDEX_VERSION = 1
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def b36(n: int) -> str:
    if n == 0:
        return "0"
    out = []
    while n:
        n, r = divmod(n, 36)
        out.append(_DIGITS[r])
    return "".join(reversed(out))


def encode_postings(docs: Iterable[int]) -> str:
    prev = 0
    parts = []
    for d in sorted(set(docs)):
        parts.append(b36(d - prev))
        prev = d
    return ",".join(parts)


def decode_postings(s: str) -> list[int]:
    out, cur = [], 0
    for part in s.split(",") if s else []:
        cur += int(part, 36)
        out.append(cur)
    return out


class _Field:
    def __init__(self) -> None:
        self.post: dict[str, set[int]] = defaultdict(set)

    def add(self, doc: int, text: str) -> None:
        for t in tokens(text):
            self.post[t].add(doc)

    def encode(self) -> list[list[str]]:
        terms = sorted(self.post)
        return [terms, [encode_postings(self.post[t]) for t in terms]]


def thread_text(page: ThreadPage) -> Iterable[str]:
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


def build_index(site: Site) -> dict[str, object]:
    addr_of = {p.ref.slug: p.addr for p in site.people}
    text, sender, person, topic = _Field(), _Field(), _Field(), _Field()
    docs: list[list[object]] = []
    for n, page in enumerate(site.threads):
        r = page.ref
        docs.append([
            r.href, r.subject, r.first_date.strftime("%Y-%m-%d"), r.last_date.strftime("%Y-%m-%d"),
            ", ".join(r.authors[:4]) + (f" +{len(r.authors) - 4}" if len(r.authors) > 4 else ""),
            r.n_messages, page.excerpt if len(page.excerpt) <= 160 else page.excerpt[:159] + "…",
        ])
        for chunk in thread_text(page):
            text.add(n, chunk)
        for m in page.messages:
            people = ([m.sender] if m.sender else []) + list(m.to) + list(m.cc)
            for i, p in enumerate(people):
                label = f"{p.label} {addr_of.get(p.slug, '')}"
                person.add(n, label)
                if i == 0 and m.sender:
                    sender.add(n, label)
        for t in page.topics:
            topic.add(n, f"{t.label} {t.slug}")
    return {
        "v": INDEX_VERSION,
        "stop": sorted(STOPWORDS),
        "docs": docs,
        "text": text.encode(),
        "from": sender.encode(),
        "person": person.encode(),
        "topic": topic.encode(),
    }


def index_script(index: dict[str, object]) -> bytes:
    """The index as a script. JSON is valid JavaScript; "</" and U+2028/9 are escaped so the
    text can never end a script element or break a line in old parsers."""
    body = json.dumps(index, ensure_ascii=False, separators=(",", ":"))
    body = body.replace("</", "<\\/").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return ("window.GREX_SEARCH=" + body + ";\n").encode("utf-8")
