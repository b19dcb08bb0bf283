"""Threads, messages and extracted knowledge -> the view of the site (``Site``).

A pure function: no I/O, no store. Redaction happens here, once, so every page, the feed
and the search index are built from the same masked text.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

from grex.export.model import (
    AttachmentView,
    Count,
    EntityView,
    MessageView,
    Month,
    OrgPage,
    PersonPage,
    PersonRef,
    Site,
    ThreadInput,
    ThreadPage,
    ThreadRef,
    TopicPage,
    TopicRef,
)
from grex.export.text import (
    EMAIL_MASK,
    digest,
    message_slug,
    person_slug,
    redact,
    slugify,
    thread_slug,
    tokens,
)
from grex.models import Address, Message

# Free-mail providers say nothing about where someone works.
FREEMAIL = frozenset(
    [
        "aol.com",
        "gmail.com",
        "googlemail.com",
        "gmx.com",
        "gmx.de",
        "gmx.net",
        "hotmail.com",
        "icloud.com",
        "live.com",
        "mac.com",
        "me.com",
        "msn.com",
        "outlook.com",
        "proton.me",
        "protonmail.com",
        "web.de",
        "yahoo.com",
        "yandex.ru",
        "mail.ru",
        "qq.com",
        "163.com",
    ]
)
_GENERIC_SLD = frozenset(["ac", "co", "com", "edu", "gov", "net", "org"])
_SUBJECT_PREFIX = re.compile(
    r"^\s*((re|fwd?|aw|sv|vs|antw)\s*(\[\d+\])?\s*:\s*|\[[^\]]{1,40}\]\s*)+", re.IGNORECASE
)
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]


@dataclass(frozen=True, slots=True)
class BuildOptions:
    title: str = "grex knowledge base"
    redact: bool = False
    base_url: str = ""
    related_limit: int = 5
    entity_org_min_threads: int = 2
    person_salt: str = ""  # with redact: person page names can't be matched to addresses
    # thread ids merged into another (old -> new): their old page names forward
    thread_aliases: Mapping[str, str] = field(default_factory=dict)


def org_domain(addr: str) -> str:
    """``alice@cs.cmu.edu`` -> ``cmu.edu``; ``bob@ox.ac.uk`` -> ``ox.ac.uk``; "" for none."""
    domain = addr.rpartition("@")[2].strip(".").lower()
    labels = [p for p in domain.split(".") if p]
    if len(labels) < 2:
        return ""
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _GENERIC_SLD:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def normalized_subject(subject: str) -> str:
    return _SUBJECT_PREFIX.sub("", subject).strip().lower()


def search_href(query: str) -> str:
    return "search.html?q=" + quote(query, safe="")


def _list_addresses(messages: Iterable[Message]) -> set[str]:
    """Mailing-list addresses (List-Id ``<notmuch.notmuchmail.org>`` -> notmuch@notmuchmail.org):
    they are in every message's To/Cc and are nobody."""
    out: set[str] = set()
    for m in messages:
        lid = m.list_id.strip().strip("<>").lower()
        if "." in lid:
            local, _, domain = lid.partition(".")
            out.add(f"{local}@{domain}")
    return out


def _person_key(a: Address) -> str:
    return (a.addr or a.name).strip().lower()


@dataclass
class _PersonAcc:
    key: str
    names: Counter[str] = field(default_factory=Counter)
    threads: list[str] = field(default_factory=list)  # thread slugs
    sent: int = 0
    coworkers: Counter[str] = field(default_factory=Counter)
    topics: Counter[str] = field(default_factory=Counter)
    keyphrases: Counter[str] = field(default_factory=Counter)
    orgs: Counter[str] = field(default_factory=Counter)


