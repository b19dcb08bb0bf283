"""`grex cron`, `grex status`, `grex doctor`: running grex unattended, thin over grex.ops.cron,
grex.ops.status and grex.ops."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from grex import ops, store
from grex.cli.core import JsonOpt, emit_json, say, state
from grex.errors import GrexError

cron_app = typer.Typer(help="Schedule `grex sync` (crontab block or systemd user timer).",
                       no_args_is_help=True, rich_markup_mode=None)

SystemdOpt = Annotated[bool, typer.Option("--systemd", help="a systemd user service + timer "
                                          "instead of a crontab block")]
UnitDirOpt = Annotated[Path | None, typer.Option("--unit-dir", help="where the systemd units "
                                                 "go [default: ~/.config/systemd/user]")]


def _kb(ctx: typer.Context) -> store.KB:
    return store.KB.open(state(ctx).kb_path.resolve())


def _password_warnings(ctx: typer.Context) -> list[str]:
    """Accounts whose password only the current environment holds: cron won't have it."""
    try:
        config = state(ctx).config()
    except Exception:  # noqa: BLE001 - `grex doctor` reports config problems
        return []
    return [f"account {a.name!r} has no password_command: the scheduled sync will not "
            "have GREX_IMAP_PASSWORD (secrets are never written into the schedule); set "
            "password_command in grex.toml" for a in config.accounts if not a.password_command]


