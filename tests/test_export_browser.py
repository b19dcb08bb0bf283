"""The exported site in a real browser (Debian chromium driven by Playwright), from file://."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from grex import store
from grex.ingest import thread_id_for
from tests.corpora import corpus
from tests.fixtures_export import HOSTILE_ID, CountingServer

pytestmark = [pytest.mark.browser, pytest.mark.corpus, pytest.mark.nlp]


def url(site: Path, rel: str) -> str:
    return (site / rel).as_uri() if "?" not in rel else (site / rel.split("?")[0]).as_uri() + \
        "?" + rel.split("?", 1)[1]


def result_hrefs(page: Any) -> list[str]:
    page.wait_for_selector("#search-status:not(:empty)")
    return page.eval_on_selector_all("#search-results a.subject",
                                     "els => els.map(e => e.getAttribute('href'))")


def groundtruth() -> tuple[dict[str, str], list[dict[str, Any]]]:
    """message id -> root id (notmuch's threads), and notmuch's queries."""
    gt = corpus("notmuch-default") / "groundtruth"
    messages = json.loads((gt / "threads.json").read_text())["messages"]
    root_of = {mid: info["thread_root"] for mid, info in messages.items()}
    return root_of, json.loads((gt / "search_queries.json").read_text())["queries"]


def expected_threads(query: str) -> set[str]:
    root_of, queries = groundtruth()
    q = next(q for q in queries if q["query"] == query)
    return {f"t/{thread_id_for(root_of[m])}.html" for m in q["message_ids"]}


@pytest.mark.parametrize("query", ["from:cworth@cworth.org", 'from:"Keith Packard"'])
def test_search_from_prefix_finds_exactly_notmuchs_threads(exported_site: Path, page: Any,
                                                           query: str) -> None:
    page.goto(url(exported_site, "search.html?q=" + quote(query)))
    found = set(result_hrefs(page))
    assert found == expected_threads(query)
    assert page.input_value("#q") == query


# exact agreement where the site's model matches notmuch's (it indexes new text only, not
# quotes, and has no word positions, so "pkg-config" style phrases can differ)
@pytest.mark.parametrize("query", ["subject:PATCH", 'subject:"notmuch help"', "accentué"])
def test_search_matches_notmuch(exported_site: Path, page: Any, query: str) -> None:
    page.goto(url(exported_site, "search.html?q=" + quote(query)))
    assert set(result_hrefs(page)) == expected_threads(query)


def test_search_folds_accents_and_filters_dates(exported_site: Path, page: Any) -> None:
    page.goto(url(exported_site, "search.html?q=accentue"))
    assert set(result_hrefs(page)) == expected_threads("accentué")
    # date: a thread active that day (notmuch counts threads with a message that day)
    page.goto(url(exported_site, "search.html?q=" + quote("date:2009-11-17")))
    found = set(result_hrefs(page))
    assert expected_threads("date:2009-11-17..2009-11-17") <= found
    page.goto(url(exported_site, "search.html?q=" + quote("date:2010-12")))
    assert len(result_hrefs(page)) == 2


def test_search_words_find_the_right_threads(exported_site: Path, page: Any) -> None:
    # every thread notmuch finds for "maildir" is found (prefix matching may find more)
    page.goto(url(exported_site, "search.html?q=maildir"))
    found = result_hrefs(page)
    assert expected_threads("maildir") <= set(found)
    # a word only one thread holds: that thread, first
    page.goto(url(exported_site, "search.html?q=zyzzyva"))
    assert result_hrefs(page) == [f"t/{thread_id_for(HOSTILE_ID)}.html"]
    # typing in the box searches as you type; a leading minus leaves threads out
    page.fill("#q", "maildir -from:cworth")
    page.wait_for_selector("#search-status:has-text('-from:cworth')")
    narrowed = set(result_hrefs(page))
    assert narrowed < set(found)
    assert not narrowed & expected_threads("from:cworth@cworth.org")


def test_header_search_box_opens_results(exported_site: Path, page: Any) -> None:
    page.goto(url(exported_site, "index.html"))
    page.fill("#site-q", "zyzzyva")
    page.press("#site-q", "Enter")
    page.wait_for_url("**/search.html?q=zyzzyva")
    assert result_hrefs(page) == [f"t/{thread_id_for(HOSTILE_ID)}.html"]
    # each result names its thread by the id `grex search` prints
    assert page.eval_on_selector_all("#search-results a.subject", "els => els.map(e => "
                                     "e.dataset.thread)") == [thread_id_for(HOSTILE_ID)]


def test_navigate_thread_person_org_topic_and_back(exported_site: Path, page: Any,
                                                   artifacts: Path) -> None:
    page.goto(url(exported_site, "index.html"))
    page.screenshot(path=str(artifacts / "export-home.png"), full_page=True)
    # home -> a thread Carl Worth wrote in
    page.click("ol.threads a.subject >> text=Introducing myself")
    assert "/t/" in page.url
    thread_url = page.url
    assert page.locator("h1").inner_text().endswith("Introducing myself")
    page.screenshot(path=str(artifacts / "export-thread.png"), full_page=True)
    # quoted text is collapsed until asked for
    details = page.locator("details.quoted").first
    if details.count():
        assert details.get_attribute("open") is None
    # thread -> person
    page.click("aside >> text=Carl Worth")
    assert "/p/" in page.url
    assert page.locator("h1").inner_text() == "Carl Worth"
    assert page.locator("section >> text=Introducing myself").count() == 1
    # person -> organisation (by address domain) -> back to the person
    page.click(".side >> text=cworth.org")
    assert "/o/" in page.url
    assert page.locator("h1").inner_text().endswith("cworth.org")
    page.go_back()
    assert "/p/" in page.url
    # person -> topic (extraction ran) -> a thread of that topic -> back, back
    topics = page.locator("section[aria-labelledby=knows-h] ul.tags a[href*='topic/']")
    assert topics.count() >= 1
    label = topics.first.inner_text()
    topics.first.click()
    assert "/topic/" in page.url
    topic_url = page.url
    assert label in page.locator("h1").inner_text()
    assert page.locator("ol.threads li").count() >= 1
    experts = page.locator("section[aria-labelledby=who-h] a").all_inner_texts()
    assert "Carl Worth" in experts  # who knows about it
    page.click("ol.threads a.subject >> nth=0")
    assert "/t/" in page.url
    assert page.locator(f"aside a[href$='{topic_url.rsplit('/', 2)[-2]}/"
                        f"{topic_url.rsplit('/', 1)[-1]}']").count() == 1
    page.go_back()
    assert page.url == topic_url
    page.go_back()
    assert "/p/" in page.url
    page.go_back()
    assert page.url == thread_url


def test_hostile_message_runs_nothing_and_loads_nothing(
        exported_site: Path, page: Any, counting_server: CountingServer,
        notmuch_kb: tuple[store.KB, Path], artifacts: Path) -> None:
    requests: list[str] = []
    dialogs: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    before = len(counting_server.hits)
    thread = f"t/{thread_id_for(HOSTILE_ID)}.html"
    page.goto(url(exported_site, thread))
    page.wait_for_load_state("load")
    page.screenshot(path=str(artifacts / "export-hostile-thread.png"), full_page=True)
    # the markup is on the page as text ...
    body = page.locator(".message .body").first.inner_text()
    assert "<script>window.__pwned = 'text-script';</script>" in body
    assert 'onerror="window.__pwned' in body
    assert "<script>alert('subject')</script>" in page.locator("h1").inner_text()
    # ... and nothing of it became an element, ran, or was fetched
    assert page.evaluate("window.__pwned") is None
    assert page.locator("main script, main img, main iframe, main svg").count() == 0
    hrefs = page.eval_on_selector_all("a", "els => els.map(e => e.getAttribute('href'))")
    assert not [h for h in hrefs if h and h.strip().lower().startswith("javascript:")]
    # the one http link (a URL in the text) is a link, never loaded
    assert page.locator(f"a[href='{counting_server.base}/linked-not-loaded.gif']").count() == 1
    # the hostile attachment is a download under a safe name, not a page of the site
    att = page.locator(".attachments a")
    assert att.count() == 1
    href = att.get_attribute("href")
    assert href and href.endswith("/evil_page.html.bin")
    assert att.get_attribute("download") == "evil_page.html.bin"
    # the person page of the sender, the search page showing the thread, the home page
    page.click(".message .from a")
    page.goto(url(exported_site, "search.html?q=zyzzyva"))
    result_hrefs(page)
    page.goto(url(exported_site, "index.html"))
    assert page.evaluate("window.__pwned") is None
    assert dialogs == []
    assert all(r.startswith(exported_site.resolve().as_uri()) or
               r.startswith(exported_site.as_uri()) for r in requests), requests
    assert counting_server.hits[before:] == []


def test_pages_are_accessible_landmarks_and_keyboard(exported_site: Path, page: Any) -> None:
    for rel in ("index.html", "search.html", "people.html", "timeline.html",
                f"t/{thread_id_for(HOSTILE_ID)}.html"):
        page.goto(url(exported_site, rel))
        assert page.get_attribute("html", "lang") == "en"
        assert page.locator("h1").count() == 1
        for landmark in ("header", "nav", "main", "footer"):
            assert page.locator(landmark).count() >= 1, (rel, landmark)
        csp = page.get_attribute("meta[http-equiv='Content-Security-Policy']", "content")
        assert csp and "default-src 'none'" in csp
    # keyboard: the first Tab reaches the skip link, which moves focus to the content
    page.goto(url(exported_site, "index.html"))
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"


def test_dark_mode_changes_colours(exported_site: Path, browser: Any) -> None:
    colours = []
    for scheme in ("light", "dark"):
        ctx = browser.new_context(color_scheme=scheme)
        pg = ctx.new_page()
        pg.goto(url(exported_site, "index.html"))
        colours.append(pg.evaluate("getComputedStyle(document.body).backgroundColor"))
        ctx.close()
    assert colours[0] != colours[1]