def build_site(inputs: Iterable[ThreadInput], options: BuildOptions = BuildOptions()) -> Site:
    """Build the whole site view. ``inputs`` is consumed once."""
    items = list(inputs)
    red = redact if options.redact else (lambda s: s)
    lists = _list_addresses(m for it in items for m in it.messages)

    # ---- people: everyone who sent a message gets a page
    people: dict[str, _PersonAcc] = {}
    for it in items:
        for m in it.messages:
            if m.sender and _person_key(m.sender) and m.sender.addr not in lists:
                acc = people.setdefault(_person_key(m.sender), _PersonAcc(_person_key(m.sender)))
                if m.sender.name:
                    acc.names[m.sender.name.strip()] += 1

    def person_label(key: str, a: Address | None = None) -> str:
        acc = people.get(key)
        name = acc.names.most_common(1)[0][0] if acc and acc.names else (a.name if a else "")
        if name:
            return red(name)
        addr = a.addr if a else key
        return f"{EMAIL_MASK} {digest(key, 4)}" if options.redact else addr

    person_refs: dict[str, PersonRef] = {}

    def pref(a: Address) -> PersonRef:
        key = _person_key(a)
        if key in person_refs:
            return person_refs[key]
        slug = person_slug(key, options.person_salt)
        href = f"p/{slug}.html" if key in people else ""
        ref = PersonRef(slug=slug, label=person_label(key, a), href=href)
        if key in people:
            person_refs[key] = ref
        return ref

    # ---- topics
    topic_refs: dict[str, TopicRef] = {}
    used_topic_slugs: set[str] = set()
    for it in items:
        for t in it.knowledge.topics:
            if t.key in topic_refs:
                continue
            slug = slugify(t.label, fallback_key=t.key)
            if slug in used_topic_slugs:
                slug = f"{slug}-{digest(t.key, 6)}"
            used_topic_slugs.add(slug)
            topic_refs[t.key] = TopicRef(slug=slug, label=red(t.label), href=f"topic/{slug}.html")

    # ---- thread refs first (related threads and lists point at them)
    refs: dict[str, ThreadRef] = {}  # by thread slug
    by_root: dict[str, str] = {}
    for it in items:
        slug = it.thread.thread_id
        authors: list[str] = []
        for m in it.messages:
            if m.sender:
                label = pref(m.sender).label
                if label not in authors:
                    authors.append(label)
        subject = red(it.thread.subject or (it.messages[0].subject if it.messages else ""))
        refs[slug] = ThreadRef(
            slug=slug,
            subject=subject or "(no subject)",
            href=f"t/{slug}.html",
            first_date=it.thread.first_date,
            last_date=it.thread.last_date,
            n_messages=len(it.messages),
            authors=tuple(authors),
        )
        by_root[it.thread.root_message_id.strip().strip("<>").lower()] = slug

    # ---- organisations: by address domain, and organisations named in mail
    org_people: dict[str, Counter[str]] = defaultdict(Counter)  # org slug -> person key -> msgs
    org_threads: dict[str, list[str]] = defaultdict(list)
    org_names: dict[str, tuple[str, str]] = {}  # slug -> (name, kind)
    for it in items:
        slug = it.thread.thread_id
        for m in it.messages:
            if not m.sender or m.sender.addr in lists:
                continue
            dom = org_domain(m.sender.addr)
            if not dom or dom in FREEMAIL:
                continue
            oslug = "d-" + slugify(dom, fallback_key=dom)
            org_names[oslug] = (dom, "domain")
            org_people[oslug][_person_key(m.sender)] += 1
            if slug not in org_threads[oslug]:
                org_threads[oslug].append(slug)
    entity_orgs: dict[str, list[str]] = defaultdict(list)
    entity_org_label: dict[str, str] = {}
    for it in items:
        slug = it.thread.thread_id
        for e in it.knowledge.entities:
            if e.kind == "ORG" and e.label.strip():
                oslug = "e-" + slugify(e.label, fallback_key=e.label)
                entity_org_label.setdefault(oslug, e.label.strip())
                if slug not in entity_orgs[oslug]:
                    entity_orgs[oslug].append(slug)
    for oslug, slugs in entity_orgs.items():
        if len(slugs) >= options.entity_org_min_threads:
            org_names[oslug] = (entity_org_label[oslug], "entity")
            org_threads[oslug] = slugs
    if options.redact:
        org_names = {k: (red(n), kind) for k, (n, kind) in org_names.items()}

    # ---- thread pages
    label_to_person = {ref.label.lower(): ref for key, ref in person_refs.items() if key in people}
    pages: list[ThreadPage] = []
    topic_threads: dict[str, list[str]] = defaultdict(list)
    topic_experts: dict[str, Counter[str]] = defaultdict(Counter)
    topic_keyphrases: dict[str, Counter[str]] = defaultdict(Counter)
    features: dict[str, list[tuple[str, float]]] = {}
    for it in items:
        slug = it.thread.thread_id
        kn = it.knowledge
        anchors = {m.message_id: "m-" + digest(m.message_id, 12) for m in it.messages}
        depth = {n.message_id: n.depth for n in it.thread.nodes}
        parent = {n.message_id: n.parent_id for n in it.thread.nodes}
        views: list[MessageView] = []
        senders: list[str] = []
        for m in it.messages:
            sender = pref(m.sender) if m.sender else None
            if m.sender and _person_key(m.sender) in people:
                senders.append(_person_key(m.sender))
            p = parent.get(m.message_id)
            views.append(
                MessageView(
                    anchor=anchors[m.message_id],
                    message_id=m.message_id,
                    sender=sender,
                    to=tuple(pref(a) for a in m.to if a.addr not in lists),
                    cc=tuple(pref(a) for a in m.cc if a.addr not in lists),
                    date=m.date,
                    depth=depth.get(m.message_id, 0),
                    subject=red(m.subject),
                    new=red(m.body.new),
                    quoted=red(m.body.quoted),
                    signature=red(m.body.signature),
                    from_html=m.body.from_html,
                    truncated=m.body.truncated,
                    attachments=tuple(
                        AttachmentView(
                            filename=red(a.filename),
                            content_type=a.content_type,
                            size=a.size,
                            sha256=a.sha256,
                        )
                        for a in m.attachments
                    ),
                    parent_anchor=anchors.get(p) if p else None,
                )
            )
        participants = tuple(dict.fromkeys(person_refs[k] for k in senders))
        topics = tuple(topic_refs[t.key] for t in kn.topics if t.key in topic_refs)
        entities: list[EntityView] = []
        seen_ent: set[tuple[str, str]] = set()
        for e in kn.entities:
            label = red(e.label.strip())
            if not label or (label.lower(), e.kind) in seen_ent:
                continue
            seen_ent.add((label.lower(), e.kind))
            href = search_href(f'"{label}"')
            if e.kind == "PERSON" and e.addr and e.addr in people:
                href = pref(Address(e.label, e.addr)).href
            elif e.kind == "PERSON" and label.lower() in label_to_person:
                href = label_to_person[label.lower()].href
            elif e.kind == "ORG":
                oslug = "e-" + slugify(e.label, fallback_key=e.label)
                if oslug in org_names:
                    href = f"o/{oslug}.html"
            entities.append(EntityView(label=label, kind=e.kind, href=href))
        keyphrases = tuple(dict.fromkeys(red(k) for k in kn.keyphrases if k.strip()))
        excerpt = ""
        for v in views:
            if v.new.strip():
                flat = " ".join(v.new.split())
                excerpt = flat if len(flat) <= 200 else flat[:199].rstrip() + "…"
                break
        n_missing = sum(1 for n in it.thread.nodes if n.ghost)
        pages.append(
            ThreadPage(
                ref=refs[slug],
                root_message_id=it.thread.root_message_id,
                messages=tuple(views),
                participants=participants,
                topics=topics,
                entities=tuple(entities),
                keyphrases=keyphrases,
                related=(),
                excerpt=excerpt,
                missing=n_missing,
            )
        )
        # aggregates
        sent = Counter(senders)
        for key in sent:
            acc = people[key]
            acc.threads.append(slug)
            acc.sent += sent[key]
            for other in sent:
                if other != key:
                    acc.coworkers[other] += 1
            for tref in topics:
                acc.topics[tref.slug] += 1
            for k in keyphrases:
                acc.keyphrases[k] += 1
        for tref in topics:
            topic_threads[tref.slug].append(slug)
            topic_experts[tref.slug].update(sent)
            topic_keyphrases[tref.slug].update(keyphrases)
        # features for related threads (used when extraction gave none)
        feats: list[tuple[str, float]] = [("t:" + tref.slug, 3.0) for tref in topics]
        feats += [("k:" + k.lower(), 2.0) for k in keyphrases]
        feats += [("e:" + e.label.lower(), 1.0) for e in entities]
        feats += [("w:" + w, 1.0) for w in set(tokens(normalized_subject(refs[slug].subject)))]
        feats += [("p:" + k, 0.5) for k in sent]
        features[slug] = feats

    for oslug, counter in org_people.items():
        for key in counter:
            if key in people:
                people[key].orgs[oslug] += counter[key]

    # ---- related threads
    related = _related(features, refs, options.related_limit)
    final_pages: list[ThreadPage] = []
    for page, it in zip(pages, items, strict=True):
        given = [
            by_root[r.strip().strip("<>").lower()]
            for r in it.knowledge.related
            if r.strip().strip("<>").lower() in by_root
        ]
        chosen = given or related.get(page.ref.slug, [])
        rel = tuple(refs[s] for s in chosen if s != page.ref.slug)[: options.related_limit]
        final_pages.append(_replace_related(page, rel))
    final_pages.sort(key=lambda p: (p.ref.last_date, p.ref.slug), reverse=True)

    def thread_refs(slugs: Iterable[str]) -> tuple[ThreadRef, ...]:
        return tuple(
            sorted(
                (refs[s] for s in dict.fromkeys(slugs)),
                key=lambda r: (r.last_date, r.slug),
                reverse=True,
            )
        )

    topic_by_slug = {t.slug: t for t in topic_refs.values()}

    # ---- person pages
    person_pages: list[PersonPage] = []
    for key, acc in people.items():
        ref = person_refs.get(key)
        if ref is None:  # a sender whose every message was in a thread we dropped
            continue
        person_pages.append(
            PersonPage(
                ref=ref,
                addr="" if options.redact or "@" not in key else key,
                threads=thread_refs(acc.threads),
                sent=acc.sent,
                topics=tuple(
                    Count(topic_by_slug[s].href, topic_by_slug[s].label, n)
                    for s, n in acc.topics.most_common(12)
                ),
                coworkers=tuple(
                    Count(person_refs[k].href, person_refs[k].label, n)
                    for k, n in acc.coworkers.most_common(12)
                    if k in person_refs
                ),
                orgs=tuple(
                    Count(f"o/{s}.html", org_names[s][0], n) for s, n in acc.orgs.most_common(5)
                ),
                keyphrases=tuple(k for k, _ in acc.keyphrases.most_common(12)),
            )
        )
    person_pages.sort(key=lambda p: (-p.sent, -len(p.threads), p.ref.label.lower()))

    # ---- topic pages
    topic_pages = [
        TopicPage(
            ref=topic_by_slug[s],
            threads=thread_refs(slugs),
            experts=tuple(
                Count(person_refs[k].href, person_refs[k].label, n)
                for k, n in topic_experts[s].most_common(12)
                if k in person_refs
            ),
            keyphrases=tuple(k for k, _ in topic_keyphrases[s].most_common(15)),
        )
        for s, slugs in topic_threads.items()
    ]
    topic_pages.sort(key=lambda t: (-len(t.threads), t.ref.label.lower()))

    # ---- organisation pages
    org_pages: list[OrgPage] = []
    for oslug, (name, kind) in org_names.items():
        ppl = org_people.get(oslug, Counter())
        org_pages.append(
            OrgPage(
                slug=oslug,
                name=name,
                href=f"o/{oslug}.html",
                kind=kind,
                people=tuple(
                    Count(person_refs[k].href, person_refs[k].label, n)
                    for k, n in ppl.most_common()
                    if k in person_refs
                ),
                threads=thread_refs(org_threads[oslug]),
                topics=(),
            )
        )
    org_topics = _org_topics(org_pages, final_pages)
    org_pages = [_with_topics(o, org_topics.get(o.slug, ())) for o in org_pages]
    org_pages.sort(key=lambda o: (-len(o.threads), o.name.lower()))

    # ---- timeline
    by_month: dict[str, list[str]] = defaultdict(list)
    for fp in final_pages:
        by_month[fp.ref.first_date.strftime("%Y-%m")].append(fp.ref.slug)
    months = tuple(
        Month(
            key=k,
            label=f"{MONTHS[int(k[5:7]) - 1]} {k[:4]}",
            href=f"timeline/{k}.html",
            threads=tuple(sorted((refs[s] for s in v), key=lambda r: (r.first_date, r.slug))),
        )
        for k, v in sorted(by_month.items(), reverse=True)
    )

    return Site(
        title=options.title,
        threads=tuple(final_pages),
        people=tuple(person_pages),
        topics=tuple(topic_pages),
        orgs=tuple(org_pages),
        months=months,
        n_messages=sum(len(p.messages) for p in final_pages),
        redacted=options.redact,
        base_url=options.base_url.rstrip("/") + "/" if options.base_url else "",
        updated=max((p.ref.last_date for p in final_pages), default=None),
        redirects=_redirects(items, final_pages, options.thread_aliases),
    )


