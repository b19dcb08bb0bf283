"""The model's trained NER, decoded in numpy: spaCy's greedy choices, batch by batch.

spaCy's ``EntityRecognizer`` is a transition system (BILUO moves: Begin, In, Last, Unit,
Out, each with a label; every move consumes one token) scored by a small network: a CNN
tok2vec, a "lower" layer precomputed once per token for each of three state features (the
token, the first word of the open entity, the previous word; the last two only while an
entity is open, padding otherwise), a maxout and an "upper" linear layer giving every
move's score. Its greedy C loop releases the GIL and then takes it back at every validity
check of every move for every token (Cython's exception check on functions not declared
``noexcept`` in spaCy 3.8's build: perf put ~45 % of the pass in ``take_gil`` /
``drop_gil``). Its beam search with a beam of one, which grex used before, still paid that
churn in ``set_valid`` (~12 % of the pass in ``PyGILState_*``), walked every state of the
batch through Python objects at every step (with the checks, ~5 of the 13 CPU-s per
1,000 20news posts), and strayed from the greedy choice in 3 of the 11,314 posts of
20news-bydate-train (near ties, as its beam adds up the scores of a whole text).

``FastNER`` runs the same layers and does the rest with whole-array numpy operations. With
no entity open a state depends on its token alone, so the move spaCy would take is
computed for every token of a batch at once (one matrix product); only the tokens after a
Begin, while an entity is open, are stepped through, all texts of the batch together, each
at its own position. The moves that spaCy's ``is_valid`` rules (``ner.pyx``) forbid are
masked from tables made once per batch for each kind of token (preset entity tags of this
and the next token, whitespace, sentence starts, end of text); the best valid move is the
first of the highest scores, as in spaCy's greedy loop. The tok2vec runs in chunks of about
``T2V_TOKENS`` tokens (its arrays stay in the CPU caches). Entities are identical to spaCy's
own greedy NER: on all 11,314 posts of 20news-bydate-train (181,322 entities, after the
rules' preset entities), on the enron evaluation set (scripts/eval_nlp.py) and in
tests/test_extract_workers.py.

This module imports spaCy: import it only from inside the extraction functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from spacy.attrs import ENT_IOB, ENT_TYPE, IS_SPACE, SENT_START
from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.util import minibatch

FACTORY = "grex_ner_fast"
T2V_TOKENS = 1_500  # tokens per tok2vec call (bigger arrays leave the caches: ~30 % slower)
GROUP_TOKENS = 24_000  # tokens decoded together (the precomputed features: 1.5 kB a token)
_pending: dict[int, Any] = {}  # id(nlp) -> the NER being wrapped (only during replace_pipe)

_B, _I, _L, _U, _O = range(5)
_NEG_INF = np.float32(-np.inf)
_LOWEST = np.finfo(np.float32).min
_MOVES = {"B": _B, "I": _I, "L": _L, "U": _U}


class _Moves:
    """The NER's moves as arrays: kind (B/I/L/U/O) and label index (0: no label)."""

    def __init__(self, ner: Any) -> None:
        moves = ner.moves
        self.n = int(moves.n_moves)
        kinds: list[int] = []
        hashes: list[int] = []
        for i in range(self.n):
            name = moves.get_class_name(i)
            head, _, label = name.partition("-")
            kinds.append(_O if name == "O" else _MOVES[head])
            hashes.append(int(ner.vocab.strings[label]) if label else 0)
        self.kind = np.array(kinds, dtype=np.int8)
        self.hash = np.array(hashes, dtype=np.uint64)
        self.label_ids = {h: i + 1 for i, h in enumerate(sorted(set(hashes) - {0}))}
        self.label = np.array([self.label_ids.get(h, 0) for h in hashes], dtype=np.int64)
        self.label_hash = np.array([0, *sorted(self.label_ids)], dtype=np.uint64)
        # same_label[l, c]: move c's label is label l
        self.same_label = self.label[None, :] == np.arange(len(self.label_ids) + 1)[:, None]


