"""Ops: running unattended: runs and their log, status, doctor, cron and systemd.

Takes a KB and gives its runs' records (``runs``: the writer lock's holder, run rows, log
files), its state (``status``), checks and repairs (``doctor``), and schedules (``cron``).
Sits above the stages: it may import grex.pipeline and every stage's public names, and
grex.store, grex.models, grex.config, grex.errors.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: a served search imports this package (launcher)
if TYPE_CHECKING:
    from grex.ops.cron import (
        LOG_NAME,
        CronResult,
        Schedule,
        blocks,
        cron_command,
        cron_install,
        cron_remove,
        cron_show,
        crontab_command,
        default_systemd_dir,
        parse_every,
        read_crontab,
        render_block,
        render_units,
        sync_argv,
        sync_environment,
        systemd_install,
        systemd_remove,
        unit_name,
        with_block,
        without_block,
        write_crontab,
    )
    from grex.ops.doctor import (
        FAIL,
        OK,
        USEFUL_CAPS,
        WARN,
        Check,
        check_catalog,
        check_credentials,
        check_index,
        check_lock,
        check_raw_files,
        check_runs,
        check_server,
        run_doctor,
        worst,
    )
    from grex.ops.runs import (
        LOG_BACKUPS,
        LOG_MAX_BYTES,
        RUNS_SCHEMA,
        LockHolder,
        LockState,
        Run,
        RunRecord,
        StopFlag,
        clear_holder,
        close_killed_runs,
        end_run,
        ensure_runs,
        exit_code_table,
        exit_codes_markdown,
        get_state,
        kb_root,
        lock_pids,
        lock_state,
        now_iso,
        pid_alive,
        read_holder,
        recent_runs,
        record_site_refresh,
        refresh_site,
        set_state,
        setup_log_file,
        start_run,
        writer,
    )
    from grex.ops.status import (
        IndexHealth,
        SiteState,
        Status,
        gather_status,
        index_health,
        site_state,
    )

# public name -> the module that defines it; imported on first use, so importing the
# package costs nothing and no module of it waits on another's imports
_EXPORTS = {
    "LOG_BACKUPS": "grex.ops.runs",
    "LOG_MAX_BYTES": "grex.ops.runs",
    "LockHolder": "grex.ops.runs",
    "LockState": "grex.ops.runs",
    "RUNS_SCHEMA": "grex.ops.runs",
    "Run": "grex.ops.runs",
    "RunRecord": "grex.ops.runs",
    "StopFlag": "grex.ops.runs",
    "clear_holder": "grex.ops.runs",
    "close_killed_runs": "grex.ops.runs",
    "end_run": "grex.ops.runs",
    "ensure_runs": "grex.ops.runs",
    "exit_code_table": "grex.ops.runs",
    "exit_codes_markdown": "grex.ops.runs",
    "get_state": "grex.ops.runs",
    "kb_root": "grex.ops.runs",
    "lock_pids": "grex.ops.runs",
    "lock_state": "grex.ops.runs",
    "now_iso": "grex.ops.runs",
    "pid_alive": "grex.ops.runs",
    "read_holder": "grex.ops.runs",
    "recent_runs": "grex.ops.runs",
    "record_site_refresh": "grex.ops.runs",
    "refresh_site": "grex.ops.runs",
    "set_state": "grex.ops.runs",
    "setup_log_file": "grex.ops.runs",
    "start_run": "grex.ops.runs",
    "writer": "grex.ops.runs",
    "IndexHealth": "grex.ops.status",
    "SiteState": "grex.ops.status",
    "Status": "grex.ops.status",
    "gather_status": "grex.ops.status",
    "index_health": "grex.ops.status",
    "site_state": "grex.ops.status",
    "Check": "grex.ops.doctor",
    "FAIL": "grex.ops.doctor",
    "OK": "grex.ops.doctor",
    "USEFUL_CAPS": "grex.ops.doctor",
    "WARN": "grex.ops.doctor",
    "check_catalog": "grex.ops.doctor",
    "check_credentials": "grex.ops.doctor",
    "check_index": "grex.ops.doctor",
    "check_lock": "grex.ops.doctor",
    "check_raw_files": "grex.ops.doctor",
    "check_runs": "grex.ops.doctor",
    "check_server": "grex.ops.doctor",
    "run_doctor": "grex.ops.doctor",
    "worst": "grex.ops.doctor",
    "CronResult": "grex.ops.cron",
    "LOG_NAME": "grex.ops.cron",
    "Schedule": "grex.ops.cron",
    "blocks": "grex.ops.cron",
    "cron_command": "grex.ops.cron",
    "cron_install": "grex.ops.cron",
    "cron_remove": "grex.ops.cron",
    "cron_show": "grex.ops.cron",
    "crontab_command": "grex.ops.cron",
    "default_systemd_dir": "grex.ops.cron",
    "parse_every": "grex.ops.cron",
    "read_crontab": "grex.ops.cron",
    "render_block": "grex.ops.cron",
    "render_units": "grex.ops.cron",
    "sync_argv": "grex.ops.cron",
    "sync_environment": "grex.ops.cron",
    "systemd_install": "grex.ops.cron",
    "systemd_remove": "grex.ops.cron",
    "unit_name": "grex.ops.cron",
    "with_block": "grex.ops.cron",
    "without_block": "grex.ops.cron",
    "write_crontab": "grex.ops.cron",
}

__all__ = [
    "Check", "CronResult", "FAIL", "IndexHealth", "LOG_BACKUPS", "LOG_MAX_BYTES", "LOG_NAME",
    "LockHolder", "LockState", "OK", "RUNS_SCHEMA", "Run", "RunRecord", "Schedule", "SiteState",
    "Status", "StopFlag", "USEFUL_CAPS", "WARN", "blocks", "check_catalog", "check_credentials",
    "check_index", "check_lock", "check_raw_files", "check_runs", "check_server", "clear_holder",
    "close_killed_runs", "cron_command", "cron_install", "cron_remove", "cron_show",
    "crontab_command", "default_systemd_dir", "end_run", "ensure_runs", "exit_code_table",
    "exit_codes_markdown", "gather_status", "get_state", "index_health", "kb_root", "lock_pids",
    "lock_state", "now_iso", "parse_every", "pid_alive", "read_crontab", "read_holder",
    "recent_runs", "record_site_refresh", "refresh_site", "render_block", "render_units",
    "run_doctor", "set_state", "setup_log_file", "site_state", "start_run", "sync_argv",
    "sync_environment", "systemd_install", "systemd_remove", "unit_name", "with_block",
    "without_block", "worst", "write_crontab", "writer",
]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # the import statement's machinery (not importlib's), so -X importtime reports it
    value = getattr(__import__(module, fromlist=(name,)), name)
    globals()[name] = value
    return value
