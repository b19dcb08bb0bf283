"""Scheduling `grex sync` without anyone watching: a marked crontab block or systemd units.

The crontab is edited only between markers that name the KB, so several KBs can each
have a schedule and the user's own lines are never touched:

    # >>> grex sync /abs/kb >>> (managed by `grex cron`; edit with `grex cron install/remove`)
    */15 * * * * cd /abs/kb && PATH=... /usr/bin/python3 -m grex --kb /abs/kb sync --quiet ...
    # <<< grex sync /abs/kb <<<

The command carries its own environment as shell assignments (PATH, PYTHONPATH when grex
is not installed, the non-secret GREX_* variables) instead of crontab ``NAME=value`` lines,
which would leak into every later entry of the user's crontab. Secrets (any variable whose
name says PASS, SECRET, TOKEN, KEY or CRED) are never written.

The crontab program is taken from ``GREX_CRONTAB`` (e.g. ``crontab -u someone``) so tests
and administrators can point it elsewhere; it defaults to ``crontab``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from grex.errors import ConfigError, SchedulerError

_SECRET = re.compile(r"PASS|SECRET|TOKEN|KEY|CRED", re.IGNORECASE)
# Variables that describe how to reach grex itself, never the schedule's own business.
_SKIP_VARS = {"GREX_CRONTAB"}
LOG_NAME = "sync.log"


@dataclass(frozen=True, slots=True)
class Schedule:
    """An interval that cron and systemd can both express exactly."""

    minutes: int

    @property
    def cron(self) -> str:
        if self.minutes < 60:
            return f"*/{self.minutes} * * * *"
        hours = self.minutes // 60
        if hours < 24:
            return f"0 */{hours} * * *" if hours > 1 else "0 * * * *"
        return "0 0 * * *"

    @property
    def on_calendar(self) -> str:
        if self.minutes < 60:
            return f"*-*-* *:00/{self.minutes}:00"
        hours = self.minutes // 60
        if hours < 24:
            return f"*-*-* 00/{hours}:00:00"
        return "*-*-* 00:00:00"

    def __str__(self) -> str:
        if self.minutes % 1440 == 0:
            return "1d"
        if self.minutes % 60 == 0:
            return f"{self.minutes // 60}h"
        return f"{self.minutes}m"


def parse_every(text: str) -> Schedule:
    """``15m``, ``1h``, ``6h``, ``1d`` -> Schedule. Only intervals that divide an hour or a
    day evenly are accepted: cron's ``*/7`` would fire at :56 and again at :00."""
    m = re.fullmatch(r"\s*(\d+)\s*(m|min|h|d)?\s*", text.lower())
    if not m:
        raise ConfigError(f"--every {text!r} is not an interval",
                          hint="write e.g. 15m, 30m, 1h, 6h or 1d")
    n, unit = int(m.group(1)), m.group(2) or "m"
    minutes = n * {"m": 1, "min": 1, "h": 60, "d": 1440}[unit]
    if 1 <= minutes < 60 and 60 % minutes == 0:
        return Schedule(minutes)
    if 60 <= minutes < 1440 and minutes % 60 == 0 and 24 % (minutes // 60) == 0:
        return Schedule(minutes)
    if minutes == 1440:
        return Schedule(minutes)
    raise ConfigError(f"--every {text!r} does not divide an hour or a day evenly",
                      hint="use 5m, 10m, 15m, 20m or 30m, 1h-12h dividing 24, or 1d")


# ---------------------------------------------------------------- the command cron runs


def _grex_pythonpath() -> str | None:
    """The directory to put on PYTHONPATH when grex is run from a source tree, not installed."""
    import grex

    root = Path(grex.__file__).resolve().parent.parent
    if any(part in ("site-packages", "dist-packages") for part in root.parts):
        return None
    return str(root)


def sync_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables the scheduled sync needs: PATH, PYTHONPATH (source tree), non-secret GREX_*."""
    env = os.environ if env is None else env
    out: dict[str, str] = {"PATH": env.get("PATH", "/usr/local/bin:/usr/bin:/bin")}
    pp = _grex_pythonpath()
    if pp:
        out["PYTHONPATH"] = pp
    for name in sorted(env):
        if (name.startswith("GREX_") and name not in _SKIP_VARS
                and not name.startswith("GREX_TEST_") and not _SECRET.search(name)):
            out[name] = env[name]
    return out


def sync_argv(kb: Path, python: str | None = None) -> list[str]:
    kb = kb.resolve()
    return [python or sys.executable, "-m", "grex", "--kb", str(kb), "sync", "--quiet",
            "--log-file", str(kb / "logs" / LOG_NAME)]


def cron_command(kb: Path, env: Mapping[str, str] | None = None,
                 python: str | None = None) -> str:
    """One shell line for cron's /bin/sh: cd, the environment, the sync command."""
    kb = kb.resolve()
    assigns = " ".join(f"{k}={shlex.quote(v)}" for k, v in sync_environment(env).items())
    cmd = " ".join(shlex.quote(a) for a in sync_argv(kb, python))
    line = f"cd {shlex.quote(str(kb))} && {assigns} {cmd}"
    return line.replace("%", r"\%")  # cron turns a bare % into a newline


def _markers(kb: Path) -> tuple[str, str]:
    kb = kb.resolve()
    return (f"# >>> grex sync {kb} >>> (managed by `grex cron`; change it with grex cron)",
            f"# <<< grex sync {kb} <<<")


def render_block(kb: Path, schedule: Schedule, env: Mapping[str, str] | None = None,
                 python: str | None = None) -> str:
    begin, end = _markers(kb)
    return f"{begin}\n{schedule.cron} {cron_command(kb, env, python)}\n{end}\n"


def _split(crontab: str, kb: Path) -> tuple[str, str | None, str]:
    """(before, block or None, after) around this KB's block."""
    begin, end = _markers(kb)
    begin_key = begin.split(" (managed")[0]
    lines = crontab.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if ln.startswith(begin_key + " ")
                  or ln.rstrip("\n") == begin_key), None)
    if start is None:
        return crontab, None, ""
    stop = next((i for i in range(start + 1, len(lines)) if lines[i].rstrip("\n") == end), None)
    if stop is None:  # an unterminated block: treat the rest as ours rather than duplicate
        stop = len(lines) - 1
    return "".join(lines[:start]), "".join(lines[start:stop + 1]), "".join(lines[stop + 1:])


