"""Knowledge extraction: entities, keyphrases, topics and who knows what.

Importing this package is cheap: spaCy and scikit-learn are imported inside the functions
that need them (nothing on the search path pays for them).
"""

from __future__ import annotations

from typing import Any

from grex.extract.readers import (
    analysis_json,
    entity_labels,
    get_thread_knowledge,
    has_results,
    list_entities,
    list_people,
    list_topics,
    thread_knowledge,
    who,
)
from grex.extract.records import (
    Entity,
    EntitySummary,
    ExtractReport,
    Keyphrase,
    ModelInfo,
    PersonExpertise,
    Phrase,
    Seeds,
    TextAnalysis,
    ThreadKnowledge,
    TopicInfo,
)
from grex.extract.stage import refit_topics, run_extract
from grex.extract.tables import seeds_for

TYPE_CHECKING = False
if TYPE_CHECKING:
    from grex.extract.analyze import analyze_text, analyze_texts
    from grex.extract.model import load_model

# imported on first use: these import spaCy
_LAZY = {"analyze_text": "grex.extract.analyze", "analyze_texts": "grex.extract.analyze",
         "load_model": "grex.extract.model"}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # the import statement's machinery (not importlib's), so -X importtime reports it
    value = getattr(__import__(module, fromlist=(name,)), name)
    globals()[name] = value
    return value


def model_info(config: Any = None) -> ModelInfo:
    """Which spaCy model extraction uses: name, version, path, and whether it is a fallback.

    ``config`` is a grex Config, a model name, or None for the default."""
    from grex.extract.model import model_info as _model_info

    name = config if isinstance(config, str) or config is None else config.nlp.model
    return _model_info(name)


__all__ = [
    "Entity", "EntitySummary", "ExtractReport", "Keyphrase", "ModelInfo", "PersonExpertise",
    "Phrase", "Seeds", "TextAnalysis", "ThreadKnowledge", "TopicInfo", "analysis_json",
    "analyze_text", "analyze_texts", "load_model", "seeds_for",
    "entity_labels", "get_thread_knowledge", "has_results", "list_entities", "list_people",
    "list_topics",
    "model_info",
    "refit_topics", "run_extract", "thread_knowledge", "who",
]