def _redirects(items: Any, pages: list[ThreadPage],
               aliases: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """(path, target) for every address that must keep working: each message's permalink
    m/MESSAGE_SLUG.html (computable from its Message-ID, see docs/export.md) -> its place in
    its thread's page; the name a thread page had before pages were named by thread id
    (t/ROOT_SLUG.html); and the ids of threads merged into another (`aliases`)."""
    live = {p.ref.slug for p in pages}
    out: dict[str, str] = {}
    for it in items:
        tid = it.thread.thread_id
        if tid not in live:
            continue
        for m in it.messages:
            out[f"m/{message_slug(m.message_id)}.html"] = \
                f"t/{tid}.html#m-{digest(m.message_id, 12)}"
        old = thread_slug(it.thread.root_message_id)
        if old != tid:
            out.setdefault(f"t/{old}.html", f"t/{tid}.html")
    for old, new in aliases.items():
        if new in live and old not in live:
            out.setdefault(f"t/{old}.html", f"t/{new}.html")
    return tuple(sorted(out.items()))


def _replace_related(page: ThreadPage, related: tuple[ThreadRef, ...]) -> ThreadPage:
    return replace(page, related=related)


def _with_topics(org: OrgPage, topics: tuple[Count, ...]) -> OrgPage:
    return replace(org, topics=topics)


def _org_topics(orgs: list[OrgPage], pages: list[ThreadPage]) -> dict[str, tuple[Count, ...]]:
    topics_of = {p.ref.slug: p.topics for p in pages}
    out: dict[str, tuple[Count, ...]] = {}
    for o in orgs:
        c: Counter[TopicRef] = Counter()
        for t in o.threads:
            c.update(topics_of.get(t.slug, ()))
        out[o.slug] = tuple(Count(t.href, t.label, n) for t, n in c.most_common(10))
    return out


def _related(
    features: dict[str, list[tuple[str, float]]],
    refs: dict[str, ThreadRef],
    limit: int,
    max_df: int = 50,
) -> dict[str, list[str]]:
    """Threads sharing topics, keyphrases, entities, subject words and authors, weighted;
    features carried by more than ``max_df`` threads are too common to say anything."""
    postings: dict[str, list[str]] = defaultdict(list)
    for slug, feats in features.items():
        for f, _ in feats:
            postings[f].append(slug)
    out: dict[str, list[str]] = {}
    for slug, feats in features.items():
        scores: dict[str, float] = defaultdict(float)
        for f, w in feats:
            post = postings[f]
            if len(post) > max_df:
                continue
            for other in post:
                if other != slug:
                    scores[other] += w
        ranked = sorted(
            ((s, o) for o, s in scores.items() if s >= 2.0),
            key=lambda so: (-so[0], -refs[so[1]].last_date.timestamp(), so[1]),
        )
        out[slug] = [o for _, o in ranked[:limit]]
    return out
