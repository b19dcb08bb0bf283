"""The exported site without a browser: escaping, redaction, permalinks, incremental
rewrite and the atomic swap, on real KBs built by grex's importer."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path

import pytest

from grex import pipeline, store
from grex.config import load_config
from grex.errors import ExportError
from grex.export import ExportOptions, export_html
from grex.export.publish import MANIFEST, _lock, live_version, publish, versions_dir
from grex.export.searchindex import decode_postings, encode_postings, shard_file
from grex.export.text import (
    email_html,
    redact,
    safe_filename,
    split_patch,
    thread_slug,
    tokens,
)
from grex.ingest import thread_id_for
from tests.corpora import corpus
from tests.fixtures_export import HOSTILE_ATTACHMENT, HOSTILE_ID, thread_pages

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- pure helpers


def test_email_html_escapes_everything_and_links_only_http() -> None:
    html = str(email_html('<script>x</script> <img src=x onerror="y"> javascript:alert(1) '
                          'see https://example.org/a?b=1&c=2). "quoted"'))
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html and "&lt;img src=x onerror=" in html
    assert html.count("<a ") == 1
    assert '<a href="https://example.org/a?b=1&amp;c=2" rel="nofollow noopener noreferrer">' in html
    assert "javascript:alert(1)" in html  # as text, not a link
    assert "<a href=\"javascript" not in html


@pytest.mark.parametrize(("text", "expected"), [
    ("mail alice.b+x@mail.example.co.uk today", "mail [email] today"),
    ("call +1 (555) 123-4567 now", "call [phone] now"),
    ("office 555-123-4567", "office [phone]"),
    ("Tel: +44 20 7946 0958", "Tel: [phone]"),
    ("fax 030 1234567", "fax [phone]"),
    ("on 2009-11-17 at 10:02", "on 2009-11-17 at 10:02"),
    ("host 192.168.100.200", "host 192.168.100.200"),
    ("version 3.8.18 and 1.2", "version 3.8.18 and 1.2"),
    ("from 2009 2010 2011", "from 2009 2010 2011"),
    ("bug 12345678", "bug 12345678"),
])
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(("name", "expected"), [
    ("../../etc/passwd", "passwd.bin"),
    ("evil page.html", "evil_page.html.bin"),
    ("image.SVG", "image.SVG.bin"),
    ("report.PDF", "report.pdf"),
    (".bashrc", "bashrc.bin"),
    ("über café.txt", "uber_cafe.txt"),
    ("C:\\Users\\x\\notes.txt", "notes.txt"),
])
def test_safe_filename(name: str, expected: str) -> None:
    assert safe_filename(name) == expected


def test_split_patch_and_tokens() -> None:
    prose, patch = split_patch("Fix the bug.\n---\n a.c | 2 +-\n\ndiff --git a/a.c b/a.c\n"
                               "@@ -1 +1 @@\n-x\n+y\n")
    assert prose == "Fix the bug.\n" and patch.startswith("---\n")
    assert split_patch("no patch here\n---\nsigned") == ("no patch here\n---\nsigned", "")
    assert tokens("Essai accentué: the Running-dogs") == ["essai", "accentue", "running", "dogs"]
    assert decode_postings(encode_postings([40, 3, 5, 3])) == [3, 5, 40]
    assert encode_postings([3, 5, 40]) == "3,2,z"


# ---------------------------------------------------------------- the exported site


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _pages(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


@pytest.mark.corpus
@pytest.mark.nlp
def test_no_page_carries_markup_from_mail(exported_site: Path) -> None:
    pages = _pages(exported_site)
    assert len(pages) > 50
    for p in pages:
        parser = _Tags()
        parser.feed(p.read_text("utf-8"))
        for tag, attrs in parser.tags:
            banned = {"img", "iframe", "svg", "object", "embed", "style", "base", "form"}
            assert tag not in banned or (tag == "form" and attrs.get("role") == "search"), (p, tag)
            if tag == "script":
                assert p.name == "search.html" and attrs.get("src", "").startswith("assets/")
            if tag == "link":
                assert attrs.get("rel") in {"stylesheet", "alternate"}
                assert not (attrs.get("href") or "").startswith(("http:", "https:", "//"))
            for name, value in attrs.items():
                assert not name.startswith("on"), (p, tag, name)
                if name in {"href", "src", "action"} and value:
                    assert not value.strip().lower().startswith(("javascript:", "data:",
                                                                 "vbscript:")), (p, value)
        metas = [a for t, a in parser.tags if t == "meta" and a.get("http-equiv")]
        assert metas and "default-src 'none'" in (metas[0].get("content") or ""), p
        assert "script-src 'none'" in metas[0]["content"] or p.name == "search.html"


@pytest.mark.corpus
@pytest.mark.nlp
def test_thread_page_shows_reply_order_quotes_signatures(exported_site: Path,
                                                         notmuch_kb: tuple[store.KB, Path]) -> None:
    kb, _ = notmuch_kb
    conn = kb.connect(readonly=True)
    # the largest thread: every message, in the catalog's reply-tree order, with depth
    t = max(store.iter_threads(conn), key=lambda t: len(t.message_ids))
    html = (exported_site / f"t/{t.thread_id}.html").read_text("utf-8")
    msgs = store.get_messages(conn, t.message_ids)
    positions = [html.index(f'id="m-{__import__("grex").export.text.digest(m, 12)}"')
                 for m in t.message_ids]
    assert positions == sorted(positions)
    for n in t.nodes:
        if not n.ghost:
            assert f'class="message depth-{min(n.depth, 6)}"' in html
    quoted = [m for m in msgs.values() if m.body.quoted.strip()]
    assert quoted and html.count('<details class="quoted">') == len(quoted)
    signed = [m for m in msgs.values() if m.body.signature.strip()]
    assert html.count('<div class="signature"') == len(signed)
    conn.close()


@pytest.mark.corpus
@pytest.mark.nlp
def test_attachments_only_with_the_flag(exported_site: Path, notmuch_kb: tuple[store.KB, Path],
                                        tmp_path: Path) -> None:
    kb, _ = notmuch_kb
    files = list(exported_site.glob("att/*/*"))
    hostile = [f for f in files if f.name == "evil_page.html.bin"]
    assert len(hostile) == 1 and hostile[0].read_bytes() == HOSTILE_ATTACHMENT
    assert all(not f.name.endswith((".html", ".htm", ".svg", ".js")) for f in files)
    conn = kb.connect(readonly=True)
    report = export_html(kb, conn, ExportOptions(out_dir=tmp_path / "plain"))
    conn.close()
    assert report.attachments == 0 and not (tmp_path / "plain" / "att").exists()
    page = (tmp_path / "plain" / f"t/{thread_id_for(HOSTILE_ID)}.html").read_text("utf-8")
    assert 'class="filename">evil page.html</span>' in page and "49 B" in page


@pytest.mark.corpus
@pytest.mark.nlp
def test_feed_sitemap_and_search_index(exported_site: Path, notmuch_kb: tuple[store.KB, Path],
                                       tmp_path: Path) -> None:
    atom = "{http://www.w3.org/2005/Atom}"
    feed = ET.parse(exported_site / "feed.xml").getroot()
    entries = feed.findall(f"{atom}entry")
    assert len(entries) == 25
    titles = [e.find(f"{atom}title").text for e in entries]
    assert "<script>alert('subject')</script> quarterly zyzzyva report" in titles  # as text
    # sitemaps.org wants absolute <loc>s: no sitemap without --base-url, an absolute one with
    assert not (exported_site / "sitemap.xml").exists()
    kb, _ = notmuch_kb
    conn = kb.connect(readonly=True)
    export_html(kb, conn, ExportOptions(out_dir=tmp_path / "s", base_url="https://kb.example/x"))
    conn.close()
    sm = ET.parse(tmp_path / "s" / "sitemap.xml").getroot()
    locs = [e.text or "" for e in sm.iter("{http://www.sitemaps.org/schemas/sitemap/0.9}loc")]
    assert locs and len(locs) == len(set(locs))
    assert all(loc.startswith("https://kb.example/x/") and
               (tmp_path / "s" / loc.removeprefix("https://kb.example/x/")).is_file()
               for loc in locs)
    # the index: meta.js assigns one global, each shard is one call; none can close a script
    search = exported_site / "assets" / "search"
    for f in search.iterdir():
        js = f.read_text("utf-8")
        assert "</" not in js and js.count("\n") == 1, f
    meta = _js_value((search / "meta.js").read_text("utf-8"), "window.GREX_SEARCH=")
    assert meta["n"] == 25 and meta["v"] == 2
    docs = [row for i in range(0, 25, meta["chunk"])
            for row in _js_call(search / f"docs-{i // meta['chunk']}.js")[2]]
    keylen = meta["shards"]["text"][0]
    _, key, (terms, posts) = _js_call(search / shard_file("text", "zyzzyva"[:keylen]))
    assert terms == sorted(terms) and all(t.startswith(key) for t in terms)
    zy = decode_postings(posts[terms.index("zyzzyva")])
    assert [docs[d][0] for d in zy] == [thread_id_for(HOSTILE_ID)]


def _js_value(text: str, prefix: str) -> dict:  # type: ignore[type-arg]
    assert text.startswith(prefix) and text.endswith(";\n")
    return json.loads(text[len(prefix):-2])  # type: ignore[no-any-return]


def _js_call(path: Path) -> list:  # type: ignore[type-arg]
    text = path.read_text("utf-8")
    assert text.startswith("GREX_SEARCH_LOAD(") and text.endswith(");\n")
    return json.loads("[" + text[len("GREX_SEARCH_LOAD("):-3] + "]")  # type: ignore[no-any-return]


# ---------------------------------------------------------------- KBs of our own


def _kb(tmp_path: Path, files: list[Path] | None = None, one_by_one: bool = False) -> store.KB:
    src = corpus("notmuch-default") / "maildir"
    kb = store.KB.init(tmp_path / "kb")
    conn = kb.connect()
    config = load_config(kb.path, {})
    with kb.writer_lock():
        if one_by_one:
            for f in files or []:
                pipeline.import_paths(kb, conn, config, [f])
        else:
            pipeline.import_paths(kb, conn, config, files or [src])
    conn.close()
    return kb


def _export(kb: store.KB, out: Path, **kw: object):  # type: ignore[no-untyped-def]
    conn = kb.connect(readonly=True)
    try:
        return export_html(kb, conn, ExportOptions(out_dir=out, **kw))  # type: ignore[arg-type]
    finally:
        conn.close()


_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")


@pytest.mark.corpus
def test_redact_masks_addresses_everywhere(tmp_path: Path) -> None:
    kb = _kb(tmp_path)
    report = _export(kb, tmp_path / "site", redact=True)
    assert report.threads == 24
    seen_mask = False
    for f in (tmp_path / "site").rglob("*"):
        if not f.is_file() or f.name == MANIFEST or f.suffix == ".css":
            continue
        text = f.read_text("utf-8")
        assert "cworth@cworth.org" not in text and "keithp@keithp.com" not in text, f
        hits = [m.group(0) for m in _EMAIL.finditer(text)]
        assert hits == [], (f, hits[:5])
        seen_mask = seen_mask or "[email]" in text
    assert seen_mask
    # names stay, so people remain findable
    assert "Carl Worth" in (tmp_path / "site" / "people.html").read_text("utf-8")
    # person pages can't be matched to a guessed address, and keep their names next time
    from grex.export.text import person_slug

    pages = {p.name for p in (tmp_path / "site" / "p").iterdir()}
    assert f"{person_slug('cworth@cworth.org')}.html" not in pages
    again = _export(kb, tmp_path / "site", redact=True)
    assert not again.swapped and pages == {p.name for p in (tmp_path / "site" / "p").iterdir()}


@pytest.mark.corpus
def test_permalinks_do_not_depend_on_import_order(tmp_path: Path) -> None:
    src = corpus("notmuch-default") / "maildir"
    files = sorted(p for p in src.rglob("*") if p.is_file())
    a = _kb(tmp_path / "a")
    b = _kb(tmp_path / "b", list(reversed(files)), one_by_one=True)  # replies before roots
    _export(a, tmp_path / "a" / "site")
    _export(b, tmp_path / "b" / "site")
    # each thread is reachable in both sites by the name its root gives it, whatever ids
    # the import order gave the threads (pages are named by thread id; the root's name
    # forwards where the two differ)
    conn = a.connect(readonly=True)
    roots = [t.root_message_id for t in store.iter_threads(conn)]
    conn.close()
    assert len(thread_pages(tmp_path / "a" / "site")) == 24
    for site in (tmp_path / "a" / "site", tmp_path / "b" / "site"):
        for root in roots:
            assert (site / "t" / f"{thread_slug(root)}.html").is_file(), (site, root)


def _reply(kb: store.KB, parent_id: str, text: str) -> bytes:
    conn = kb.connect(readonly=True)
    parent = store.get_message(conn, parent_id)
    conn.close()
    assert parent is not None
    msg = EmailMessage()
    msg["From"] = "New Person <new.person@example.net>"
    msg["To"] = "notmuch@notmuchmail.org"
    msg["Subject"] = "Re: " + parent.subject
    msg["Date"] = "Wed, 18 Nov 2009 12:00:00 +0000"
    msg["Message-ID"] = "<reply-added-later@example.net>"
    msg["In-Reply-To"] = f"<{parent_id}>"
    msg["References"] = f"<{parent_id}>"
    msg.set_content(text)
    return msg.as_bytes()


@pytest.mark.corpus
def test_incremental_rewrites_only_changed_pages(tmp_path: Path) -> None:
    kb = _kb(tmp_path)
    out = tmp_path / "site"
    first = _export(kb, out)
    assert first.swapped and first.written == first.files and first.unchanged == 0
    v1 = Path(first.version_dir)
    assert out.is_symlink() and out.resolve() == v1.resolve()

    again = _export(kb, out)
    assert not again.swapped and again.written == 0 and again.unchanged == first.files
    assert out.resolve() == v1.resolve()

    # one reply to one thread: its page, and the pages that list it, change; others don't
    conn = kb.connect(readonly=True)
    t = next(t for t in store.iter_threads(conn) if "Introducing myself" in t.subject)
    conn.close()
    eml = tmp_path / "reply.eml"
    eml.write_bytes(_reply(kb, t.root_message_id, "Welcome, and zebrafish."))
    conn = kb.connect()
    with kb.writer_lock():
        pipeline.import_paths(kb, conn, load_config(kb.path, {}), [eml])
    conn.close()
    third = _export(kb, out)
    v2 = Path(third.version_dir)
    assert third.swapped and v2 != v1
    assert 0 < third.written < 25 and third.unchanged > first.files - 25
    thread_page = f"t/{t.thread_id}.html"
    assert "zebrafish" in (out / thread_page).read_text("utf-8")
    old = json.loads((v1 / MANIFEST).read_text())["files"]
    new = json.loads((v2 / MANIFEST).read_text())["files"]
    changed = {k for k in new if old.get(k) != new[k]}
    assert thread_page in changed
    zebra = [k for k in changed if k.startswith("assets/search/text-z")]
    assert zebra, changed  # the shard that holds "zebrafish"
    assert "assets/search/docs-0.js" in changed  # the thread's message count
    assert "assets/site.css" not in changed
    for rel in set(new) - changed:  # unchanged files were linked, not rewritten
        assert os.stat(v1 / rel).st_ino == os.stat(v2 / rel).st_ino, rel
    assert third.written == len(changed)
    # the previous version is kept for readers still on it; older ones go
    _reply_path = tmp_path / "reply2.eml"
    _reply_path.write_bytes(_reply(kb, t.root_message_id, "More.").replace(
        b"reply-added-later@", b"reply-two@"))
    conn = kb.connect()
    with kb.writer_lock():
        pipeline.import_paths(kb, conn, load_config(kb.path, {}), [_reply_path])
    conn.close()
    fourth = _export(kb, out)
    versions = sorted(p.name for p in versions_dir(out).iterdir() if p.name.startswith("v"))
    assert versions == [v2.name, Path(fourth.version_dir).name]


def _site_files(n: int, tag: str) -> list[tuple[str, bytes]]:
    return [("index.html", f"<p>{tag}</p>".encode())] + [
        (f"t/{i:04d}.html", f"{tag} {i}".encode() * 50) for i in range(n)]


def test_failed_export_leaves_the_live_site_alone(tmp_path: Path) -> None:
    out = tmp_path / "site"
    r1 = publish(out, _site_files(20, "one"))
    assert (out / "index.html").read_bytes() == b"<p>one</p>"

    def broken():  # type: ignore[no-untyped-def]
        yield from _site_files(10, "two")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        publish(out, broken())
    assert out.resolve() == r1.version_dir.resolve()
    assert (out / "index.html").read_bytes() == b"<p>one</p>"
    assert len(list((out / "t").iterdir())) == 20
    assert [p.name for p in versions_dir(out).iterdir() if p.name.endswith(".tmp")] == []
    # a kill mid-build leaves a .tmp dir and maybe a link: the next export clears them
    (versions_dir(out) / "v000009.tmp").mkdir()
    (versions_dir(out) / "v000009.tmp-link").symlink_to("nowhere")
    r3 = publish(out, _site_files(20, "three"))
    assert (out / "index.html").read_bytes() == b"<p>three</p>"
    left = sorted(p.name for p in versions_dir(out).iterdir())
    assert left == ["lock", r1.version_dir.name, r3.version_dir.name]


def test_readers_never_see_a_half_written_site(tmp_path: Path) -> None:
    """Readers going through OUT_DIR always find every file, complete; a reader that
    resolves OUT_DIR once (one request) sees one version throughout."""
    out = tmp_path / "site"
    publish(out, _site_files(60, "v0"))
    stop = threading.Event()
    problems: list[str] = []
    reads = [0]

    def reader() -> None:
        while not stop.is_set():
            try:
                body = (out / "t" / "0059.html").read_bytes()
            except OSError as e:
                problems.append(f"through {out.name}/: {e!r}")
                continue
            if not re.fullmatch(rb"(v\d+ 59){50}", body) or len(set(body.split(b" 59"))) != 2:
                problems.append(f"incomplete page: {body[:20]!r}")
            version = out.resolve()
            try:
                tag = (version / "index.html").read_bytes()[3:-4].decode()
                page = (version / "t" / "0059.html").read_bytes()
            except FileNotFoundError:
                if version.exists():  # only a removed old version may vanish under a reader
                    problems.append(f"missing file in live {version}")
                continue
            except OSError as e:
                problems.append(repr(e))
                continue
            reads[0] += 1
            if page != f"{tag} 59".encode() * 50:
                problems.append(f"mixed versions in {version.name}: {tag} / {page[:12]!r}")

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for r in readers:
        r.start()
    for i in range(1, 9):
        publish(out, _site_files(60, f"v{i}"))
    stop.set()
    for r in readers:
        r.join()
    assert problems == []
    assert reads[0] > 8


def test_refuses_paths_that_are_not_its_own(tmp_path: Path) -> None:
    foreign = tmp_path / "docs"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("mine")
    with pytest.raises(ExportError, match="not a grex site"):
        publish(foreign, _site_files(1, "x"))
    assert (foreign / "thesis.tex").read_text() == "mine"
    link = tmp_path / "link"
    link.symlink_to(foreign)
    with pytest.raises(ExportError, match="symlink"):
        publish(link, _site_files(1, "x"))
    empty = tmp_path / "empty"
    empty.mkdir()
    publish(empty, _site_files(1, "x"))
    assert empty.is_symlink() and live_version(empty) is not None
    with _lock(versions_dir(empty)), pytest.raises(ExportError, match="another export"):
        publish(empty, _site_files(1, "y"))
    with pytest.raises(ExportError, match="unsafe"):
        publish(empty, [("../escape.html", b"x")])


@pytest.mark.corpus
def test_cli_export_html(tmp_path: Path) -> None:
    kb = _kb(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "grex", "--kb", str(kb.path), "export", "html"]
    ok = subprocess.run([*cmd, str(tmp_path / "site"), "--json"], capture_output=True,
                        text=True, env=env, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["threads"] == 24 and report["files"] == report["written"]
    assert (tmp_path / "site" / "index.html").is_file()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    bad = subprocess.run([*cmd, str(busy)], capture_output=True, text=True, env=env,
                         cwd=tmp_path)
    assert bad.returncode == 73
    assert bad.stderr.startswith("Error: ") and "not a grex site" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.corpus
def test_only_exports_the_threads_a_query_matches(tmp_path: Path) -> None:
    from grex.errors import IndexError_, QueryError

    kb = _kb(tmp_path)
    with pytest.raises(IndexError_):  # no index yet: a clear error, nothing written
        _export(kb, tmp_path / "none", only="from:cworth@cworth.org")
    assert not (tmp_path / "none").exists()
    from grex.search.index import run_index

    conn = kb.connect()
    with kb.writer_lock():
        run_index(kb, conn, load_config(kb.path, {}))
    conn.close()
    with pytest.raises(QueryError):
        _export(kb, tmp_path / "bad", only="from:(")
    report = _export(kb, tmp_path / "site", only="from:cworth@cworth.org")
    gt = json.loads((corpus("notmuch-default") / "groundtruth" / "search_queries.json")
                    .read_text())["queries"]
    roots = json.loads((corpus("notmuch-default") / "groundtruth" / "threads.json")
                       .read_text())["messages"]
    q = next(q for q in gt if q["query"] == "from:cworth@cworth.org")
    expected = {f"{thread_id_for(roots[m]['thread_root'])}.html" for m in q["message_ids"]}
    assert report.threads == len(expected) == 11
    assert thread_pages(tmp_path / "site") == expected
    # nothing from the other threads: not in the search index, not on the home page
    for f in (tmp_path / "site" / "assets" / "search").iterdir():
        assert "Essai accentu" not in f.read_text("utf-8")
    assert "Essai accentu" not in (tmp_path / "site" / "index.html").read_text("utf-8")


@pytest.mark.corpus
@pytest.mark.nlp
def test_import_refreshes_the_configured_site(tmp_path: Path) -> None:
    """With [export] html_dir set, `grex import` ends with the export stage."""
    kb = store.KB.init(tmp_path / "kb")
    toml = kb.config_path.read_text("utf-8")
    assert '# html_dir = ""' in toml
    kb.config_path.write_text(toml.replace('# html_dir = ""', 'html_dir = "site"', 1), "utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    src = corpus("notmuch-default") / "maildir"
    run = subprocess.run([sys.executable, "-m", "grex", "--kb", str(kb.path), "import",
                          str(src), "--json"], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    stages = {s["name"]: s["skipped"] for s in json.loads(run.stdout)["stages"]}
    assert "export" in stages and stages["export"] is None
    site = kb.path / "site"
    assert site.is_symlink() and len(thread_pages(site)) == 24
    conn = kb.connect(readonly=True)
    assert store.get_cursor(conn, "export") == store.last_seq(conn) > 0
    # every stage caught up: the pipeline pruned the change feed
    assert conn.execute("SELECT COUNT(*) FROM changes").fetchone()[0] == 0
    conn.close()
    # the next pipeline run with nothing new leaves the site alone without reading the catalog
    from grex.export import run_export

    conn = kb.connect()
    config = load_config(kb.path, {})
    live = live_version(site)
    quiet = run_export(kb, conn, config)
    assert quiet is not None and quiet.notes == ("nothing changed since the last export",)
    assert (quiet.threads, quiet.written, quiet.swapped) == (24, 0, False)
    assert live_version(site) == live
    # a change on the feed (here: a thread re-extracted) makes it read and compare again
    tid = conn.execute("SELECT thread_id FROM threads LIMIT 1").fetchone()[0]
    with store.transaction(conn):
        store.log_change(conn, "thread", tid, "upsert")
    again = run_export(kb, conn, config)
    assert again is not None and again.notes == () and again.threads == 24
    assert store.get_cursor(conn, "export") == store.last_seq(conn)
    # so does another title (the pages would differ)
    retitled = run_export(kb, conn, load_config(kb.path, {"export.title": "Team KB"}))
    assert retitled is not None and retitled.notes == () and retitled.swapped
    assert "Team KB" in (site / "index.html").read_text("utf-8")
    conn.close()


def test_knowledge_from_extraction() -> None:
    from grex.export.run import knowledge_from

    k = knowledge_from({
        "entities": [
            {"text": "Carl Worth", "label": "PERSON", "key": "person:cworth@cworth.org"},
            {"text": "x@y.org", "label": "EMAIL", "key": "EMAIL:x@y.org"},
            {"text": "Xapian", "label": "ORG", "key": "ORG:xapian"},
        ],
        "keyphrases": ["search term", "open files"],
        "topics": [{"id": 0, "label": "emacs / mail", "weight": 0.15},
                   {"id": 3, "label": "notmuch / patch", "weight": 0.55},
                   {"id": 1, "label": "build / make", "weight": 0.30}],
    })
    assert [(t.key, t.label) for t in k.topics] == [("3", "notmuch / patch"),
                                                    ("1", "build / make")]
    assert [(e.label, e.kind, e.addr) for e in k.entities] == [
        ("Carl Worth", "PERSON", "cworth@cworth.org"), ("Xapian", "ORG", "")]
    assert k.keyphrases == ("search term", "open files")
    assert knowledge_from(None).topics == ()


def test_pages_with_unchanged_inputs_are_not_rendered(tmp_path: Path) -> None:
    from grex.export.publish import Pending

    out = tmp_path / "site"
    calls: list[str] = []

    def render(body: bytes) -> Callable[[], bytes]:
        def run() -> bytes:
            calls.append(body.decode())
            return body
        return run

    publish(out, [("t/a.html", Pending("in-a", render(b"A"))), ("index.html", b"home")])
    assert calls == ["A"]
    r = publish(out, [("t/a.html", Pending("in-a", render(b"A2"))), ("index.html", b"home")])
    assert calls == ["A"] and not r.swapped  # same inputs: linked, never rendered
    r = publish(out, [("t/a.html", Pending("in-b", render(b"B"))), ("index.html", b"home")])
    assert calls == ["A", "B"] and r.written == 1
    assert (out / "t" / "a.html").read_bytes() == b"B"


def test_message_permalinks_and_old_names_forward(exported_site: Path,
                                                   notmuch_kb: tuple[store.KB, Path]) -> None:
    """m/sha1(Message-ID)[:16].html forwards to the message in its thread's page, and
    every thread page is t/THREAD_ID.html, the id `grex threads` prints."""
    import hashlib

    kb, _ = notmuch_kb
    conn = kb.connect(readonly=True)
    threads = list(store.iter_threads(conn))
    conn.close()
    assert thread_pages(exported_site) == {f"{t.thread_id}.html" for t in threads}
    refresh = re.compile(r'http-equiv="refresh" content="0; url=\.\./([^"]+)"')
    for t in threads:
        for mid in t.message_ids:
            key = hashlib.sha1(mid.encode()).hexdigest()[:16]  # as docs/export.md says
            page = (exported_site / "m" / f"{key}.html").read_text("utf-8")
            target = refresh.search(page)
            assert target, page
            path, _, anchor = target.group(1).partition("#")
            assert path == f"t/{t.thread_id}.html"
            assert f'id="{anchor}"' in (exported_site / path).read_text("utf-8")


def test_a_merged_threads_old_id_forwards(tmp_path: Path) -> None:
    """Two threads that a later message joins (its References name both): the id of the
    one merged away forwards to the page of the one that stays."""
    def mail(name: str, mid: str, subject: str, refs: str = "") -> Path:
        path = tmp_path / "mail" / name
        path.parent.mkdir(exist_ok=True)
        head = f"References: {refs}\r\nIn-Reply-To: {refs.split()[-1]}\r\n" if refs else ""
        path.write_bytes((f"From: a@example.org\r\nSubject: {subject}\r\nMessage-ID: {mid}\r\n"
                          f"{head}Date: Mon, 04 Mar 2024 10:00:00 +0000\r\n\r\ntext\r\n").encode())
        return path

    kb = store.KB.init(tmp_path / "kb")
    conn = kb.connect()
    config = load_config(kb.path, {})
    with kb.writer_lock():
        pipeline.import_paths(kb, conn, config, [mail("a.eml", "<a@x>", "plan"),
                                                  mail("b.eml", "<b@x>", "budget")])
        first = {t.thread_id for t in store.iter_threads(conn)}
        pipeline.import_paths(kb, conn, config,
                              [mail("c.eml", "<c@x>", "Re: budget", "<a@x> <b@x>")])
    live = {t.thread_id for t in store.iter_threads(conn)}
    aliases = store.thread_aliases(conn)
    export_html(kb, conn, ExportOptions(out_dir=tmp_path / "site"))
    conn.close()
    assert len(first) == 2 and len(live) == 1
    (old,) = first - live
    (new,) = live
    assert aliases == {old: new}
    page = (tmp_path / "site" / "t" / f"{old}.html").read_text("utf-8")
    assert f"url=../t/{new}.html" in page
