"""The NLP pass with worker processes, the tokenizer warm-up and the matrix products: the
same results as the plain in-process pass, workers that don't outlive their parent, and a
vocabulary that doesn't grow with the corpus."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grex.extract.analyze import MIN_PARALLEL, analyze_texts
from grex.extract.records import Seeds
from tests.fixtures_extract import FIXTURE_MAILS

pytestmark = pytest.mark.nlp
ROOT = Path(__file__).resolve().parents[1]


def _items(n: int) -> list[tuple[str, Seeds]]:
    seeds = Seeds(names=("Kerry McGuire", "Raj Patel"),
                  addresses=("kerry.mcguire@acme-widgets.com", "raj.patel@acme-widgets.com"))
    bodies = [m["body"] for m in FIXTURE_MAILS]
    out = []
    for i in range(n):
        body = bodies[i % len(bodies)]
        # every text differs (its own number, a different word count) so order is checked
        out.append((f"Note {i} from Houston.\n" + body * (1 + i % 3), seeds if i % 2 else Seeds()))
    return out


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def test_workers_give_the_in_process_results_in_order(nlp_model) -> None:
    items = _items(MIN_PARALLEL + 9)
    alone = list(analyze_texts(nlp_model, items, n_process=1))
    before = _children_cpu()
    pooled = list(analyze_texts(nlp_model, items, n_process=2))
    assert _children_cpu() > before  # the work was done by (finished) child processes
    assert pooled == alone
    assert len({a.chars for a in pooled}) > 3
    for (text, _), a in zip(items, pooled, strict=True):
        for e in a.entities:
            assert text[e.start:e.end] == e.text
    people = {e.text for a in pooled for e in a.entities if e.label == "PERSON"}
    assert {"Kerry", "Raj"} <= people, people


def test_small_batches_stay_in_process(nlp_model) -> None:
    before = _children_cpu()
    out = list(analyze_texts(nlp_model, _items(3), n_process=2))
    assert len(out) == 3
    assert _children_cpu() == before


def test_a_repeated_corpus_leaves_the_vocabulary_as_it_was(nlp_model) -> None:
    items = _items(20)
    list(analyze_texts(nlp_model, items, n_process=1))
    size = len(nlp_model.vocab.strings)
    list(analyze_texts(nlp_model, items, n_process=1))
    assert len(nlp_model.vocab.strings) == size
    # words seen once are never kept (only frequent words are tokenized outside a zone)
    rare = " ".join(f"qz{i}xv{i * 7}" for i in range(3000))
    list(analyze_texts(nlp_model, [(rare, Seeds())], n_process=1))
    assert len(nlp_model.vocab.strings) == size


def test_warm_tokenizer_changes_no_token(nlp_model) -> None:
    from grex.extract import analyze

    text = ("Re-send the Q3 numbers (final!) to dana@acme.com, e.g. via https://x.example/a?b=1; "
            "it's 40% done -- don't wait.\n\nThanks,\nDana")
    with nlp_model.memory_zone():
        cold = [(t.text, t.whitespace_, t.is_stop) for t in nlp_model.make_doc(text)]
    vocab_id = id(nlp_model.vocab)
    saved = set(analyze._warmed.get(vocab_id, set()))
    try:
        analyze._warmed[vocab_id] = set()
        analyze._warm_tokenizer(nlp_model, [(text + " " + text, Seeds())], 10_000)
        assert analyze._warmed[vocab_id]
        with nlp_model.memory_zone():
            warm = [(t.text, t.whitespace_, t.is_stop) for t in nlp_model.make_doc(text)]
    finally:
        analyze._warmed[vocab_id] = saved | analyze._warmed.get(vocab_id, set())
    assert warm == cold


def test_numpy_matmul_finds_what_blis_finds(nlp_model) -> None:
    """The NER's matrix products go through numpy (model.py): same entities as thinc's
    default BLIS ops on the fixture mail."""
    from thinc.api import NumpyOps

    ner = nlp_model.get_pipe("ner").model
    ours = ner.ops
    assert isinstance(ours, NumpyOps) and not ours.use_blis
    items = _items(12)
    fast = list(analyze_texts(nlp_model, items, n_process=1))
    blis = NumpyOps()
    try:
        for node in ner.walk():
            node.ops = blis
        slow = list(analyze_texts(nlp_model, items, n_process=1))
    finally:
        for node in ner.walk():
            node.ops = ours
    assert [a.entities for a in fast] == [a.entities for a in slow]


def _state(pid: int) -> tuple[str, int]:
    """(state, parent pid) of a process; ("", 0) when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return "", 0
    return fields[0], int(fields[1])


