"""``grex export html OUT_DIR``: the static knowledge site."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from grex.cli.core import emit_json, progress_bar, say, state

export_app = typer.Typer(help="Export the knowledge base.", no_args_is_help=True,
                         rich_markup_mode=None)


@export_app.command("html")
def html(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Argument(help="where the site goes: a new or empty "
                                            "directory, or a site grex exported before")],
    only: Annotated[str, typer.Option("--only", help="export just the threads this search "
                                      "query matches (a page set per audience)")] = "",
    redact: Annotated[bool | None, typer.Option("--redact/--no-redact", help="mask email "
                      "addresses and phone numbers in the pages [default: [export] redact]")]
    = None,
    attachments: Annotated[bool, typer.Option("--attachments", help="also export attachments "
                           "(under safe names, as downloads)")] = False,
    title: Annotated[str | None, typer.Option(help="site title [default: [export] title]")]
    = None,
    base_url: Annotated[str, typer.Option("--base-url", help="the absolute URL the site will "
                        "be served from (for sitemap.xml and the feed)")] = "",
    json_out: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Write a static site: thread, topic, people and organisation pages, a timeline, a
    feed, and search that needs no server. Only changed files are rewritten; the new site
    replaces the old one in one step."""
    from grex.export import ExportOptions, export_html

    st = state(ctx)
    kb, conn, config = st.open(readonly=True)
    options = ExportOptions(
        out_dir=out_dir, only=only,
        redact=config.export.redact if redact is None else redact,
        attachments=attachments, title=title or config.export.title, base_url=base_url,
    )
    n = conn.execute("SELECT COUNT(*) FROM threads").fetchone()[0]
    with progress_bar(st, "Exporting", n) as advance:
        report = export_html(kb, conn, options, progress=advance)
    if json_out:
        emit_json(report)
        return
    say(st, report.summary())
    for note in report.notes:
        say(st, f"  note: {note}")
    if not base_url:
        say(st, "  note: no sitemap.xml: a sitemap needs absolute URLs (--base-url)")


def register(app: typer.Typer) -> None:
    app.add_typer(export_app, name="export")
