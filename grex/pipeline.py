"""Composes the stages: import/sync -> extract -> index -> export.

Each later stage follows the catalog's change feed from its own cursor, so running them
after any change (or after a crash) does exactly the outstanding work. A stage whose
module is not installed in this build is skipped and said to be skipped.
"""

from __future__ import annotations

import importlib
import inspect
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grex import ingest, store
from grex.config import Config
from grex.models import ImportReport

# (name, "module:function"); each function takes (kb, conn, config, *, progress) and
# returns a report object with a ``summary()`` or a dict.
LATER_STAGES: list[tuple[str, str]] = [
    ("extract", "grex.extract.stage:run_extract"),
    ("index", "grex.search.index:run_index"),  # after extraction: it indexes entities and topics
    # last: refreshes [export] html_dir (a no-op unless set) through grex.export's
    # run_export, and records when for `grex status`
    ("export", "grex.ops.runs:refresh_site"),
]


@dataclass(frozen=True)
class StageResult:
    name: str
    report: Any = None
    skipped: str = ""  # why the stage did not run


@dataclass(frozen=True)
class PipelineReport:
    stages: tuple[StageResult, ...] = field(default_factory=tuple)


def import_paths(kb: store.KB, conn: sqlite3.Connection, config: Config,
                 paths: Iterable[Path | str], *,
                 progress: Callable[[int], None] | None = None) -> ImportReport:
    return ingest.import_messages(kb, conn, ingest.scan(paths),
                                    subject_merge=config.threading.subject_merge,
                                    progress=progress)


def run_later_stages(kb: store.KB, conn: sqlite3.Connection, config: Config, *,
                     progress: Callable[[str, int, int | None], None] | None = None,
                     only: Iterable[str] | None = None,
                     should_stop: Callable[[], bool] | None = None,
                     **options: Any) -> PipelineReport:
    """Run every later stage that exists, incrementally, in order.

    ``should_stop`` is asked between stages (a SIGTERM during a sync): the stages not yet
    run are skipped, and the next run does their outstanding work from the change feed.
    """
    wanted = set(only) if only is not None else None
    results: list[StageResult] = []
    for name, target in LATER_STAGES:
        if wanted is not None and name not in wanted:
            continue
        if should_stop is not None and should_stop():
            results.append(StageResult(name, skipped="stopped before this stage"))
            continue
        module_name, _, func_name = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and module_name.startswith(e.name):
                results.append(StageResult(name, skipped=f"{module_name} is not available"))
                continue
            raise
        func = getattr(module, func_name)
        stage_progress = (lambda n, total=None, _name=name: progress(_name, n, total)) \
            if progress else None
        kwargs = dict(options.get(name, {}))
        if should_stop is not None and "should_stop" in inspect.signature(func).parameters:
            kwargs["should_stop"] = should_stop  # a long stage stops between its chunks
        report = func(kb, conn, config, progress=stage_progress, **kwargs)
        results.append(StageResult(name, report))
    if wanted is None and not any(r.skipped == "stopped before this stage"
                                  or getattr(r.report, "stopped", False) for r in results):
        store.prune_changes(conn)  # every stage is caught up to its cursor: the rest is history
    return PipelineReport(tuple(results))
