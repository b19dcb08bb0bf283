"""Fixtures for the export tests: a real KB (notmuch-default + one hostile message, imported
with grex's own importer), its exported site, a headless Debian chromium, and a loopback
HTTP server that counts every request made to it (the "remote" image points there)."""

from __future__ import annotations

import http.server
import shutil
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from grex import pipeline, store
from grex.config import load_config
from tests.corpora import corpus

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
HOSTILE_ID = "hostile-1@attacker.example"
HOSTILE_ATTACHMENT = b"<html><script>alert('attachment')</script></html>"



class CountingServer:
    """A loopback HTTP server that records every path requested."""

    def __init__(self) -> None:
        hits: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/gif")
                self.end_headers()
                self.wfile.write(b"GIF89a")

            def log_message(self, *args: object) -> None:
                pass

        self.hits = hits
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def hostile_message(base: str) -> bytes:
    """An HTML-only message doing everything an attacker would try in a page."""
    msg = EmailMessage()
    msg["From"] = '"Mallory <script>alert(1)</script>" <mallory@attacker.example>'
    msg["To"] = "victim@example.org"
    msg["Subject"] = "<script>alert('subject')</script> quarterly zyzzyva report"
    msg["Date"] = "Tue, 01 Dec 2009 10:00:00 +0000"
    msg["Message-ID"] = f"<{HOSTILE_ID}>"
    # the text part carries the markup literally: it reaches the page as text, so it is the
    # export's escaping that stands between it and the browser
    msg.set_content(f"""Hello zyzzyva team, the report:
<script>window.__pwned = 'text-script';</script>
<img src="{base}/text-pixel.gif" onerror="window.__pwned='text-onerror'">
<a href="javascript:window.__pwned='text-js'">open</a> or javascript:alert(1)
"><svg onload="window.__pwned='svg'"> and {base}/linked-not-loaded.gif
""")
    msg.add_alternative(f"""<html><head>
<script>window.__pwned = 'head';</script>
<meta http-equiv="refresh" content="0;url={base}/refresh">
<link rel="stylesheet" href="{base}/style.css">
</head><body>
<p>Hello zyzzyva <b>team</b></p>
<script>window.__pwned = 'body'; fetch('{base}/fetch');</script>
<img src="{base}/pixel.gif" onerror="window.__pwned='onerror'" alt="x">
<img src=x onerror="window.__pwned='onerror2'">
<a href="javascript:window.__pwned='js-link'">click me</a>
<iframe src="{base}/frame"></iframe>
<svg onload="window.__pwned='svg'"></svg>
<p style="background:url({base}/bg.png)">styled</p>
</body></html>""", subtype="html")
    msg.add_attachment(HOSTILE_ATTACHMENT, maintype="text", subtype="html",
                       filename="../../evil page.html")
    return msg.as_bytes()


@pytest.fixture(scope="session")
def counting_server() -> Iterator[CountingServer]:
    srv = CountingServer()
    yield srv
    srv.close()


@pytest.fixture(scope="session")
def notmuch_kb(tmp_path_factory: pytest.TempPathFactory,
               counting_server: CountingServer) -> Iterator[tuple[store.KB, Path]]:
    """notmuch-default plus the hostile message, imported with grex's importer, with
    extraction run (so it loads the spaCy model: tests using it are marked nlp)."""
    src = corpus("notmuch-default") / "maildir"
    root = tmp_path_factory.mktemp("export-kb")
    extra = root / "extra"
    extra.mkdir()
    (extra / "hostile.eml").write_bytes(hostile_message(counting_server.base))
    kb = store.KB.init(root / "kb")
    conn = kb.connect()
    config = load_config(kb.path, {})
    with kb.writer_lock():
        report = pipeline.import_paths(kb, conn, config, [src, extra])
        # the real extraction stage (spaCy), so pages have topics, entities, key phrases
        stages = pipeline.run_later_stages(kb, conn, config, only=["extract"])
    assert report.added == 53, report
    assert [s.skipped for s in stages.stages] == [""], stages
    conn.close()
    yield kb, root


@pytest.fixture(scope="session")
def exported_site(notmuch_kb: tuple[store.KB, Path]) -> Path:
    """The exported site (attachments on, so the hostile one is exported too)."""
    from grex.export import ExportOptions, export_html

    kb, root = notmuch_kb
    conn = kb.connect(readonly=True)
    out = root / "site"
    report = export_html(kb, conn, ExportOptions(out_dir=out, attachments=True))
    conn.close()
    assert report.threads == 25
    return out


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    ctx = browser.new_context(viewport={"width": 1200, "height": 900})  # type: ignore[attr-defined]
    pg = ctx.new_page()
    yield pg
    ctx.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def copy_site(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=False)
    return dst


def thread_pages(site: Path) -> set[str]:
    """The thread pages of a site (t/THREAD_ID.html), without the pages that forward."""
    return {p.name for p in (site / "t").iterdir()
            if 'http-equiv="refresh"' not in p.read_text("utf-8")}