def _valid_tables(mv: _Moves, p0: np.ndarray, p1: np.ndarray, more: np.ndarray,
                  ss1: np.ndarray, sp0: np.ndarray, l0: np.ndarray,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """spaCy's BILUO ``is_valid`` rules (spacy/pipeline/_parser_internals/ner.pyx) for each
    kind of token, given as arrays: p0 / p1 the preset ENT_IOB of this and the next token
    (0 missing, 1 I, 2 O, 3 B; 0 past the end), ``more`` a next token exists, ss1 the next
    token starts a sentence, sp0 this token is whitespace, l0 the preset label's index.
    Returns (valid with no entity open, valid with one open, moves whose validity with an
    open entity needs no match between their label and the open entity's)."""
    kind = mv.kind[None, :]
    nolabel = (mv.label == 0)[None, :]
    preset = mv.label[None, :] == l0[:, None]  # the move's label is the preset one
    p0, p1, more, ss1, sp0 = (a[:, None] for a in (p0, p1, more, ss1, sp0))
    blocked = (l0 == 0)[:, None] & (p0 == 3)
    is_b, is_i, is_l, is_u, is_o = (kind == k for k in (_B, _I, _L, _U, _O))
    begin = more & ~nolabel & (p0 != 1) & np.where(p0 == 3, preset & (p1 == 1),
                                                   (p1 != 3) & ~ss1 & ~sp0)
    unit = np.where(nolabel, blocked, (p1 != 1) & np.where(p0 == 3, preset, ~sp0))
    out = (p0 != 3) & (p0 != 1)
    closed = is_b & begin | is_u & unit | is_o & out
    inside = more & ~nolabel & (p0 != 3) & (p1 != 3) & np.where(
        p0 == 1, (p1 != 0) & (p1 != 2) & preset, ~ss1)
    preset_last = (p0 == 1) & (p1 != 1)
    last = ~nolabel & np.where(preset_last, preset, p1 != 1)
    opened = is_i & inside | is_l & last | is_u & nolabel & blocked
    no_match = ~(is_i | is_l & ~preset_last)
    return closed, opened, no_match


class FastNER:
    def __init__(self, ner: Any) -> None:
        self.ner = ner
        self._moves: _Moves | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["ner"], name)

    # -- the numpy decoder --------------------------------------------------------------
    def fits(self) -> bool:
        """Whether the wrapped NER is the kind this decoder reproduces (spaCy's BILUO
        transitions, an upper layer, the three state features of its NER models)."""
        from spacy.pipeline._parser_internals.ner import BiluoPushDown

        model = getattr(self.ner, "model", None)
        try:
            lower = model.get_ref("lower")  # type: ignore[union-attr]
            return (isinstance(self.ner.moves, BiluoPushDown)
                    and bool(model.attrs.get("has_upper"))  # type: ignore[union-attr]
                    and lower.get_dim("nF") == 3 and lower.has_param("pad")
                    and not self.ner.postprocesses)
        except (AttributeError, KeyError, ValueError):
            return False

    def _features(self, docs: Sequence[Doc]) -> np.ndarray:
        """The lower layer's output for every token of ``docs`` (row 0: the padding used
        for absent features), with the tok2vec run in chunks of about T2V_TOKENS."""
        model = self.ner.model
        tok2vec, lower = model.get_ref("tok2vec"), model.get_ref("lower")
        parts: list[Any] = []
        chunk: list[Doc] = []
        size = 0
        for doc in docs:
            chunk.append(doc)
            size += len(doc)
            if size >= T2V_TOKENS:
                parts.append(tok2vec.predict(chunk))
                chunk, size = [], 0
        if chunk:
            parts.append(tok2vec.predict(chunk))
        tokvecs = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return lower.predict(tokvecs)

    def _decode(self, docs: list[Doc]) -> list[list[tuple[int, int, int]]]:
        """(start, end, label hash) of the entities of each of ``docs``.

        With no entity open, a state's features are its token's alone (the other two are
        the padding), so the move spaCy would take there is computed for every token at
        once, in a few large array operations. Only the tokens after a Begin (an entity
        open: its first word and the previous word are features too) are stepped through,
        all documents together, each at its own position; every other token's move is the
        precomputed one: Out, Unit (an entity of one token) or the next Begin."""
        mv = self._moves
        assert mv is not None
        model = self.ner.model
        upper, lower = model.get_ref("upper"), model.get_ref("lower")
        lens = np.array([len(d) for d in docs], dtype=np.int64)
        offs = np.zeros(len(docs), dtype=np.int64)
        np.cumsum(lens[:-1], out=offs[1:])
        ends = offs + lens
        total = int(lens.sum())
        feats = self._features(docs)  # (total + 1, 3, nO, nP); row 0: the padding
        f_tok, f_start, f_prev = feats[:, 0], feats[:, 1], feats[:, 2]
        bias = lower.get_param("b")
        weights_t = upper.get_param("W").T
        upper_b = upper.get_param("b")
        # spaCy gives the moves of labels added after training ("unseen": the rules' EMAIL,
        # TICKET ...) the lowest score of the step, so that one is taken only where no
        # other move is valid (at a preset entity of that label): a valid move of the
        # model's scores at least as much, and ties go to the lower index (the added moves
        # come last). The lowest float makes the same choices.
        unseen = sorted(model.attrs["unseen_classes"])

        def scores_of(hidden: np.ndarray) -> np.ndarray:
            hidden += bias  # as spaCy's precompute_hiddens: ((tok + start) + prev) + bias
            best = hidden[..., 0]  # maxout (numpy's max over a short last axis is slow)
            for piece in range(1, hidden.shape[2]):
                best = np.maximum(best, hidden[..., piece])
            scores = np.dot(best, weights_t)  # the upper layer
            scores += upper_b
            if unseen:
                scores[:, unseen] = _LOWEST
            return scores

        # per token: preset tags, whitespace, sentence starts (of this and the next token)
        tok = np.concatenate([d.to_array([ENT_IOB, ENT_TYPE, IS_SPACE, SENT_START])
                              for d in docs]).reshape(-1, 4)
        iob = tok[:, 0].astype(np.int64)
        more = np.arange(1, total + 1) < np.repeat(ends, lens)  # a next token in the doc
        nxt = np.minimum(np.arange(1, total + 1), total - 1)
        p1 = np.where(more, iob[nxt], 0)
        ss1 = more & (tok[nxt, 3] == 1)
        space = tok[:, 2] != 0
        l0 = np.zeros(total, dtype=np.int64)
        if ((iob == 1) | (iob == 3)).any():
            get = mv.label_ids.get
            l0 = np.array([get(h, 0) for h in tok[:, 1].tolist()], dtype=np.int64)
        # tokens alike in all of these have the same valid moves: tabulate once per kind
        key = (((iob * 4 + p1) * 2 + more) * 2 + ss1) * 2 + space
        key = key * (len(mv.label_ids) + 1) + l0
        keys, kind_of = np.unique(key, return_inverse=True)
        kind_of = kind_of.reshape(-1)
        first = np.zeros(len(keys), dtype=np.int64)
        first[kind_of[::-1]] = np.arange(total)[::-1]
        closed, opened, no_match = _valid_tables(
            mv, iob[first], p1[first], more[first], ss1[first], space[first], l0[first])
        # every token's move with no entity open
        hidden = f_tok[1:] + f_start[0]
        hidden += f_prev[0]
        scores = scores_of(hidden)
        scores += np.where(closed, np.float32(0), _NEG_INF)[kind_of]  # invalid: -inf
        move_closed = scores.argmax(axis=1)
        kind_closed = mv.kind[move_closed]
        # the next Begin at or after each token, in its document (else the doc's end)
        idx = np.arange(total)
        next_begin = np.where(kind_closed == _B, idx, np.repeat(ends, lens))
        next_begin = np.minimum.accumulate(next_begin[::-1])[::-1]
        # step through the open entities; pos: each document's next token
        pos = offs.copy()
        is_open = np.zeros(len(docs), dtype=bool)
        start = np.zeros(len(docs), dtype=np.int64)
        label = np.zeros(len(docs), dtype=np.int64)
        live = np.flatnonzero(lens)
        found: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        inside = np.zeros(total + 1, dtype=np.int64)  # +1 / -1 where open stretches start / end
        while live.size:
            shut = live[~is_open[live]]
            if shut.size:  # jump to the next Begin, or finish
                at = np.minimum(pos[shut], total - 1)
                q = np.where(pos[shut] < ends[shut], next_begin[at], ends[shut])
                go = q < ends[shut]
                shut, q = shut[go], q[go]
                start[shut] = q
                label[shut] = mv.label[move_closed[q]]
                is_open[shut] = True
                pos[shut] = q + 1
            live = live[is_open[live]]
            if not live.size:
                break
            at = pos[live]  # a Begin is never on a doc's last token, nor an In
            hidden = f_tok[at + 1] + f_start[start[live] + 1]
            hidden += f_prev[at]
            kinds = kind_of[at]
            valid = opened[kinds] & (no_match[kinds] | mv.same_label[label[live]])
            best = np.where(valid, scores_of(hidden), _NEG_INF).argmax(axis=1)
            move = mv.kind[best]
            done = move != _I  # Last closes the entity; Unit (a blocked preset) drops it
            if done.any():
                d = live[done]
                unit = move[done] == _U
                found.append((d, np.where(unit, at[done], start[d]), at[done] + 1,
                              np.where(unit, mv.label[best[done]], label[d])))
                np.add.at(inside, start[d] + 1, 1)
                np.add.at(inside, at[done] + 1, -1)
                is_open[d] = False
            pos[live] += 1
        # the tokens decided with no entity open: all but those after each Begin up to
        # its entity's end; a Unit there is an entity of one token
        units = np.flatnonzero((np.cumsum(inside[:-1]) == 0) & (kind_closed == _U))
        doc_of = np.repeat(np.arange(len(docs)), lens)
        parts = [(doc_of[units], units, units + 1, mv.label[move_closed[units]])]
        ents: list[list[tuple[int, int, int]]] = [[] for _ in docs]
        for d, s, e, lab in [*found, *parts]:
            o = offs[d]
            for i, a, z, h in zip(d.tolist(), (s - o).tolist(), (e - o).tolist(),
                                  mv.label_hash[lab].tolist(), strict=True):
                ents[i].append((a, z, h))
        return ents

    def _set(self, doc: Doc, ents: list[tuple[int, int, int]]) -> None:
        """As spaCy's BiluoPushDown.set_annotations: the entities found (a preset entity is
        always among them), blocked presets kept, every other token outside."""
        spans = []
        blocked = []
        for s, e, h in sorted(ents):
            if h:
                spans.append(Span(doc, s, e, label=h, kb_id=doc[s].ent_kb_id))
            else:
                blocked.append(Span(doc, s, e))
        doc.set_ents(spans, blocked=blocked or None, default="outside")

    def _annotate(self, docs: list[Doc]) -> None:
        ner = self.ner
        if not any(len(d) for d in docs):
            ner.set_annotations(docs, ner.moves.init_batch(docs))
            return
        ner._ensure_labels_are_added(docs)  # labels of preset entities (EMAIL, ...)
        if self._moves is None or self._moves.n != ner.moves.n_moves:
            self._moves = _Moves(ner)
        todo = sorted((d for d in docs if len(d)), key=len, reverse=True)
        for d in docs:
            if not len(d):
                self._set(d, [])
        group: list[Doc] = []
        size = 0
        for doc in [*todo, None]:
            if doc is None or (group and size + len(doc) > GROUP_TOKENS):
                for d, ents in zip(group, self._decode(group), strict=True):
                    self._set(d, ents)
                group, size = [], 0
            if doc is not None:
                group.append(doc)
                size += len(doc)

    def __call__(self, doc: Doc) -> Doc:
        self._annotate([doc])
        return doc

    def pipe(self, docs: Iterable[Doc], *, batch_size: int = 256) -> Iterator[Doc]:
        for batch in minibatch(docs, size=batch_size):
            batch = list(batch)
            self._annotate(batch)
            yield from batch


@Language.factory(FACTORY)
def make_fast_ner(nlp: Language, name: str) -> FastNER:
    return FastNER(_pending.pop(id(nlp)))


def use_fast_ner(nlp: Language) -> bool:
    """Put the wrapper in place of ``nlp``'s "ner" (same name, same trained model). Only for
    a greedy NER (beam_width 1) of the kind the decoder reproduces; returns whether it
    did."""
    ner = nlp.get_pipe("ner")
    if isinstance(ner, FastNER) or getattr(ner, "cfg", {}).get("beam_width", 1) != 1 \
            or not FastNER(ner).fits():
        return False
    _pending[id(nlp)] = ner
    try:
        nlp.replace_pipe("ner", FACTORY)
    finally:
        _pending.pop(id(nlp), None)
    return True
