"""The NLP pass: texts in, ``TextAnalysis`` (entities, candidate phrases) out.

``analyze_texts(nlp, items)`` runs the pipeline from ``grex.extract.model`` over
(text, Seeds) pairs with ``nlp.pipe`` batching; large batches use ``n_process`` workers
(spaCy starts new workers at every ``pipe`` call, so small batches stay in-process). Work is
done in chunks, each inside ``nlp.memory_zone()``, so the StringStore doesn't grow with the
corpus: everything is copied out into plain records before a zone ends.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from grex.errors import NLPError
from grex.extract.names import NOT_NAMES
from grex.extract.records import Entity, Phrase, Seeds, TextAnalysis

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Doc

MAX_CHARS = 20_000  # longer bodies are cut (TextAnalysis.truncated) and noted in the result
MIN_PARALLEL = 400  # texts: below this, worker start-up costs more than it saves
CHUNK = 2_000  # texts per memory zone (and per worker start with n_process > 1)
_BREAK_LABELS = frozenset({"PERSON", "EMAIL", "URL", "PHONE", "DATE", "MONEY", "TICKET", "GPE"})
_PHRASE_LABELS = frozenset({"ORG", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW", "FAC", "LOC"})


_DIFF_HEAD = ("diff --git ", "diff -", "Index: ", "--- a/", "+++ b/", "@@ ", "--- ", "+++ ")


def mask_noise(text: str) -> str:
    """Blank out (same length, newlines kept, so offsets stay valid) what isn't prose:
    patch hunks and long unbroken runs such as base64 or uuencoded lines."""
    if "\n" not in text and len(text) < 50:
        return text
    out: list[str] = []
    in_diff = False
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        noise = False
        if body.startswith(_DIFF_HEAD[:4]) or (body.startswith("@@ ") and "@@" in body[3:]):
            in_diff = True
            noise = True
        elif in_diff and (body[:1] in ("+", "-", " ") or body.startswith(("index ", "\\ "))):
            noise = True
        else:
            in_diff = False
        if not noise and len(body) >= 50 and " " not in body.strip():
            noise = True
        out.append(" " * len(body) + line[len(body):] if noise else line)
    return "".join(out)


def truncate(text: str, max_chars: int = MAX_CHARS) -> tuple[str, bool]:
    """Cut ``text`` at a whitespace at or before ``max_chars``; offsets stay valid."""
    if len(text) <= max_chars:
        return text, False
    cut = text.rfind(" ", max(0, max_chars - 200), max_chars)
    return text[: cut if cut > 0 else max_chars], True


def _phrases(text: str, ents: Sequence[Any], rows: list[list[int]]) -> tuple[Phrase, ...]:
    """Candidate keyphrases: runs of content words (RAKE-style), cut at stop words,
    punctuation, numbers, line breaks and at people/addresses/dates; plus ORG/PRODUCT/...
    entities as they are. ``rows``: per token IS_ALPHA, IS_STOP, IS_UPPER, IS_SPACE,
    IS_PUNCT, IDX, LENGTH (token attributes read once as an array: Token objects are slow)."""
    n = len(rows)
    blocked = bytearray(n)
    ents_as_phrases: list[str] = []
    for ent in ents:
        if ent.label_ in _BREAK_LABELS:
            for i in range(ent.start, ent.end):
                blocked[i] = 1
        elif ent.label_ in _PHRASE_LABELS and len(ent) <= 5:
            ents_as_phrases.append(ent.text)
    counts: Counter[str] = Counter()
    surface: dict[str, Counter[str]] = {}

    def add(words: list[str]) -> None:
        spans = [words] if len(words) <= 4 else [
            words[i:i + 3] for i in range(0, len(words) - 2)]
        for ws in spans:
            text = " ".join(ws)
            key = text.lower()
            counts[key] += 1
            surface.setdefault(key, Counter())[text] += 1

    run: list[str] = []
    for i, (alpha, stop, upper, _space, _punct, idx, length) in enumerate(rows):
        if alpha and not stop and length > 2 and not blocked[i] and not (upper and length > 6):
            w = text[idx:idx + length]
            if w.lower() not in NOT_NAMES:
                run.append(w)
                nxt = rows[i + 1][5] if i + 1 < n else len(text)
                if "\n" in text[idx + length:nxt]:
                    add(run)
                    run = []
                continue
        if run:
            add(run)
            run = []
    if run:
        add(run)
    for etext in ents_as_phrases:
        key = " ".join(etext.lower().split())
        if key not in counts:
            counts[key] += 1
            surface.setdefault(key, Counter())[" ".join(etext.split())] += 1
    return tuple(
        Phrase(key=k, text=surface[k].most_common(1)[0][0], count=c) for k, c in counts.items()
    )


def doc_to_analysis(doc: Doc, truncated: bool, text: str | None = None) -> TextAnalysis:
    from spacy.attrs import IDX, IS_ALPHA, IS_PUNCT, IS_SPACE, IS_STOP, IS_UPPER, LENGTH

    spans = list(doc.ents)
    # the masked text differs from the original only in blanked characters: same offsets
    ents = tuple(Entity(text=e.text, label=e.label_, start=e.start_char, end=e.end_char)
                 for e in spans)
    rows = doc.to_array([IS_ALPHA, IS_STOP, IS_UPPER, IS_SPACE, IS_PUNCT, IDX, LENGTH]).tolist() \
        if len(doc) else []
    words = sum(1 for r in rows if not r[3] and not r[4])
    if text is None:
        text = doc.text  # Doc.text joins every token: callers pass the text they made it from
    return TextAnalysis(entities=ents, phrases=_phrases(text, spans, rows), chars=len(text),
                        words=words, truncated=truncated)


def _make_docs(nlp: Language, items: Sequence[tuple[str, Seeds]], max_chars: int,
               ) -> tuple[list[Doc], list[bool]]:
    from grex.extract.components import SEEDS_KEY, TEXT_KEY

    docs: list[Doc] = []
    flags: list[bool] = []
    for text, seeds in items:
        body, cut = truncate(text or "", max_chars)
        masked = mask_noise(body)
        doc = nlp.make_doc(masked)
        doc.user_data[SEEDS_KEY] = {"names": list(seeds.names),
                                    "addresses": list(seeds.addresses)}
        doc.user_data[TEXT_KEY] = masked
        docs.append(doc)
        flags.append(cut)
    return docs, flags


def default_processes() -> int:
    return max(1, os.cpu_count() or 1)


def analyze_texts(nlp: Language, items: Sequence[tuple[str, Seeds]], *,
                  n_process: int | None = None, batch_size: int = 64,
                  max_chars: int = MAX_CHARS, chunk: int = CHUNK) -> Iterator[TextAnalysis]:
    """Analyse (text, seeds) pairs in order. ``n_process`` defaults to the CPU count but is
    only used for chunks of at least MIN_PARALLEL texts."""
    from grex.extract.components import TEXT_KEY

    procs = default_processes() if n_process is None else max(1, n_process)
    for lo in range(0, len(items), chunk):
        part = items[lo:lo + chunk]
        use = procs if len(part) >= MIN_PARALLEL else 1
        try:
            with nlp.memory_zone():
                docs, flags = _make_docs(nlp, part, max_chars)
                out = [doc_to_analysis(d, f, d.user_data.get(TEXT_KEY)) for d, f in zip(
                    nlp.pipe(docs, batch_size=batch_size, n_process=use), flags, strict=True)]
        except (ValueError, RuntimeError) as exc:  # E871: a worker failed
            raise NLPError(f"spaCy failed on a batch of {len(part)} texts: {exc}") from exc
        yield from out


def analyze_text(nlp: Language, text: str, seeds: Seeds | None = None, *,
                 max_chars: int = MAX_CHARS) -> TextAnalysis:
    return next(iter(analyze_texts(nlp, [(text, seeds or Seeds())], n_process=1,
                                   max_chars=max_chars)))
