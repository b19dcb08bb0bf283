"""The model's trained NER, run through spaCy's beam search with a beam of one.

With ``beam_width`` 1 spaCy's ``EntityRecognizer.predict`` takes its greedy path, a C loop
that releases the GIL and then, on every validity check of every action for every token
(``StateC::B_`` and friends in spaCy 3.8's build), takes it back (Cython's exception check
for functions not declared ``noexcept``): perf put ~45 % of the pass in ``take_gil`` /
``drop_gil`` / mutex calls. ``beam_parse`` with a beam of one makes the same choice at each
step (the best-scoring valid action; nothing else survives a beam of one) through numpy,
without that churn: ~1.5-2x faster, entities identical on 20news posts and the enron eval
set (see tests/test_extract_workers.py and scripts/eval_nlp.py).

``BeamOneNER`` wraps the loaded component under its own name ("ner"): everything but
``__call__`` / ``pipe`` is the original's (labels, model, moves ...).

This module imports spaCy: import it only from inside the extraction functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from spacy.language import Language
from spacy.tokens import Doc
from spacy.util import minibatch

FACTORY = "grex_ner_beam1"
_pending: dict[int, Any] = {}  # id(nlp) -> the NER being wrapped (only during replace_pipe)


class BeamOneNER:
    def __init__(self, ner: Any) -> None:
        self.ner = ner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["ner"], name)

    def _annotate(self, docs: list[Doc]) -> None:
        ner = self.ner
        if any(len(d) for d in docs):
            states = ner.beam_parse(docs, beam_width=1, drop=0.0)
        else:
            states = ner.moves.init_batch(docs)
        ner.set_annotations(docs, states)

    def __call__(self, doc: Doc) -> Doc:
        self._annotate([doc])
        return doc

    def pipe(self, docs: Iterable[Doc], *, batch_size: int = 256) -> Iterator[Doc]:
        for batch in minibatch(docs, size=batch_size):
            batch = list(batch)
            self._annotate(batch)
            yield from batch


@Language.factory(FACTORY)
def make_beam_one(nlp: Language, name: str) -> BeamOneNER:
    return BeamOneNER(_pending.pop(id(nlp)))


def use_beam_one(nlp: Language) -> bool:
    """Put the wrapper in place of ``nlp``'s "ner" (same name, same trained model). Only for
    a greedy NER (beam_width 1); returns whether it did."""
    ner = nlp.get_pipe("ner")
    if isinstance(ner, BeamOneNER) or getattr(ner, "cfg", {}).get("beam_width", 1) != 1 \
            or not hasattr(ner, "beam_parse"):
        return False
    _pending[id(nlp)] = ner
    try:
        nlp.replace_pipe("ner", FACTORY)
    finally:
        _pending.pop(id(nlp), None)
    return True
