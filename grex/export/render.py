"""``Site`` -> the files of the static site, as (relative path, bytes) pairs.

Templates live in grex/templates (package data) and autoescape; email text only reaches a
page through the ``email_html`` filter (escaped, then nh3-sanitized). Pages carry a
Content-Security-Policy meta tag: nothing may load from anywhere but the site itself, and
only the search page may run a script (the site's own two files).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from itertools import groupby

import jinja2

from grex.export.build import search_href
from grex.export.model import Count, Site
from grex.export.searchindex import build_index, index_script
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


def render_site(site: Site, *, recent: int = 25,
                feed_size: int = 50) -> Iterator[tuple[str, bytes]]:
    """Every file of the site (pages, feed, sitemaps, assets, search index), in a stable
    order. Attachments are added by the caller."""
    env = environment()

    def page(template: str, path: str, **ctx: object) -> tuple[str, bytes]:
        depth = path.count("/")
        ctx.setdefault("csp", CSP_PAGE)
        ctx.setdefault("section", "")
        ctx.setdefault("noindex", False)
        html = env.get_template(template).render(site=site, root="../" * depth, **ctx)
        return path, html.encode("utf-8")

    for name in STATIC_FILES:
        yield f"assets/{name}", static_file(name)
    yield "assets/search-index.js", index_script(build_index(site))

    excerpts = {t.ref.slug: t.excerpt for t in site.threads[:recent]}
    yield page(
        "home.html", "index.html", recent=recent, excerpts=excerpts,
        top_topics=[Count(t.ref.href, t.ref.label, len(t.threads)) for t in site.topics[:15]],
        top_people=[Count(p.ref.href, p.ref.label, len(p.threads)) for p in site.people[:15]],
        top_orgs=[Count(o.href, o.name, len(o.people) or len(o.threads)) for o in site.orgs[:10]],
    )
    yield page("search.html", "search.html", csp=CSP_SEARCH, noindex=True)

    for t in site.threads:
        yield page("thread.html", t.ref.href, t=t)
    for p in site.people:
        yield page("person.html", p.ref.href, p=p, section="people")
    for tp in site.topics:
        yield page("topic.html", tp.ref.href, tp=tp, section="topics")
    for o in site.orgs:
        yield page("org.html", o.href, o=o, section="orgs")

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
        yield page("month.html", m.href, m=m, newer=newer, older=older, section="timeline")

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
    yield "sitemap.xml", env.get_template("sitemap.xml").render(site=site, urls=urls).encode(
        "utf-8"
    )