def _children_of(pid: int) -> list[int]:
    kids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    return [k for k in kids if _state(k)[1] == pid and _state(k)[0] not in ("", "Z")]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_workers_die_with_their_parent(tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from grex.extract.analyze import analyze_texts\n"
        "from grex.extract.model import load_model\n"
        "from grex.extract.records import Seeds\n"
        "nlp, _ = load_model()\n"
        "text = 'Kerry McGuire met Dana Whitfield of Acme in Houston on Monday. ' * 40\n"
        "list(analyze_texts(nlp, [(text, Seeds())] * 4000, n_process=2))\n")
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        kids: list[int] = []
        while time.monotonic() < deadline and len(kids) < 2 and proc.poll() is None:
            time.sleep(0.2)
            kids = _children_of(proc.pid)
        assert len(kids) == 2, f"workers never started (exit code {proc.poll()})"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        alive = kids
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [k for k in kids if _state(k)[0] not in ("", "Z")]  # zombies are dead
        assert not alive, f"workers {alive} outlived their parent"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _ents(doc) -> list[tuple[int, int, str]]:
    return [(e.start, e.end, e.label_) for e in doc.ents]


_ODD_TEXTS = [
    "", "   \n\n", "IBM", "Kerry", "ACME CORP. SIGNED WITH SIEMENS AG IN MUNICH ON 3 MAY.",
    "the new york office of goldman sachs said so", "x" * 300,
    # the rules' preset entities, of labels the trained model doesn't know (EMAIL, TICKET..)
    "Mail kerry.mcguire@acme-widgets.com about OPS-1423 or call 555-123-4567 today.",
    "See https://example.com/a?b=c and OPS-7 OPS-8 (Raj Patel, Kerry McGuire)",
]


def test_fast_ner_finds_what_spacys_ner_finds(nlp_model, monkeypatch) -> None:
    """The NER's moves are decoded in numpy (fastner.py): the same entities as spaCy's own
    greedy NER, text by text and in batches of texts of all lengths (also split into
    several tok2vec calls and decoding groups), on the fixture mail, on odd text and
    around the rules' preset entities."""
    from grex.extract import fastner

    wrapper = nlp_model.get_pipe("ner")
    assert isinstance(wrapper, fastner.FastNER) and wrapper.fits()
    rules = nlp_model.get_pipe("grex_rules")
    texts = [t for t, _ in _items(14)] + _ODD_TEXTS
    expected = [_ents(wrapper.ner(rules(nlp_model.make_doc(t)))) for t in texts]  # spaCy's
    assert sum(len(e) for e in expected) > 10
    assert {"EMAIL", "TICKET", "PHONE", "URL"} <= {lab for e in expected for _, _, lab in e}
    for text, exp in zip(texts, expected, strict=True):
        assert _ents(wrapper(rules(nlp_model.make_doc(text)))) == exp, text

    def batched() -> list[list[tuple[int, int, str]]]:
        docs = [rules(nlp_model.make_doc(t)) for t in texts]
        return [_ents(d) for d in wrapper.pipe(docs, batch_size=len(docs))]

    assert batched() == expected
    monkeypatch.setattr(fastner, "T2V_TOKENS", 7)
    monkeypatch.setattr(fastner, "GROUP_TOKENS", 40)
    assert batched() == expected
