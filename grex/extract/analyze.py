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


def truncate(text: str, max_chars: int = MAX_CHARS) -> tuple[str, bool]:
    """Cut ``text`` at a whitespace at or before ``max_chars``; offsets stay valid."""
    if len(text) <= max_chars:
        return text, False
    cut = text.rfind(" ", max(0, max_chars - 200), max_chars)
    return text[: cut if cut > 0 else max_chars], True


def _phrases(doc: Doc) -> tuple[Phrase, ...]:
    """Candidate keyphrases: runs of content words (RAKE-style), cut at stop words,
    punctuation, numbers, line breaks and at people/addresses/dates; plus ORG/PRODUCT/...
    entities as they are."""
    blocked = [False] * len(doc)
    ents_as_phrases: list[str] = []
    for ent in doc.ents:
        if ent.label_ in _BREAK_LABELS:
            for i in range(ent.start, ent.end):
                blocked[i] = True
        elif ent.label_ in _PHRASE_LABELS and len(ent) <= 5:
            ents_as_phrases.append(ent.text)
    counts: Counter[str] = Counter()
    surface: dict[str, Counter[str]] = {}

    def add(words: list[Any]) -> None:
        if not words:
            return
        spans = [words] if len(words) <= 4 else [
            words[i:i + 3] for i in range(0, len(words) - 2)]
        for ws in spans:
            text = " ".join(t.text for t in ws)
            key = text.lower()
            counts[key] += 1
            surface.setdefault(key, Counter())[text] += 1

    run: list[Any] = []
    for i, tok in enumerate(doc):
        ok = (not blocked[i] and tok.is_alpha and len(tok) > 2 and not tok.is_stop
              and tok.lower_ not in NOT_NAMES and "\n" not in tok.text_with_ws[:-1]
              and not (tok.is_upper and len(tok) > 6))
        if ok:
            run.append(tok)
            if "\n" in tok.whitespace_ or tok.whitespace_ == "" and i + 1 < len(doc) \
                    and doc[i + 1].is_space:
                add(run)
                run = []
        else:
            add(run)
            run = []
    add(run)
    for text in ents_as_phrases:
        key = " ".join(text.lower().split())
        if key not in counts:
            counts[key] += 1
            surface.setdefault(key, Counter())[" ".join(text.split())] += 1
    return tuple(
        Phrase(key=k, text=surface[k].most_common(1)[0][0], count=c) for k, c in counts.items()
    )


def doc_to_analysis(doc: Doc, truncated: bool) -> TextAnalysis:
    ents = tuple(
        Entity(text=e.text, label=e.label_, start=e.start_char, end=e.end_char) for e in doc.ents
    )
    words = sum(1 for t in doc if not t.is_space and not t.is_punct)
    return TextAnalysis(entities=ents, phrases=_phrases(doc), chars=len(doc.text), words=words,
                        truncated=truncated)


def _make_docs(nlp: Language, items: Sequence[tuple[str, Seeds]], max_chars: int,
               ) -> tuple[list[Doc], list[bool]]:
    from grex.extract.components import SEEDS_KEY

    docs: list[Doc] = []
    flags: list[bool] = []
    for text, seeds in items:
        body, cut = truncate(text or "", max_chars)
        doc = nlp.make_doc(body)
        doc.user_data[SEEDS_KEY] = {"names": list(seeds.names),
                                    "addresses": list(seeds.addresses)}
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
    procs = default_processes() if n_process is None else max(1, n_process)
    for lo in range(0, len(items), chunk):
        part = items[lo:lo + chunk]
        use = procs if len(part) >= MIN_PARALLEL else 1
        try:
            with nlp.memory_zone():
                docs, flags = _make_docs(nlp, part, max_chars)
                out = [doc_to_analysis(d, f) for d, f in zip(
                    nlp.pipe(docs, batch_size=batch_size, n_process=use), flags, strict=True)]
        except (ValueError, RuntimeError) as exc:  # E871: a worker failed
            raise NLPError(f"spaCy failed on a batch of {len(part)} texts: {exc}") from exc
        yield from out


def analyze_text(nlp: Language, text: str, seeds: Seeds | None = None, *,
                 max_chars: int = MAX_CHARS) -> TextAnalysis:
    return next(iter(analyze_texts(nlp, [(text, seeds or Seeds())], n_process=1,
                                   max_chars=max_chars)))
