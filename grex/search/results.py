"""Search results as frozen records (hits, pages), and the constants of a search."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

SORTS = ("relevance", "newest", "oldest")
SNIPPET_CHARS = 220
SUGGEST_BELOW = 3  # offer "did you mean" when fewer hits than this
FACET_TOP = 10

T = TypeVar("T")


# --------------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One thread (or, with ``messages=True``, one message) that matched."""

    thread_id: str
    subject: str
    score: float
    message_ids: tuple[str, ...]  # the matching messages (thread order: oldest first)
    snippet: str = ""
    highlights: tuple[tuple[int, int], ...] = ()  # [start, end) spans of snippet to mark
    first_date: datetime | None = None
    last_date: datetime | None = None
    participants: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()
    total_messages: int = 0  # messages in the thread (0: unknown)
    sender: str = ""  # message hits: the From line

    def to_json(self) -> dict[str, Any]:
        return {
            "thread_id": self.thread_id,
            "subject": self.subject,
            "score": round(self.score, 4),
            "message_ids": list(self.message_ids),
            "snippet": self.snippet,
            "highlights": [list(s) for s in self.highlights],
            "first_date": _iso(self.first_date),
            "last_date": _iso(self.last_date),
            "participants": list(self.participants),
            "topics": list(self.topics),
            "total_messages": self.total_messages,
            **({"from": self.sender} if self.sender else {}),
        }


@dataclass(frozen=True, slots=True)
class SearchResult:
    query: str
    total: int  # threads (or messages) matching, not just this page
    hits: tuple[SearchHit, ...]
    messages: bool = False
    facets: dict[str, tuple[tuple[str, int], ...]] = field(default_factory=dict)
    suggestion: str | None = None  # a corrected query with more hits ("did you mean")
    offset: int = 0
    limit: int = 20

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "query": self.query,
            "total": self.total,
            "mode": "messages" if self.messages else "threads",
            "offset": self.offset,
            "limit": self.limit,
            "hits": [h.to_json() for h in self.hits],
        }
        if self.facets:
            out["facets"] = {k: [{"value": v, "count": c} for v, c in vals]
                             for k, vals in self.facets.items()}
        if self.suggestion:
            out["suggestion"] = self.suggestion
        return out


def _iso(d: datetime | None) -> str | None:
    if d is None:
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.isoformat()