def with_block(crontab: str, block: str, kb: Path) -> str:
    """The crontab with this KB's block replaced (or appended): idempotent."""
    before, _old, after = _split(crontab, kb)
    if before and not before.endswith("\n"):
        before += "\n"
    return before + block + after


def without_block(crontab: str, kb: Path) -> tuple[str, bool]:
    before, old, after = _split(crontab, kb)
    return before + after, old is not None


def blocks(crontab: str) -> list[str]:
    """Every grex block in a crontab (any KB)."""
    out, cur = [], None
    for ln in crontab.splitlines(keepends=True):
        if ln.startswith("# >>> grex sync "):
            cur = [ln]
        elif cur is not None:
            cur.append(ln)
            if ln.startswith("# <<< grex sync "):
                out.append("".join(cur))
                cur = None
    return out


# ------------------------------------------------------------ talking to crontab(1)


def crontab_command(env: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if env is None else env
    cmd = shlex.split(env.get("GREX_CRONTAB", "crontab"))
    if not cmd or not shutil.which(cmd[0]):
        raise SchedulerError(f"the crontab program ({' '.join(cmd) or 'crontab'}) is not installed",
                        hint="install cron (Debian: apt-get install cron) or use --systemd")
    return cmd


def read_crontab(cmd: Sequence[str]) -> str:
    p = subprocess.run([*cmd, "-l"], capture_output=True, text=True)
    if p.returncode != 0:
        if "no crontab" in p.stderr.lower():
            return ""
        raise SchedulerError(f"`{' '.join(cmd)} -l` failed: {p.stderr.strip()}")
    return p.stdout


def write_crontab(cmd: Sequence[str], text: str) -> None:
    p = subprocess.run([*cmd, "-"], input=text, capture_output=True, text=True)
    if p.returncode != 0:
        raise SchedulerError(f"`{' '.join(cmd)} -` refused the new crontab: {p.stderr.strip()}")


@dataclass(frozen=True, slots=True)
class CronResult:
    changed: bool
    block: str  # this KB's block after the call ("" when there is none)
    crontab: str  # the whole crontab after the call


def cron_install(kb: Path, schedule: Schedule, env: Mapping[str, str] | None = None,
                 python: str | None = None) -> CronResult:
    cmd = crontab_command(env)
    (kb / "logs").mkdir(parents=True, exist_ok=True)
    current = read_crontab(cmd)
    block = render_block(kb, schedule, env, python)
    new = with_block(current, block, kb)
    if new != current:
        write_crontab(cmd, new)
    return CronResult(new != current, block, new)


def cron_show(kb: Path | None, env: Mapping[str, str] | None = None) -> CronResult:
    """This KB's block, or (kb None) every grex block."""
    current = read_crontab(crontab_command(env))
    if kb is None:
        return CronResult(False, "".join(blocks(current)), current)
    _b, block, _a = _split(current, kb)
    return CronResult(False, block or "", current)


def cron_remove(kb: Path, env: Mapping[str, str] | None = None) -> CronResult:
    cmd = crontab_command(env)
    current = read_crontab(cmd)
    new, found = without_block(current, kb)
    if found:
        write_crontab(cmd, new)
    return CronResult(found, "", new)


# ------------------------------------------------------------------ systemd user units


def unit_name(kb: Path) -> str:
    """A unit name that is stable per KB: grex-sync-<escaped tail>-<hash>."""
    import hashlib

    kb = kb.resolve()
    tail = re.sub(r"[^A-Za-z0-9]+", "-", kb.name).strip("-")[:32] or "kb"
    digest = hashlib.sha256(str(kb).encode()).hexdigest()[:8]
    return f"grex-sync-{tail}-{digest}"


def _systemd_quote(arg: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", arg):
        return arg.replace("%", "%%")
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


def render_units(kb: Path, schedule: Schedule, env: Mapping[str, str] | None = None,
                 python: str | None = None) -> dict[str, str]:
    """{filename: text} for a oneshot service and its timer."""
    kb = kb.resolve()
    name = unit_name(kb)
    envs = "\n".join(f"Environment={_systemd_quote(f'{k}={v}')}"
                     for k, v in sync_environment(env).items())
    exec_start = " ".join(_systemd_quote(a) for a in sync_argv(kb, python))
    service = f"""[Unit]
Description=grex sync of the knowledge base {kb}

[Service]
Type=oneshot
WorkingDirectory={_systemd_quote(str(kb))}
{envs}
ExecStart={exec_start}
# 75: another sync held the KB lock; 143: stopped by SIGTERM after a batch
SuccessExitStatus=75 143
# SIGTERM lets grex finish the current batch and record the run as interrupted
KillSignal=SIGTERM
TimeoutStopSec=120
Nice=10
"""
    timer = f"""[Unit]
Description=grex sync of {kb} every {schedule}

[Timer]
OnCalendar={schedule.on_calendar}
Persistent=true
RandomizedDelaySec=30
Unit={name}.service

[Install]
WantedBy=timers.target
"""
    return {f"{name}.service": service, f"{name}.timer": timer}


def default_systemd_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


def systemd_install(kb: Path, schedule: Schedule, unit_dir: Path | None = None,
                    env: Mapping[str, str] | None = None,
                    python: str | None = None) -> list[Path]:
    """Write the units (atomically); enabling them is left to `systemctl --user enable --now`."""
    unit_dir = unit_dir or default_systemd_dir()
    unit_dir.mkdir(parents=True, exist_ok=True)
    (kb / "logs").mkdir(parents=True, exist_ok=True)
    written = []
    for fname, text in render_units(kb, schedule, env, python).items():
        path = unit_dir / fname
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        written.append(path)
    return written


def systemd_remove(kb: Path, unit_dir: Path | None = None) -> list[Path]:
    unit_dir = unit_dir or default_systemd_dir()
    removed = []
    for suffix in (".service", ".timer"):
        path = unit_dir / f"{unit_name(kb)}{suffix}"
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed
