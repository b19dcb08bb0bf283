"""``Site`` -> the files of the static site, as (relative path, bytes) pairs.

Templates live in grex/templates (package data) and autoescape; email text only reaches a
page through the ``email_html`` filter (escaped, then nh3-sanitized). Pages carry a
Content-Security-Policy meta tag: nothing may load from anywhere but the site itself, and
only the search page may run a script (the site's own two files).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from itertools import groupby
from pathlib import Path

import jinja2

from grex.export import build as build_module
from grex.export import text as text_module
from grex.export.build import search_href
from grex.export.model import Count, Site
from grex.export.publish import Pending
from grex.export.searchindex import build_index
from grex.export.text import digest, email_html, human_size, split_patch

_CSP_BASE = (
    "default-src 'none'; img-src 'self' data:; style-src 'self'; font-src 'self'; "
    "connect-src 'none'; media-src 'none'; object-src 'none'; frame-src 'none'; "
    "form-action 'self'; base-uri 'none'"
)
CSP_PAGE = _CSP_BASE + "; script-src 'none'"
CSP_SEARCH = _CSP_BASE + "; script-src 'self'"
STATIC_FILES = ("site.css", "search.js")


def _iso(d: datetime) -> str:
    return d.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _day(d: datetime) -> str:
    return d.astimezone(UTC).strftime("%Y-%m-%d")


def _stamp(d: datetime) -> str:
    return d.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("grex", "templates"),
        autoescape=jinja2.select_autoescape(["html", "xml"], default_for_string=True,
                                            default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
        lstrip_blocks=False,
        keep_trailing_newline=True,
    )
    env.filters.update(
        iso=_iso, day=_day, stamp=_stamp, size=human_size, email_html=email_html,
        search_href=search_href, split_patch=split_patch,
    )
    return env


def static_file(name: str) -> bytes:
    return (resources.files("grex") / "static" / name).read_bytes()


@lru_cache(maxsize=1)
def code_digest() -> str:
    """Everything besides the data that shapes a page: templates, the filters' code and
    the versions of Jinja2 and nh3. Part of every page's inputs fingerprint."""
    h = hashlib.sha256()
    root = resources.files("grex") / "templates"
    for name in sorted(p.name for p in root.iterdir()):
        h.update(name.encode() + b"\0" + (root / name).read_bytes())
    for mod in (sys.modules[__name__], text_module, build_module):
        h.update(Path(mod.__file__ or "").read_bytes())
    h.update(f"{_version('jinja2')} {_version('nh3')}".encode())
    return h.hexdigest()


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:  # metadata missing: the fingerprint just changes less
        return ""


def render_site(site: Site, *, recent: int = 25,
                feed_size: int = 50) -> Iterator[tuple[str, bytes | Pending]]:
    """Every file of the site (pages, feed, sitemaps, assets, search index), in a stable
    order. Pages made from one record (a thread, person, topic, organisation, month) come
    as Pending: rendered only when their inputs changed. Attachments are added by the
    caller."""
    env = environment()
    shared = repr((code_digest(), site.title, site.redacted, site.base_url))

    def page(template: str, path: str, **ctx: object) -> tuple[str, bytes]:
        depth = path.count("/")
        ctx.setdefault("csp", CSP_PAGE)
        ctx.setdefault("section", "")
        ctx.setdefault("noindex", False)
        html = env.get_template(template).render(site=site, root="../" * depth, **ctx)
        return path, html.encode("utf-8")

    def pending(template: str, path: str, **ctx: object) -> tuple[str, Pending]:
        """For templates that use nothing of ``site`` but what ``shared`` holds."""
        fingerprint = hashlib.sha256(
            repr((shared, template, path, sorted(ctx.items()))).encode("utf-8", "surrogatepass")
        ).hexdigest()
        return path, Pending(fingerprint, lambda: page(template, path, **ctx)[1])

    for name in STATIC_FILES:
        yield f"assets/{name}", static_file(name)
    for name, data in build_index(site):
        yield f"assets/search/{name}", data

    excerpts = {t.ref.slug: t.excerpt for t in site.threads[:recent]}
    yield page(
        "home.html", "index.html", recent=recent, excerpts=excerpts,
        top_topics=[Count(t.ref.href, t.ref.label, len(t.threads)) for t in site.topics[:15]],
        top_people=[Count(p.ref.href, p.ref.label, len(p.threads)) for p in site.people[:15]],
        top_orgs=[Count(o.href, o.name, len(o.people)) for o in sorted(
            site.orgs, key=lambda o: (-len(o.people), -len(o.threads), o.name.lower()))[:10]
            if o.people],
    )
    yield page("search.html", "search.html", csp=CSP_SEARCH, noindex=True)

    for t in site.threads:
        yield pending("thread.html", t.ref.href, t=t)
    for p in site.people:
        yield pending("person.html", p.ref.href, p=p, section="people")
    for tp in site.topics:
        yield pending("topic.html", tp.ref.href, tp=tp, section="topics")
    for o in site.orgs:
        yield pending("org.html", o.href, o=o, section="orgs")

    yield page(
        "listing.html", "people.html", section="people", heading="People",
        intro="Everyone who wrote in a shared thread, by number of threads.",
        items=[Count(p.ref.href, p.ref.label, len(p.threads)) for p in site.people],
        empty="Nobody yet.",
    )
    yield page(
        "listing.html", "topics.html", section="topics", heading="Topics",
        intro="Topics found in the threads, by number of threads.",
        items=[Count(t.ref.href, t.ref.label, len(t.threads)) for t in site.topics],
        empty="No topics yet: run grex extract, then export again.",
    )
    yield page(
        "listing.html", "orgs.html", section="orgs", heading="Organisations",
        intro="Organisations by their people's address domains and by names in the mail.",
        items=[Count(o.href, o.name, len(o.threads)) for o in site.orgs],
        empty="No organisations found.",
    )

    years = [(y, list(ms)) for y, ms in groupby(site.months, key=lambda m: m.key[:4])]
    yield page("timeline.html", "timeline.html", section="timeline", years=years)
    for i, m in enumerate(site.months):
        newer = site.months[i - 1] if i > 0 else None
        older = site.months[i + 1] if i + 1 < len(site.months) else None
        yield pending("month.html", m.href, m=m, newer=newer, older=older, section="timeline")

    for path, target in site.redirects:  # permalinks that forward (see build._redirects)
        yield pending("redirect.html", path, target=target)

    yield page("sitemap.html", "sitemap.html")
    yield "feed.xml", env.get_template("feed.xml").render(
        site=site, threads=site.threads[:feed_size],
        feed_id=f"urn:grex:feed:{digest(site.base_url or site.title)}",
    ).encode("utf-8")
    urls: list[tuple[str, datetime | None]] = [("index.html", site.updated)]
    urls += [(t.ref.href, t.ref.last_date) for t in site.threads]
    urls += [(p.ref.href, p.threads[0].last_date if p.threads else None) for p in site.people]
    urls += [(t.ref.href, t.threads[0].last_date if t.threads else None) for t in site.topics]
    urls += [(o.href, o.threads[0].last_date if o.threads else None) for o in site.orgs]
    urls += [(m.href, None) for m in site.months]
    urls += [("timeline.html", site.updated), ("topics.html", None), ("people.html", None),
             ("orgs.html", None)]
    if site.base_url:  # sitemaps.org: every <loc> is an absolute URL, so only with one
        yield "sitemap.xml", env.get_template("sitemap.xml").render(
            site=site, urls=urls).encode("utf-8")
