"""grex's query language: parse a query string into a small tree, then into a Whoosh query.

The language follows notmuch (and mu where they agree); see docs/search.md for the user's
view. Written by hand rather than with whoosh.qparser so that ``-term`` negates, ``a NOT b``
means "a and not b", dates follow notmuch's ``date:since..until``, and every error points at
the character where it happened.

    query   := or_expr
    or_expr := and_expr ("OR" and_expr)*
    and_expr:= unary (["AND"] unary)*          (juxtaposition means AND)
    unary   := ("NOT" | "-") unary | "+" unary | primary
    primary := "(" or_expr ")" | PREFIX ":" value | WORD | "PHRASE"
    value   := WORD | "PHRASE" | "(" or_expr ")"   (a group: the prefix applies inside)

Operators are upper case, as in notmuch (Xapian); ``and``/``or``/``not`` are words.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from whoosh import query as wq

from grex.errors import QueryError
from grex.search.schema import (
    BOOSTS,
    DEFAULT_FIELDS,
    SNIPPET_FIELDS,
    fold,
    name_analyzer,
    text_analyzer,
)

# --------------------------------------------------------------------------------- prefixes

TEXT, NAME, KEYWORD, EXACT, DATE, FLAG = "text", "name", "keyword", "exact", "date", "flag"

# prefix -> (kind, index fields). Aliases from notmuch (tag:, is:, mid:, mimetype:) and mu
# (msgid:, mime:, file:, contact:, maildir:).
PREFIXES: dict[str, tuple[str, tuple[str, ...]]] = {
    "from": (NAME, ("from",)),
    "to": (NAME, ("to", "cc")),
    "cc": (NAME, ("cc",)),
    "contact": (NAME, ("from", "to", "cc")),
    "subject": (TEXT, ("subject",)),
    "body": (TEXT, ("body", "quoted")),
    "attachment": (NAME, ("attachment",)),
    "file": (NAME, ("attachment",)),
    "person": (NAME, ("person", "from", "to", "cc")),
    "org": (NAME, ("org",)),
    "place": (NAME, ("place",)),
    "topic": (TEXT, ("topic",)),
    "keyword": (TEXT, ("keyword",)),
    "label": (KEYWORD, ("label",)),
    "tag": (KEYWORD, ("label",)),
    "is": (KEYWORD, ("label",)),
    "folder": (KEYWORD, ("folder",)),
    "maildir": (KEYWORD, ("folder",)),
    "mimetype": (KEYWORD, ("mimetype",)),
    "mime": (KEYWORD, ("mimetype",)),
    "has": (FLAG, ("flag",)),
    "id": (EXACT, ("id",)),
    "mid": (EXACT, ("id",)),
    "msgid": (EXACT, ("id",)),
    "thread": (EXACT, ("thread_id",)),
    "list": (EXACT, ("list",)),
    "date": (DATE, ("date",)),
}
FLAGS = ("attachment", "signed", "encrypted", "reply")
NAME_FIELDS = frozenset({"from", "to", "cc", "attachment", "person", "org", "place"})
OPERATORS = ("AND", "OR", "NOT")

_TEXT = text_analyzer()
_NAME = name_analyzer()


def analyze(fieldname: str, text: str) -> list[str]:
    """The index terms ``text`` becomes in ``fieldname`` (stemmed or not)."""
    analyzer = _NAME if fieldname in NAME_FIELDS else _TEXT
    return [t.text for t in analyzer(text, mode="query")]


# ---------------------------------------------------------------------------------- tree


@dataclass(frozen=True, slots=True)
class Word:
    text: str
    pos: int
    prefix: str | None = None  # None: the default fields
    phrase: bool = False  # written in double quotes

    @property
    def wildcard(self) -> bool:
        return (not self.phrase and ("*" in self.text or "?" in self.text)
                and any(c.isalnum() for c in self.text))


@dataclass(frozen=True, slots=True)
class DateSpan:
    start: datetime | None
    end: datetime | None
    pos: int


@dataclass(frozen=True, slots=True)
class All:
    pos: int = 0


@dataclass(frozen=True, slots=True)
class Not:
    child: Node
    pos: int


@dataclass(frozen=True, slots=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple[Node, ...]


Node = Word | DateSpan | All | Not | And | Or


@dataclass(frozen=True, slots=True)
class ParsedQuery:
    """A parsed query: the tree, the Whoosh query, and what to highlight."""

    text: str
    tree: Node
    query: wq.Query
    highlight_terms: frozenset[tuple[str, str]] = field(default_factory=frozenset)
    highlight_prefixes: frozenset[tuple[str, str]] = field(default_factory=frozenset)
    words: tuple[Word, ...] = ()  # positive words, for "did you mean"
    # what ranks: the positive words and phrases in the query's AND / OR shape; None when
    # the query only filters (dates, labels, flags, ids, negations, wildcards): newest first
    scoring: wq.Query | None = None


# --------------------------------------------------------------------------------- lexer

_LP, _RP, _OP, _NEG, _PLUS, _WORD, _PHRASE, _PREFIX = (
    "(", ")", "op", "-", "+", "word", "phrase", "prefix")


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str
    text: str
    pos: int
    end: int


def _error(query: str, pos: int, message: str, hint: str | None = None) -> QueryError:
    return QueryError(message, query=query, position=pos, hint=hint)


def _lex(q: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(q)
    while i < n:
        c = q[i]
        if c.isspace():
            i += 1
        elif c == "(":
            toks.append(_Tok(_LP, c, i, i + 1))
            i += 1
        elif c == ")":
            toks.append(_Tok(_RP, c, i, i + 1))
            i += 1
        elif c == '"':
            end = q.find('"', i + 1)
            if end < 0:
                raise _error(q, i, "unterminated phrase: this quote is never closed",
                             'close it with another "')
            toks.append(_Tok(_PHRASE, q[i + 1:end], i, end + 1))
            i = end + 1
        elif c in "-+" and i + 1 < n and not q[i + 1].isspace() and q[i + 1] not in ")-+":
            toks.append(_Tok(_NEG if c == "-" else _PLUS, c, i, i + 1))
            i += 1
        else:
            j = i
            while j < n and not q[j].isspace() and q[j] not in '()"':
                if q[j] == ":" and j > i and q[i:j].isalpha():
                    break
                j += 1
            if j < n and q[j] == ":" and j > i and q[i:j].isalpha():
                name = q[i:j].lower()
                if name not in PREFIXES:
                    raise _error(q, i, f"unknown prefix {q[i:j + 1]!r}",
                                 "known prefixes: " + ", ".join(f"{p}:" for p in PREFIXES)
                                 + '; put text in double quotes to search for it as is')
                toks.append(_Tok(_PREFIX, name, i, j + 1))
                i = j + 1
                if i >= n or q[i].isspace() or q[i] == ")":
                    raise _error(q, toks[-1].pos, f"{name}: needs a value right after the colon")
                continue
            word = q[i:j]
            kind = _OP if word in OPERATORS else _WORD
            toks.append(_Tok(kind, word, i, j))
            i = j
    return toks


# -------------------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, q: str, now: datetime) -> None:
        self.q = q
        self.now = now
        self.toks = _lex(q)
        self.i = 0

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def parse(self) -> Node:
        if not self.toks:
            raise _error(self.q, 0, "empty query", 'search for something, or "*" for everything')
        if len(self.toks) == 1 and self.toks[0].kind == _WORD and self.toks[0].text == "*":
            return All(0)
        node = self.or_expr(None)
        tok = self.peek()
        if tok is not None:
            if tok.kind == _RP:
                raise _error(self.q, tok.pos, "unbalanced ')': no '(' opens it")
            raise _error(self.q, tok.pos, f"unexpected {tok.text!r}")
        return node

    def or_expr(self, prefix: str | None) -> Node:
        parts = [self.and_expr(prefix)]
        while (tok := self.peek()) is not None and tok.kind == _OP and tok.text == "OR":
            self.take()
            if self.peek() is None or self.peek().kind == _RP:  # type: ignore[union-attr]
                raise _error(self.q, tok.pos, "OR needs a search term on its right")
            parts.append(self.and_expr(prefix))
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def and_expr(self, prefix: str | None) -> Node:
        parts = [self.unary(prefix)]
        while (tok := self.peek()) is not None and tok.kind != _RP and not (
                tok.kind == _OP and tok.text == "OR"):
            if tok.kind == _OP and tok.text == "AND":
                self.take()
                nxt = self.peek()
                if nxt is None or nxt.kind == _RP or (nxt.kind == _OP and nxt.text != "NOT"):
                    raise _error(self.q, tok.pos, "AND needs a search term on its right")
            parts.append(self.unary(prefix))
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def unary(self, prefix: str | None) -> Node:
        tok = self.peek()
        if tok is None:
            raise _error(self.q, len(self.q), "the query ends where a search term was expected")
        if (tok.kind == _OP and tok.text == "NOT") or tok.kind == _NEG:
            self.take()
            if self.peek() is None or self.peek().kind in (_RP,):  # type: ignore[union-attr]
                raise _error(self.q, tok.pos, f"{tok.text} needs a search term after it")
            return Not(self.unary(prefix), tok.pos)
        if tok.kind == _PLUS:
            self.take()
            return self.unary(prefix)
        return self.primary(prefix)

    def primary(self, prefix: str | None) -> Node:
        tok = self.take()
        if tok.kind == _LP:
            if self.peek() is None:
                raise _error(self.q, tok.pos, "unbalanced '(': it is never closed")
            if self.peek().kind == _RP:  # type: ignore[union-attr]
                raise _error(self.q, tok.pos, "empty parentheses")
            node = self.or_expr(prefix)
            close = self.peek()
            if close is None or close.kind != _RP:
                raise _error(self.q, tok.pos, "unbalanced '(': it is never closed")
            self.take()
            return node
        if tok.kind == _RP:
            raise _error(self.q, tok.pos, "unbalanced ')': no '(' opens it")
        if tok.kind == _OP:
            raise _error(self.q, tok.pos, f"{tok.text} needs a search term on its left")
        if tok.kind == _PREFIX:
            if prefix is not None:
                raise _error(self.q, tok.pos, f"{tok.text}: inside {prefix}:(...)",
                             "prefixes don't nest")
            value = self.peek()
            if value is None or value.pos != tok.end:
                raise _error(self.q, tok.pos, f"{tok.text}: needs a value right after the colon")
            if value.kind == _LP:
                if PREFIXES[tok.text][0] == DATE:
                    raise _error(self.q, value.pos, "date: takes a range, not a group")
                return self.primary(tok.text)
            self.take()
            if value.kind not in (_WORD, _PHRASE, _OP):
                raise _error(self.q, tok.pos, f"{tok.text}: needs a value right after the colon")
            return self.value(tok.text, value)
        if prefix is not None and PREFIXES[prefix][0] == DATE:
            return self.value(prefix, tok)
        return self.value(prefix, tok)

    def value(self, prefix: str | None, tok: _Tok) -> Node:
        phrase = tok.kind == _PHRASE
        if prefix is not None:
            kind = PREFIXES[prefix][0]
            if kind == DATE:
                start, end = parse_date_range(tok.text, self.now, query=self.q, pos=tok.pos)
                return DateSpan(start, end, tok.pos)
            if kind == FLAG and tok.text.lower() not in FLAGS:
                raise _error(self.q, tok.pos, f"has:{tok.text} is not something grex knows",
                             "has: takes " + ", ".join(FLAGS))
        if not phrase and tok.text == "*":
            return All(tok.pos)
        return Word(tok.text, tok.pos, prefix, phrase)


# ---------------------------------------------------------------------------------- dates

_REL = re.compile(
    r"^(\d+)\.?(h|hours?|d|days?|w|weeks?|m|months?|y|years?|min|mins|minutes?)$", re.I)
_ABS = re.compile(
    r"^(\d{4})(?:-(\d{1,2})(?:-(\d{1,2})(?:[t_ ](\d{1,2}):(\d{2})(?::(\d{2}))?)?)?)?$")
_COMPACT = re.compile(r"^(\d{4})(\d{2})(\d{2})$")


def _add_months(d: datetime, months: int) -> datetime:
    y, m = divmod(d.month - 1 + months, 12)
    return d.replace(year=d.year + y, month=m + 1, day=1)


def _period(expr: str, now: datetime) -> tuple[datetime, datetime] | None:
    """(start, end-exclusive) of the period an expression names, or None."""
    e = expr.strip().lower()
    day0 = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if e == "now":
        return now, now + timedelta(microseconds=1)
    if e == "today":
        return day0, day0 + timedelta(days=1)
    if e == "yesterday":
        return day0 - timedelta(days=1), day0
    if m := _REL.match(e):
        n, unit = int(m.group(1)), m.group(2).lower()
        if unit.startswith("min"):
            point = now - timedelta(minutes=n)
        elif unit.startswith("h"):
            point = now - timedelta(hours=n)
        elif unit.startswith("d"):
            point = now - timedelta(days=n)
        elif unit.startswith("w"):
            point = now - timedelta(weeks=n)
        elif unit.startswith("m"):
            point = _add_months(now, -n).replace(day=min(now.day, 28))
        else:
            point = now.replace(year=now.year - n, day=min(now.day, 28))
        return point, now + timedelta(microseconds=1)
    m = _ABS.match(e) or _COMPACT.match(e)
    if not m:
        return None
    parts = [int(g) if g else None for g in m.groups()] + [None] * (6 - len(m.groups()))
    year, month, day, hour, minute, second = parts[:6]
    try:
        if month is None:
            start = datetime(year, 1, 1, tzinfo=UTC)  # type: ignore[arg-type]
            return start, start.replace(year=start.year + 1)
        if day is None:
            start = datetime(year, month, 1, tzinfo=UTC)  # type: ignore[arg-type]
            return start, _add_months(start, 1)
        if hour is None:
            start = datetime(year, month, day, tzinfo=UTC)  # type: ignore[arg-type]
            return start, start + timedelta(days=1)
        start = datetime(year, month, day, hour, minute or 0, second or 0,  # type: ignore[arg-type]
                         tzinfo=UTC)
        return start, start + (timedelta(seconds=1) if second is not None
                               else timedelta(minutes=1))
    except ValueError:
        return None


def parse_date_range(value: str, now: datetime, *, query: str = "",
                     pos: int = 0) -> tuple[datetime | None, datetime | None]:
    """``date:`` values: ``A..B``, ``A..``, ``..B`` or ``A`` (the whole period A names).

    A and B: YYYY, YYYY-MM, YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS], YYYYMMDD, today, yesterday,
    now, or a time ago: Nh, Nd, Nw, Nm (months), Ny (also N.days, Nweeks, ...). Times are
    UTC. Returns inclusive [start, end] in UTC (None: open end).
    """
    q = query or value
    base = pos
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    if ".." in value:
        left, _, right = value.partition("..")
        if not left and not right:
            raise _error(q, pos, "date:.. needs at least one end",
                         "e.g. date:2024-01-01.. or date:..2024-06-30")
    else:
        left = right = value
    start = end = None
    if left:
        p = _period(left, now)
        if p is None:
            raise _error(q, base, f"can't read the date {left!r}", _DATE_HINT)
        start = p[0]
    if right:
        p = _period(right, now)
        if p is None:
            at = base + (value.index("..") + 2 if ".." in value else 0)
            raise _error(q, at, f"can't read the date {right!r}", _DATE_HINT)
        end = p[1] - timedelta(microseconds=1)
    if start is not None and end is not None and start > end:
        raise _error(q, base, "this date range ends before it starts")
    return start, end


_DATE_HINT = ("dates look like 2024, 2024-03, 2024-03-15, 2024-03-15T09:30, today, "
              "yesterday, 30d, 2w, 6m, 1y; ranges like 2024-01-01..2024-03-31 or 30d..")


# ---------------------------------------------------------------------------- translation


def _naive(d: datetime | None) -> datetime | None:
    return None if d is None else d.astimezone(UTC).replace(tzinfo=None)


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


class _Translator:
    def __init__(self, q: str, resolve_thread: Callable[[str], str] | None) -> None:
        self.q = q
        self.resolve_thread = resolve_thread
        self.highlight: set[tuple[str, str]] = set()
        self.words: list[Word] = []
        self.prefixes: set[tuple[str, str]] = set()
        self.word_queries: dict[int, wq.Query] = {}

    def tr(self, node: Node, positive: bool = True) -> wq.Query | None:
        if isinstance(node, All):
            return wq.Every()
        if isinstance(node, DateSpan):
            return wq.DateRange("date", _naive(node.start), _naive(node.end))
        # Negation is always And([X, Not(Y)]), X being Every() when nothing else: a bare
        # Whoosh Not matches documents deleted since the last merge (unshared messages),
        # and Whoosh's AndNot query misses exclusions behind a union of fields.
        if isinstance(node, Not):
            inner = self.tr(node.child, not positive)
            return None if inner is None else wq.And([wq.Every(), wq.Not(inner)])
        if isinstance(node, Or):
            parts = [p for p in (self.tr(c, positive) for c in node.children) if p is not None]
            if not parts:
                return None
            return parts[0] if len(parts) == 1 else wq.Or(parts)
        if isinstance(node, And):
            plus: list[wq.Query] = []
            minus: list[wq.Query] = []
            for child in node.children:
                if isinstance(child, Not):
                    inner = self.tr(child.child, not positive)
                    if inner is not None:
                        minus.append(inner)
                else:
                    part = self.tr(child, positive)
                    if part is not None:
                        plus.append(part)
            if not plus and not minus:
                return None
            if not minus:
                return plus[0] if len(plus) == 1 else wq.And(plus)
            return wq.And((plus or [wq.Every()]) + [wq.Not(m) for m in minus])
        return self.word(node, positive)

    def word(self, w: Word, positive: bool) -> wq.Query | None:
        fieldnames: tuple[str, ...]
        if w.prefix is None:
            kind, fieldnames = TEXT, DEFAULT_FIELDS
        else:
            kind, fieldnames = PREFIXES[w.prefix]
        text = w.text
        if kind == EXACT:
            value = text.strip()
            if w.prefix in ("id", "mid", "msgid"):
                value = value.strip("<>")
            if w.prefix == "thread" and self.resolve_thread is not None:
                value = self.resolve_thread(value)
            if w.wildcard:
                return self._wild(fieldnames[0], value)
            return wq.Term(fieldnames[0], value)
        if kind == FLAG:
            return wq.Term("flag", text.lower())
        if kind == KEYWORD:
            value = text.strip().lower()
            q = (self._wild(fieldnames[0], value) if w.wildcard
                 else wq.Term(fieldnames[0], value))
            if w.prefix in ("tag", "is", "label") and value in FLAGS:
                q = wq.Or([q, wq.Term("flag", value)])  # notmuch's tag:attachment etc.
            return q
        if positive:
            self.words.append(w)
        subqueries: list[wq.Query] = []
        for f in fieldnames:
            boost = BOOSTS.get(f, 1.0)
            if w.wildcard:
                subqueries.append(self._wild(f, text, boost=boost, positive=positive))
                continue
            terms = analyze(f, text)
            if not terms:
                continue
            if positive and f in _HIGHLIGHT_FIELDS:
                self.highlight.update((f, t) for t in terms)
            if len(terms) == 1:
                subqueries.append(wq.Term(f, terms[0], boost=boost))
            else:
                subqueries.append(wq.Phrase(f, terms, boost=boost))
        if not subqueries:
            return None
        q = subqueries[0] if len(subqueries) == 1 else wq.Or(subqueries)
        if positive and not w.wildcard:
            self.word_queries[id(w)] = q
        return q

    def score(self, node: Node) -> wq.Query | None:
        """The ranking query: the tree's positive words (not wildcards) with its AND / OR
        shape; negations, dates, labels, flags and ids only filter."""
        if isinstance(node, Word):
            return self.word_queries.get(id(node))
        if isinstance(node, And | Or):
            parts = [p for p in (self.score(c) for c in node.children
                                 if not isinstance(c, Not)) if p is not None]
            if not parts:
                return None
            if len(parts) == 1:
                return parts[0]
            return wq.And(parts) if isinstance(node, And) else wq.Or(parts)
        return None

    def _wild(self, f: str, text: str, *, boost: float = 1.0,
              positive: bool = False) -> wq.Query:
        pattern = text if f in PREFIXES_KEEP_CASE else fold(text)
        body = pattern.rstrip("*")
        if body and "*" not in body and "?" not in body and pattern.endswith("*"):
            if f in _STEMMED_FIELDS:
                terms = analyze(f, body)
                if len(terms) == 1:
                    body = _common_prefix(body, terms[0]) or body
                if len(body) > 3 and body[-1] == body[-2] and body[-1] in "bdfgmnprt":
                    body = body[:-1]  # "runn*": Porter2 indexed "running" as "run"
            if positive and f in _HIGHLIGHT_FIELDS:
                self.prefixes.add((f, body))
            return wq.Prefix(f, body, boost=boost)
        return wq.Wildcard(f, pattern, boost=boost)


PREFIXES_KEEP_CASE = frozenset({"id", "thread_id", "list"})
_STEMMED_FIELDS = frozenset({"subject", "body", "quoted", "keyword", "topic"})
_HIGHLIGHT_FIELDS = frozenset(SNIPPET_FIELDS)


def parse_query(text: str, *, now: datetime | None = None,
                resolve_thread: Callable[[str], str] | None = None) -> ParsedQuery:
    """Parse ``text`` (grex's query language) into a ParsedQuery; QueryError if it can't."""
    if now is None:
        now = datetime.now(UTC)
    tree = _Parser(text, now).parse()
    tr = _Translator(text, resolve_thread)
    q = tr.tr(tree)
    if q is None:
        raise _error(text, 0, "nothing to search for: the query has no searchable words")
    scoring = tr.score(tree)
    return ParsedQuery(text=text, tree=tree, query=q, highlight_terms=frozenset(tr.highlight),
                       highlight_prefixes=frozenset(tr.prefixes), words=tuple(tr.words),
                       scoring=scoring)


def format_error(err: QueryError) -> str:
    """The query with a caret under the problem, for terminals (two lines)."""
    if err.position is None or not err.query:
        return str(err)
    line = err.query.replace("\n", " ")
    return f"{err}\n  {line}\n  {' ' * min(err.position, len(line))}^"
