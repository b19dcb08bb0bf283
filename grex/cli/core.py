"""What every command shares: global state, opening the KB, JSON output, progress bars."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from grex import store
from grex.config import Config, load_config, resolve_kb_path

console = Console(highlight=False, soft_wrap=True)

# option types shared by the commands
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]
ThreadIdArg = Annotated[str, typer.Argument(help="a thread id (or unique prefix), or a "
                                            "Message-ID in it")]
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass
class AppState:
    kb_flag: str | None = None
    debug: bool = False
    quiet: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)

    told: bool = False

    @property
    def kb_path(self) -> Path:
        from grex.paths import kb_path

        path, source = kb_path(self.kb_flag)
        if source == "default" and not self.told and not self.quiet and sys.stderr.isatty():
            self.told = True  # a person at a terminal learns which KB an unnamed one is
            err_console.print(f"(knowledge base: {path}; --kb or GREX_KB names another)",
                              markup=False, style="dim")
        return resolve_kb_path(self.kb_flag)

    def config(self) -> Config:
        return load_config(self.kb_path, self.overrides)

    def open(self, *, readonly: bool = False) -> tuple[store.KB, sqlite3.Connection, Config]:
        config = self.config()
        kb = store.KB.open(config.kb)
        return kb, kb.connect(readonly=readonly), config


def state(ctx: typer.Context) -> AppState:
    obj = ctx.find_root().obj
    if not isinstance(obj, AppState):
        obj = AppState()
        ctx.find_root().obj = obj
    return obj


def _default(o: Any) -> Any:
    if isinstance(o, datetime):
        return o.isoformat()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, set | frozenset | tuple):
        return list(o)
    if hasattr(o, "__dataclass_fields__"):
        from dataclasses import asdict
        return asdict(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def emit_json(obj: Any) -> None:
    """Print JSON to stdout (UTF-8, not ASCII-escaped), one document."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=2, default=_default) + "\n")
    sys.stdout.flush()


def show_progress(st: AppState) -> bool:
    return not st.quiet and sys.stdout.isatty()


@contextlib.contextmanager
def progress_bar(st: AppState, description: str,
                 total: int | None = None) -> Iterator[Callable[..., None]]:
    """A Rich progress bar (none when quiet or not a TTY); yields advance(n, total=None):
    a stage that learns its total as it goes passes it, so the bar has an end and an ETA."""
    def nothing(n: int = 1, total: int | None = None) -> None:
        return None

    if not show_progress(st):
        yield nothing
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                  transient=True) as p:
        task = p.add_task(description, total=total)

        def advance(n: int = 1, total: int | None = None) -> None:
            if total is not None:
                p.update(task, total=total)
            p.advance(task, n)

        yield advance


def say(st: AppState, text: str) -> None:
    """A human line on stdout, unless quiet."""
    if not st.quiet:
        console.print(text, markup=False)


def iso(ts: float | datetime) -> str:
    if isinstance(ts, datetime):
        return ts.isoformat()
    from datetime import UTC
    return datetime.fromtimestamp(ts, UTC).isoformat()
