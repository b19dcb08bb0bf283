"""`grex sync` and `grex why`: thin over grex.ingest.imap (and grex.pipeline for later stages)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from grex import ingest, ops, pipeline, store
from grex.cli.core import (
    AppState,
    JsonOpt,
    ThreadIdArg,
    console,
    emit_json,
    say,
    show_progress,
    state,
)

_SYMBOL = {"add": "+", "remove": "-", "keep": "=", "rematch": "~"}


@contextlib.contextmanager
def _progress(st: AppState) -> Iterator[Callable[[str, int, int | None], None] | None]:
    """A Rich bar fed by the library's (label, done, total) callbacks; none when quiet."""
    if not show_progress(st):
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(label: str, done: int, total: int | None) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done, total=total)

        yield update


def _plan_json(item: ingest.PlanItem) -> dict[str, Any]:
    return {"action": item.action, "account": item.account, "folder": item.folder,
            "uid": item.uid, "message_id": item.message_id, "subject": item.subject,
            "reason": item.reason}


def register(app: typer.Typer) -> None:
    @app.command()
    def sync(
        ctx: typer.Context,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would come in or "
                                              "go out, and why; change nothing")] = False,
        all_: Annotated[bool, typer.Option("--all", help="re-verify every folder, even "
                                           "those whose state is unchanged")] = False,
        account: Annotated[str | None, typer.Option("--account", help="only this account "
                                                    "(its name in grex.toml)")] = None,
        later: Annotated[bool, typer.Option(help="run the later stages (extract, index, "
                                            "export) afterwards")] = True,
        json_out: Annotated[bool, typer.Option("--json", help="print the report as JSON")]
        = False,
        # --- ops (issue 7): lock policy, cron-friendly output, log file ------------------
        wait: Annotated[bool, typer.Option("--wait", help="queue behind a running writer "
                                           "instead of exiting 75 at once")] = False,
        wait_timeout: Annotated[float, typer.Option("--wait-timeout", help="with --wait, give "
                                                    "up (exit 75) after this many seconds")]
        = 3600.0,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="print nothing on success "
                                            "(errors still go to stderr): for cron")] = False,
        log_file: Annotated[Path | None, typer.Option("--log-file", help="append a record of "
                                                      "the run to this size-rotated log")]
        = None,
    ) -> None:
        """Fetch the shared threads of every configured IMAP account into the KB.

        Exit codes: 0 ok; 67 folder missing; 68 host unknown or unreachable; 69 other IMAP
        failure; 75 KB locked; 76 TLS/certificate failure; 77 login refused; 78 bad config.
        """
        st = state(ctx)
        st.quiet = st.quiet or quiet
        if log_file is not None:
            ops.setup_log_file(log_file)
        if not (st.kb_path / store.CATALOG).exists():
            store.KB.init(st.kb_path)
        kb, conn, config = st.open()
        # ops.writer: the one-writer lock (KBLocked, exit 75, unless --wait), a `runs` row
        # for `grex status`, and SIGTERM -> stop after the current batch (exit 143).
        writer = contextlib.nullcontext() if dry_run else \
            ops.writer(kb, wait=wait, timeout=wait_timeout if wait else None,
                       command="grex sync", conn=conn)
        stages = None
        with writer as run, _progress(st) as progress:
            report = ingest.sync(kb, conn, config, account=account, full=all_, dry_run=dry_run,
                                progress=run.progress(progress) if run else progress)
            if run:
                run.counts.update({k: report.total(k) for k in
                                   ("new", "updated", "removed", "quarantined", "fetched")})
                run.check()
            if later and not dry_run:
                stages = pipeline.run_later_stages(
                    kb, conn, config, progress=progress,
                    should_stop=(lambda: run.stop_requested) if run else None)
                if run:
                    run.counts["stages"] = [s.name for s in stages.stages if not s.skipped]
                    run.check()
        if json_out:
            emit_json({
                "dry_run": dry_run,
                "new": report.total("new"), "updated": report.total("updated"),
                "removed": report.total("removed"), "quarantined": report.total("quarantined"),
                "accounts": [{
                    "account": a.account, "folders": a.folders,
                    "changed_folders": a.changed_folders, "new": a.new, "updated": a.updated,
                    "removed": a.removed, "quarantined": a.quarantined, "fetched": a.fetched,
                    "bytes": a.bytes, "retries": a.retries,
                    "plan": [_plan_json(p) for p in a.plan] if dry_run else [],
                } for a in report.accounts],
                "stages": [{"name": s.name, "skipped": s.skipped or None}
                           for s in (stages.stages if stages else ())],
            })
            return
        if dry_run:
            for a in report.accounts:
                for p in a.plan:
                    what = p.subject or p.message_id or f"uid {p.uid}"
                    say(st, f"{_SYMBOL.get(p.action, '?')} {p.account}/{p.folder} uid {p.uid}: "
                            f"{what} ({p.action}: {p.reason})")
        for a in report.accounts:
            if a.retries:
                say(st, f"{a.account}: connection dropped {a.retries} time(s), resumed")
        say(st, ("Dry run: " if dry_run else "Synced: ") + report.summary)
        for s in (stages.stages if stages else ()):
            if s.skipped:
                say(st, f"  {s.name}: skipped ({s.skipped})")

    @app.command()
    def why(
        ctx: typer.Context,
        thread_id: ThreadIdArg,
        json_out: JsonOpt = False,
    ) -> None:
        """Say why a thread is in the KB: who shared it, from which folder, by which rule."""
        st = state(ctx)
        _, conn, _ = st.open()
        r = ingest.why(conn, thread_id)
        if json_out:
            emit_json(r)
            return
        say(st, f"Thread {r.thread_id}: {r.subject or '(no subject)'}")
        say(st, "Shared by: " + (", ".join(r.shared_by) or "no IMAP account"))
        for e in r.entries:
            kws = f" [keywords: {', '.join(e.keywords)}]" if e.keywords else ""
            say(st, f"  <{e.message_id}> in {e.account}/{e.folder} uid {e.uid}: {e.reason}{kws}")
        for src in r.other_sources:
            say(st, f"  also from {src}")
