"""The NLP pass: texts in, ``TextAnalysis`` (entities, candidate phrases) out.

``analyze_texts(nlp, items)`` runs the pipeline from ``grex.extract.model`` over
(text, Seeds) pairs with ``nlp.pipe`` batching. With ``n_process`` > 1 (default: the CPU
count) large batches go to a pool of worker processes forked from this one: they share the
loaded model (no reload), make their own Docs and send back plain ``TextAnalysis`` records,
so this process only hands out texts and collects small results (spaCy's own ``n_process``
pickles every Doc to the workers and back, and left this process doing the tokenizing and
the clean-up: 2 processes gave 1.27x of one). Work is done inside ``nlp.memory_zone()``,
so the StringStore doesn't grow with the corpus: everything is copied out into plain
records before a zone ends. The matrix products run single-threaded (one BLAS thread per
process: the workers are the parallelism).
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import signal
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from typing import TYPE_CHECKING, Any

from grex.errors import NLPError
from grex.extract.names import NOT_NAMES
from grex.extract.records import Entity, Phrase, Seeds, TextAnalysis

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Doc

MAX_CHARS = 20_000  # longer bodies are cut (TextAnalysis.truncated) and noted in the result
MIN_PARALLEL = 64  # texts: below this the work stays in this process
CHUNK = 2_000  # texts per memory zone in this process
TASK = 16  # texts per task sent to a worker (and per memory zone there)
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
    from grex.extract.rules import SEEDS_KEY, TEXT_KEY

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


def _one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """Matrix products on one thread while the pass runs (a BLAS pool of its own in every
    worker would fight the other workers for the cores)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _set_hugepages(on: bool) -> bool | None:
    """numpy asks the kernel for transparent huge pages for every large array; the NER's
    arrays are made and freed thousands of times, and zeroing a fresh 2 MB page at each
    first touch took ~17 % of the pass (perf: clear_page_erms under
    do_huge_pmd_anonymous_page). Returns the previous setting (None: not available)."""
    import importlib

    for name in ("numpy._core.multiarray", "numpy.core.multiarray"):  # numpy 2 / numpy 1
        try:
            setter = getattr(importlib.import_module(name), "_set_madvise_hugepage", None)
        except ImportError:
            continue
        if setter is not None:
            return bool(setter(on))
    return None


@contextlib.contextmanager
def _pass_settings() -> Iterator[None]:
    """One BLAS thread and no huge-page hints while the pass runs; restored afterwards."""
    before = _set_hugepages(False)
    try:
        with _one_blas_thread():
            yield
    finally:
        if before is not None:
            _set_hugepages(before)


def _longest_first(items: Sequence[tuple[str, Seeds]]) -> list[int]:
    """Indices of ``items``, longest text first: texts of like length go into the same NER
    batches (the NER steps through the open entities of a batch's texts together, so the
    longest text of a batch sets its number of steps), and the workers get the longest
    tasks first, so that no long one is left running alone at the end of the pool."""
    return sorted(range(len(items)), key=lambda i: len(items[i][0] or ""), reverse=True)


def _analyze_part(nlp: Language, part: Sequence[tuple[str, Seeds]], batch_size: int,
                  max_chars: int) -> list[TextAnalysis]:
    from grex.extract.rules import TEXT_KEY

    order = _longest_first(part)
    out: dict[int, TextAnalysis] = {}
    with nlp.memory_zone():
        docs, flags = _make_docs(nlp, [part[i] for i in order], max_chars)
        for i, doc, cut in zip(order, nlp.pipe(docs, batch_size=batch_size), flags,
                               strict=True):
            out[i] = doc_to_analysis(doc, cut, doc.user_data.get(TEXT_KEY))
    return [out[i] for i in range(len(part))]


# Inside a memory zone spaCy's tokenizer caches nothing (spacy/tokenizer.pyx _save_cached),
# so every word is split into affixes and looked up afresh. Frequent words are therefore
# tokenized once outside any zone: cached and kept for good (up to WARM_WORDS words, so the
# vocabulary stays bounded). The cache is only a memo: the tokens are the same either way.
WARM_WORDS = 10_000
_warmed: dict[int, set[str]] = {}


