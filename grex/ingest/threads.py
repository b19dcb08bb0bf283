"""JWZ-style threading: pure functions over reply links, no I/O.

A message's parent is the first In-Reply-To id, else the last References id (the same
choice notmuch makes). Ids that no real message carries become ghosts; the References
chains of messages give ghosts their own parents, so a missing root still holds its
replies together. Ids without '@' (``<yes>``) were dropped by the parser. Loops
(A replies to B, B replies to A) are broken by refusing the link that would close them.
Subject merging is optional and off by default.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from grex.models import ThreadNode


@dataclass(frozen=True, slots=True)
class Link:
    """What threading needs of one message."""

    message_id: str
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    date: float  # unix seconds, for ordering
    subject: str = ""


@dataclass(frozen=True, slots=True)
class Component:
    """One thread as computed: its nodes in reply-tree order and its root."""

    root_id: str
    nodes: tuple[ThreadNode, ...]

    @property
    def message_ids(self) -> tuple[str, ...]:
        return tuple(n.message_id for n in self.nodes if not n.ghost)


def thread_id_for(root_message_id: str) -> str:
    """The id a thread gets when first seen: derived from its root, so it is stable."""
    return hashlib.sha1(root_message_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]


_SUBJ_PREFIX = re.compile(r"^\s*((re|fw|fwd|aw|sv|wg|tr)\s*(\[\d+\])?\s*:\s*|\[[^\]]{1,40}\]\s*)+",
                          re.IGNORECASE)


def normalize_subject(subject: str) -> str:
    """A subject without Re:/Fwd: prefixes and [list] tags, case and space folded."""
    return " ".join(_SUBJ_PREFIX.sub("", subject or "").split()).lower()


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        p = self.parent.setdefault(x, x)
        while p != self.parent[p]:
            self.parent[p] = self.parent[self.parent[p]]
            p = self.parent[p]
        self.parent[x] = p
        return p

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def build_threads(links: Iterable[Link], *, subject_merge: bool = False) -> list[Component]:
    """Group messages into threads and lay out each reply tree."""
    msgs = {ln.message_id: ln for ln in links}
    order = sorted(msgs.values(), key=lambda ln: (ln.date, ln.message_id))
    parent: dict[str, str] = {}

    def creates_loop(child: str, new_parent: str) -> bool:
        seen = {child}
        p: str | None = new_parent
        while p is not None:
            if p in seen:
                return True
            seen.add(p)
            p = parent.get(p)
        return False

    # 1. each real message's own parent, from its own headers
    for ln in order:
        candidates = [i for i in ln.in_reply_to[:1] + tuple(reversed(ln.references))
                      if i != ln.message_id]
        for cand in candidates:
            if not creates_loop(ln.message_id, cand):
                parent[ln.message_id] = cand
                break

    # 2. ghosts get parents from the References chains that mention them
    for ln in order:
        refs = [r for r in ln.references if r != ln.message_id]
        for prev, ref in zip(refs, refs[1:], strict=False):
            if ref in msgs or ref in parent or prev == ref:
                continue
            if not creates_loop(ref, prev):
                parent[ref] = prev

    # 3. components: every id a message names joins the message's thread
    uf = _UnionFind()
    for ln in order:
        uf.find(ln.message_id)
        for r in ln.in_reply_to + ln.references:
            uf.union(ln.message_id, r)
    if subject_merge:
        _merge_by_subject(order, uf)

    members: dict[str, list[str]] = defaultdict(list)
    for ln in order:
        members[uf.find(ln.message_id)].append(ln.message_id)

    children: dict[str, list[str]] = defaultdict(list)
    for child, par in parent.items():
        children[par].append(child)

    # the earliest real descendant dates a ghost
    date_of: dict[str, float] = {mid: ln.date for mid, ln in msgs.items()}

    def earliest(node: str, depth: int = 0) -> float:
        if node in date_of:
            return date_of[node]
        if depth > 10_000:
            return float("inf")
        d = min((earliest(c, depth + 1) for c in children.get(node, ())), default=float("inf"))
        date_of[node] = d
        return d

    out: list[Component] = []
    for real_members in members.values():
        # nodes: real members and the ghosts on their ancestor paths
        nodes: set[str] = set()
        for mid in real_members:
            cur: str | None = mid
            while cur is not None and cur not in nodes:
                nodes.add(cur)
                cur = parent.get(cur)
        roots = [n for n in nodes if parent.get(n) not in nodes]
        # a ghost root with a single child adds nothing but a blank line: keep it (it is
        # the missing root the replies share), unless it has no real descendants
        roots.sort(key=lambda n: (earliest(n), n))
        laid: list[ThreadNode] = []
        stack: list[tuple[str, str | None, int]] = [(r, None, 0) for r in reversed(roots)]
        while stack:
            node, up, depth = stack.pop()
            laid.append(ThreadNode(message_id=node, parent_id=up, depth=depth,
                                   ghost=node not in msgs))
            kids = sorted((c for c in children.get(node, ()) if c in nodes),
                          key=lambda c: (earliest(c), c))
            stack.extend((c, node, depth + 1) for c in reversed(kids))
        out.append(Component(root_id=laid[0].message_id, nodes=tuple(laid)))
    out.sort(key=lambda c: (earliest(c.root_id), c.root_id))
    return out


def _merge_by_subject(order: list[Link], uf: _UnionFind) -> None:
    """Join a reply whose thread root is missing to the thread that began its subject."""
    first_by_subject: dict[str, str] = {}
    for ln in order:
        key = normalize_subject(ln.subject)
        if not key or len(key) < 4:
            continue
        if key in first_by_subject:
            if _SUBJ_PREFIX.match(ln.subject or "") and not ln.in_reply_to:
                uf.union(first_by_subject[key], ln.message_id)
        else:
            first_by_subject[key] = ln.message_id
