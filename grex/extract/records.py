"""Frozen records produced by the extraction stage (see grex.models for the message side)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Which spaCy model is in use and how it was found."""

    requested: str  # the name asked for (config.nlp.model)
    name: str  # the model's own name (meta.json: lang_name)
    version: str
    path: str
    fallback: bool  # True when ``requested`` could not be loaded and a fallback was used
    pipeline: tuple[str, ...] = ()
    spacy_version: str = ""

    def __str__(self) -> str:
        return self.describe()

    def describe(self) -> str:
        how = f" (fallback for {self.requested!r})" if self.fallback else ""
        return f"{self.name} {self.version}{how} at {self.path}"


@dataclass(frozen=True, slots=True)
class Entity:
    """One entity mention; ``start``/``end`` are character offsets into the analysed text."""

    text: str
    label: str  # PERSON ORG GPE LOC ... plus EMAIL URL PHONE TICKET
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Phrase:
    """A candidate keyphrase of one text: lowercased key, the surface form seen, its count."""

    key: str
    text: str
    count: int


@dataclass(frozen=True, slots=True)
class TextAnalysis:
    """What the NLP pass found in one text (a message's new body, or any plain text)."""

    entities: tuple[Entity, ...]
    phrases: tuple[Phrase, ...]
    chars: int  # characters analysed (after truncation)
    words: int
    truncated: bool = False  # the text was longer than the limit and was cut


@dataclass(frozen=True, slots=True)
class Seeds:
    """Per-text context for the rules: people and organisations known from the headers."""

    names: tuple[str, ...] = ()  # display names ("Kerry McGuire", "McGuire, Kerry")
    addresses: tuple[str, ...] = ()  # email addresses (their domains seed ORG names)


@dataclass(frozen=True, slots=True)
class EntitySummary:
    """An entity aggregated over a thread (or the KB): one person, one entity."""

    key: str  # canonical: "person:<addr>" or "<label>:<normalised text>"
    label: str
    text: str  # the best display form
    count: int
    variants: tuple[str, ...] = ()
    addr: str = ""


@dataclass(frozen=True, slots=True)
class TopicInfo:
    id: int
    label: str
    terms: tuple[str, ...]
    size: int = 0  # threads whose strongest topic this is


@dataclass(frozen=True, slots=True)
class Keyphrase:
    text: str
    score: float


@dataclass(frozen=True, slots=True)
class ThreadKnowledge:
    thread_id: str
    entities: tuple[EntitySummary, ...]
    keyphrases: tuple[Keyphrase, ...]
    topics: tuple[tuple[int, str, float], ...]  # (topic id, label, weight)


@dataclass(frozen=True, slots=True)
class PersonExpertise:
    addr: str
    name: str
    score: float
    threads: int
    messages: int
    topics: tuple[tuple[int, str, float], ...] = ()
    evidence: tuple[str, ...] = ()  # thread subjects / phrases that matched


@dataclass(frozen=True, slots=True)
class ExtractReport:
    messages_seen: int = 0
    messages_computed: int = 0
    messages_unchanged: int = 0  # same content hash already extracted
    messages_deleted: int = 0
    threads_updated: int = 0
    truncated: int = 0
    topics_refit: bool = False
    topics: int = 0
    people: int = 0
    model: str = ""
    errors: tuple[str, ...] = field(default_factory=tuple)
    stopped: bool = False  # asked to stop: the rest is done by the next run

    def summary(self) -> str:
        if self.stopped:
            return (f"extract: stopped after {self.messages_computed} messages analysed "
                    "(the next run goes on from there)")
        return (f"extract: {self.messages_computed} messages analysed, "
                f"{self.messages_unchanged} unchanged, {self.messages_deleted} removed, "
                f"{self.threads_updated} threads updated, {self.topics} topics"
                f"{' (refitted)' if self.topics_refit else ''}, {self.people} people"
                f"{f', {self.truncated} truncated' if self.truncated else ''}")