def _warm_tokenizer(nlp: Language, items: Sequence[tuple[str, Seeds]], max_chars: int) -> None:
    seen = _warmed.setdefault(id(nlp.vocab), set())
    room = WARM_WORDS - len(seen)
    if room <= 0 or getattr(nlp.vocab, "in_memory_zone", False):
        return
    counts = Counter(w for text, _ in items for w in (text or "")[:max_chars].split()
                     if w not in seen)
    new = [w for w, c in counts.most_common(room) if c > 1]
    if new:
        seen.update(new)
        for word in new:
            nlp.tokenizer(word)


def _release_memory() -> None:
    """Give the heap that a pass freed back to the system (glibc keeps it otherwise: ~250 MB
    more RSS after 1,000 20news posts in one process, though flat as the corpus grows)."""
    with contextlib.suppress(Exception):  # glibc only
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)


# ------------------------------------------------------------------ worker processes
_worker_nlp: Any = None


def _worker_init(nlp: Language, parent: int) -> None:
    """In a forked worker: keep the inherited model, one BLAS thread, and die with the
    parent (a worker left behind would keep inherited file descriptors, such as the KB
    lock, open)."""
    global _worker_nlp
    _worker_nlp = nlp
    with contextlib.suppress(Exception):  # Linux only; elsewhere the pool's own checks
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    _one_blas_thread()  # a plain call sets the limit for the rest of the worker's life
    _set_hugepages(False)


def _worker_run(part: Sequence[tuple[str, Seeds]], batch_size: int,
                max_chars: int) -> list[TextAnalysis]:
    return _analyze_part(_worker_nlp, part, batch_size, max_chars)


def _fork_context() -> Any:
    try:
        return multiprocessing.get_context("fork")
    except ValueError:  # no fork on this platform: stay in this process
        return None


def _analyze_parallel(nlp: Language, items: Sequence[tuple[str, Seeds]], procs: int,
                      batch_size: int, max_chars: int, ctx: Any) -> list[TextAnalysis]:
    order = _longest_first(items)
    tasks = [[items[i] for i in order[lo:lo + TASK]] for lo in range(0, len(items), TASK)]
    out: dict[int, TextAnalysis] = {}
    with ProcessPoolExecutor(max_workers=min(procs, len(tasks)), mp_context=ctx,
                             initializer=_worker_init, initargs=(nlp, os.getpid())) as pool:
        try:
            # the workers are forked at the first submit: with the model's objects frozen,
            # the workers' garbage collector neither scans them nor dirties (copies) their
            # shared pages
            gc.freeze()
            try:
                results = pool.map(_worker_run, tasks, repeat(batch_size), repeat(max_chars))
            finally:
                gc.unfreeze()
            for lo, res in zip(range(0, len(items), TASK), results, strict=True):
                for i, analysis in zip(order[lo:lo + TASK], res, strict=True):
                    out[i] = analysis
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return [out[i] for i in range(len(items))]


def analyze_texts(nlp: Language, items: Sequence[tuple[str, Seeds]], *,
                  n_process: int | None = None, batch_size: int = 64,
                  max_chars: int = MAX_CHARS, chunk: int = CHUNK) -> Iterator[TextAnalysis]:
    """Analyse (text, seeds) pairs in order. ``n_process`` defaults to the CPU count but is
    only used for batches of at least MIN_PARALLEL texts (and where fork is available)."""
    procs = default_processes() if n_process is None else max(1, n_process)
    ctx = _fork_context() if procs > 1 and len(items) >= MIN_PARALLEL else None
    step = max(1, len(items)) if ctx is not None else chunk
    for lo in range(0, len(items), step):
        part = items[lo:lo + step]
        _warm_tokenizer(nlp, part, max_chars)  # before forking: the workers inherit it
        try:
            with _pass_settings():
                if ctx is not None:
                    out = _analyze_parallel(nlp, part, procs, batch_size, max_chars, ctx)
                else:
                    gc.freeze()  # the collector leaves the model's objects alone (~2 %)
                    try:
                        out = _analyze_part(nlp, part, batch_size, max_chars)
                    finally:
                        gc.unfreeze()
                    _release_memory()
        except (ValueError, RuntimeError) as exc:  # a worker failed (or died: BrokenPool)
            raise NLPError(f"spaCy failed on a batch of {len(part)} texts: {exc}") from exc
        yield from out


def analyze_text(nlp: Language, text: str, seeds: Seeds | None = None, *,
                 max_chars: int = MAX_CHARS) -> TextAnalysis:
    return next(iter(analyze_texts(nlp, [(text, seeds or Seeds())], n_process=1,
                                   max_chars=max_chars)))