@cron_app.command("install")
def cron_install(
    ctx: typer.Context,
    every: Annotated[str, typer.Option("--every", help="interval: 5m, 10m, 15m, 20m, 30m, "
                                       "1h-12h dividing 24, or 1d")] = "15m",
    systemd: SystemdOpt = False,
    unit_dir: UnitDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run `grex sync --quiet` on a schedule for this KB (replaces its earlier schedule)."""
    st = state(ctx)
    kb = _kb(ctx)
    schedule = ops.parse_every(every)
    warnings = _password_warnings(ctx)
    if systemd:
        paths = ops.systemd_install(kb.path, schedule, unit_dir)
        timer = next(p for p in paths if p.suffix == ".timer")
        if json_out:
            emit_json({"systemd": True, "every": str(schedule), "units": [str(p) for p in paths],
                       "warnings": warnings})
            return
        for p in paths:
            say(st, f"wrote {p}")
        say(st, f"enable it with: systemctl --user daemon-reload && "
                f"systemctl --user enable --now {timer.name}")
    else:
        result = ops.cron_install(kb.path, schedule)
        if json_out:
            emit_json({"systemd": False, "every": str(schedule), "changed": result.changed,
                       "block": result.block, "warnings": warnings})
            return
        say(st, ("Installed" if result.changed else "Already installed") +
            f": grex sync every {schedule} for {kb.path}, logging to "
            f"{kb.logs_dir / ops.LOG_NAME}")
        say(st, result.block.rstrip("\n"))
    for w in warnings:
        say(st, f"warning: {w}")


@cron_app.command("show")
def cron_show(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", help="every KB's grex block")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Show the crontab block of this KB (or every grex block with --all)."""
    st = state(ctx)
    kb_path = None if all_ else state(ctx).kb_path.resolve()
    result = ops.cron_show(kb_path)
    if json_out:
        emit_json({"installed": bool(result.block), "block": result.block})
        return
    if not result.block:
        raise GrexError("no grex schedule in the crontab" + ("" if all_ else f" for {kb_path}"),
                        hint="`grex cron install` adds one")
    say(st, result.block.rstrip("\n"))


@cron_app.command("remove")
def cron_remove(
    ctx: typer.Context,
    systemd: SystemdOpt = False,
    unit_dir: UnitDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Remove this KB's schedule (the user's other crontab lines stay as they are)."""
    st = state(ctx)
    kb_path = st.kb_path.resolve()
    if systemd:
        removed = ops.systemd_remove(kb_path, unit_dir)
        if json_out:
            emit_json({"removed": [str(p) for p in removed]})
            return
        say(st, "\n".join(f"removed {p}" for p in removed) or "no units for this KB")
        return
    result = ops.cron_remove(kb_path)
    if json_out:
        emit_json({"removed": result.changed})
        return
    say(st, f"Removed the schedule for {kb_path}" if result.changed
        else f"No schedule for {kb_path} in the crontab")


def _run_line(r: Any) -> str:
    counts = r.counts or {}
    parts = [f"{counts[k]} {k}" for k in ("new", "updated", "removed", "quarantined")
             if k in counts]
    dur = f", {r.duration:.1f} s" if r.duration is not None else ""
    tail = f": {', '.join(parts)}" if parts else ""
    err = f" ({r.error})" if r.error and r.result != "ok" else ""
    return f"{r.result}, started {r.started_at}{dur}{tail}{err}"


def _print_status(st: Any, s: ops.Status) -> None:
    say(st, f"Knowledge base {s.kb}")
    say(st, "Last sync: " + (_run_line(s.last_sync) if s.last_sync else "never"))
    c = s.counts
    line = f"Messages {c['messages']}, threads {c['threads']}"
    for k in ("people", "topics"):
        line += f", {k} {c[k] if c[k] is not None else 'not extracted'}"
    say(st, line)
    say(st, f"Quarantined: {s.quarantined_total}")
    for q in s.quarantined[:5]:
        say(st, f"  {q['source']}: {q['reason']}")
    if s.quarantined_total > 5:
        say(st, f"  ... and {s.quarantined_total - 5} more (`grex status --json` lists "
                f"{len(s.quarantined)})")
    if s.index is None:
        say(st, "Index: search not installed")
    else:
        docs = f"{s.index.documents} documents, " if s.index.exists else ""
        flag = "" if s.index.ok else (" [FAIL]" if s.index.exists else " [WARN]")
        say(st, f"Index: {docs}{s.index.detail}{flag}")
    h = s.lock.holder
    if s.lock.held:
        say(st, "Lock: held by " + (f"`{h.command}` pid {h.pid} on {h.host} since {h.since}"
                                    if h else f"pid {', '.join(map(str, s.lock.pids))}"))
    elif s.lock.stale and h:
        say(st, f"Lock: free (stale record of pid {h.pid}, `{h.command}` since {h.since})")
    else:
        say(st, "Lock: free")
    if s.site is not None:
        when = s.site.refreshed_at or "never"
        pending = f", {s.site.pending} change(s) pending" if s.site.pending else ""
        say(st, f"Site: {s.site.html_dir}, last refreshed {when}{pending}")
    for w in s.warnings:
        say(st, f"warning: {w}")


def register(app: typer.Typer) -> None:
    app.add_typer(cron_app, name="cron")

    @app.command()
    def status(ctx: typer.Context, json_out: JsonOpt = False) -> None:
        """Last sync, counts, quarantine, index health, who holds the lock, site refresh.

        Reads the last committed state; never waits for a running sync."""
        st = state(ctx)
        kb = _kb(ctx)
        html_dir = None
        try:
            html = st.config().export.html_dir
            html_dir = Path(html) if html else None
        except Exception:  # noqa: BLE001 - a broken config must not hide the KB's state
            html_dir = None
        s = ops.gather_status(kb, html_dir)
        if json_out:
            emit_json(s.to_dict())
            return
        _print_status(st, s)

    @app.command(name="doctor")
    def doctor_(
        ctx: typer.Context,
        repair: Annotated[bool, typer.Option("--repair", help="fix what can be fixed: rebuild "
                                             "the index, clear a stale lock record, close "
                                             "killed runs, re-import orphan raw files")] = False,
        server: Annotated[bool, typer.Option(help="connect to each account's server")] = True,
        json_out: JsonOpt = False,
    ) -> None:
        """Check config, credentials, server, catalog, raw files, index, lock; one line each.

        Exits 1 when a check FAILs."""
        st = state(ctx)
        checks = ops.run_doctor(st.kb_path.resolve(), st.config, repair=repair,
                                   server=server)
        worst = ops.worst(checks)
        if json_out:
            emit_json({"result": worst, "checks": [c.to_dict() for c in checks]})
        else:
            for c in checks:
                say(st, c.line())
        if worst == ops.FAIL:
            failed = [c.name for c in checks if c.level == ops.FAIL]
            raise GrexError(f"doctor: {len(failed)} check(s) failed: {', '.join(failed)}")
