"""Scheduling: the crontab block against a real crontab(1), systemd units checked by
systemd-analyze when it is installed."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grex.errors import ConfigError, SchedulerError
from grex.ops import cron

CRON_USER = "grex-crontest"


@pytest.fixture(scope="module")
def crontab_env() -> dict[str, str]:
    """GREX_CRONTAB pointing at a throwaway user's crontab (as root), else the caller's own
    crontab, backed up and restored. Skips when crontab(1) is missing."""
    if not shutil.which("crontab"):
        pytest.skip("crontab(1) is not installed (Debian: apt-get install cron)")
    created = False
    saved: str | None = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(CRON_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                            "/usr/sbin/nologin", CRON_USER], check=True)
            created = True
        cmd = f"crontab -u {CRON_USER}"
        subprocess.run([*cmd.split(), "-r"], capture_output=True)
    else:
        cmd = "crontab"
        p = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
        saved = p.stdout if p.returncode == 0 else None
    yield {**os.environ, "GREX_CRONTAB": cmd}
    if os.geteuid() == 0:
        subprocess.run([*cmd.split(), "-r"], capture_output=True)
        if created:
            subprocess.run(["userdel", CRON_USER], capture_output=True)
    elif saved is None:
        subprocess.run(["crontab", "-r"], capture_output=True)
    else:
        subprocess.run(["crontab", "-"], input=saved, text=True, check=True)


def _crontab_l(env: dict[str, str]) -> str:
    p = subprocess.run([*env["GREX_CRONTAB"].split(), "-l"], capture_output=True, text=True)
    return p.stdout if p.returncode == 0 else ""


def _set_crontab(env: dict[str, str], text: str) -> None:
    subprocess.run([*env["GREX_CRONTAB"].split(), "-"], input=text, text=True, check=True)


@pytest.mark.parametrize(("text", "cron_expr", "calendar"), [
    ("15m", "*/15 * * * *", "*-*-* *:00/15:00"),
    ("5", "*/5 * * * *", "*-*-* *:00/5:00"),
    ("1h", "0 * * * *", "*-*-* 00/1:00:00"),
    ("6h", "0 */6 * * *", "*-*-* 00/6:00:00"),
    ("1d", "0 0 * * *", "*-*-* 00:00:00"),
])
def test_every_maps_to_cron_and_systemd(text: str, cron_expr: str, calendar: str) -> None:
    s = cron.parse_every(text)
    assert (s.cron, s.on_calendar) == (cron_expr, calendar)


@pytest.mark.parametrize("text", ["7m", "0m", "5h", "2d", "fortnightly", ""])
def test_every_rejects_uneven_or_unknown_intervals(text: str) -> None:
    with pytest.raises(ConfigError, match="--every"):
        cron.parse_every(text)


def test_environment_keeps_grex_settings_and_drops_secrets() -> None:
    env = {"PATH": "/opt/bin:/usr/bin", "GREX_IMAP_HOST": "127.0.0.1", "GREX_IMAP_PORT": "1993",
           "GREX_IMAP_PASSWORD": "hunter2", "GREX_API_TOKEN": "t0k", "HOME": "/root",
           "GREX_CRONTAB": "crontab -u x", "GREX_TEST_KILL_AT": "saved"}
    out = cron.sync_environment(env)
    assert out["PATH"] == "/opt/bin:/usr/bin"
    assert out["GREX_IMAP_HOST"] == "127.0.0.1" and out["GREX_IMAP_PORT"] == "1993"
    assert not {"GREX_IMAP_PASSWORD", "GREX_API_TOKEN", "HOME", "GREX_CRONTAB",
                "GREX_TEST_KILL_AT"} & set(out)
    line = cron.cron_command(Path("/srv/kb 1"), env)
    assert "hunter2" not in line and "t0k" not in line
    assert "'/srv/kb 1'" in line and "sync --quiet --log-file '/srv/kb 1/logs/sync.log'" in line


def test_percent_is_escaped_for_cron() -> None:
    line = cron.cron_command(Path("/srv/kb"), {"PATH": "/bin", "GREX_LABEL": "100%"})
    assert r"GREX_LABEL=100\%" in line and "%" not in line.replace(r"\%", "")


def test_install_show_remove_real_crontab(crontab_env: dict[str, str], tmp_path: Path) -> None:
    kb = tmp_path / "kb"
    other_kb = tmp_path / "other"
    kb.mkdir()
    other_kb.mkdir()
    users_own = "MAILTO=ops@example.org\n# my backup\n0 3 * * * /usr/local/bin/backup\n"
    _set_crontab(crontab_env, users_own)

    first = cron.cron_install(kb, cron.parse_every("15m"), crontab_env)
    assert first.changed
    again = cron.cron_install(kb, cron.parse_every("15m"), crontab_env)
    assert not again.changed  # idempotent
    text = _crontab_l(crontab_env)
    assert text.startswith(users_own)  # the user's lines untouched, in place
    assert text.count("# >>> grex sync") == 1
    assert f"*/15 * * * * cd {kb}" in text and (kb / "logs").is_dir()

    # a new interval replaces the block; a second KB gets its own block
    cron.cron_install(kb, cron.parse_every("30m"), crontab_env)
    cron.cron_install(other_kb, cron.parse_every("1h"), crontab_env)
    text = _crontab_l(crontab_env)
    assert text.count("# >>> grex sync") == 2 and "*/15" not in text
    assert "*/30 * * * * cd " + str(kb) in text

    shown = cron.cron_show(kb, crontab_env)
    assert shown.block.count("\n") == 3 and str(other_kb) not in shown.block
    assert len(cron.blocks(cron.cron_show(None, crontab_env).crontab)) == 2

    assert cron.cron_remove(kb, crontab_env).changed
    assert not cron.cron_remove(kb, crontab_env).changed
    text = _crontab_l(crontab_env)
    assert str(kb) + " " not in text and str(other_kb) in text and text.startswith(users_own)
    cron.cron_remove(other_kb, crontab_env)
    assert _crontab_l(crontab_env) == users_own


def test_missing_crontab_program_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SchedulerError, match="not installed"):
        cron.cron_install(tmp_path, cron.parse_every("15m"),
                          {"GREX_CRONTAB": "/nonexistent/crontab", "PATH": "/bin"})


def test_systemd_units_verify(tmp_path: Path) -> None:
    kb = tmp_path / "kb"
    kb.mkdir()
    unit_dir = tmp_path / "units"
    paths = cron.systemd_install(kb, cron.parse_every("15m"), unit_dir)
    assert sorted(p.suffix for p in paths) == [".service", ".timer"]
    service = next(p for p in paths if p.suffix == ".service").read_text()
    assert "ExecStart=" in service and "sync --quiet --log-file" in service
    timer = next(p for p in paths if p.suffix == ".timer").read_text()
    assert "OnCalendar=*-*-* *:00/15:00" in timer
    if shutil.which("systemd-analyze"):
        runtime = tmp_path / "rt"
        runtime.mkdir(mode=0o700)
        p = subprocess.run(["systemd-analyze", "--user", "verify", *map(str, paths)],
                           capture_output=True, text=True,
                           env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)})
        assert p.returncode == 0, p.stderr
    assert cron.systemd_remove(kb, unit_dir) == paths
    assert not any(unit_dir.iterdir())


def test_cli_install_show_remove(crontab_env: dict[str, str], tmp_path: Path) -> None:
    """`grex cron ...` as a user types it, against the real crontab."""
    repo = Path(__file__).resolve().parents[1]
    kb = tmp_path / "kb"

    def grex(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in crontab_env.items() if not k.startswith("GREX_")}
        env.update(GREX_CRONTAB=crontab_env["GREX_CRONTAB"], GREX_IMAP_PASSWORD="s3cret-pw",
                   GREX_NLP_MODEL="en_core_web_sm")
        return subprocess.run([sys.executable, "-m", "grex", "--kb", str(kb), *args],
                              capture_output=True, text=True, env=env, cwd=repo, timeout=60)

    _set_crontab(crontab_env, "")
    missing = grex("cron", "install")
    assert missing.returncode == 1 and "no knowledge base" in missing.stderr
    assert grex("init").returncode == 0
    (kb / "grex.toml").write_text('[[accounts]]\nname = "w"\nhost = "127.0.0.1"\n')
    p = grex("cron", "install", "--every", "30m")
    assert p.returncode == 0, p.stderr
    assert "Installed: grex sync every 30m" in p.stdout
    assert "account 'w' has no password_command" in p.stdout  # cron won't have the env secret
    assert grex("cron", "install", "--every", "30m").stdout.startswith("Already installed")
    text = _crontab_l(crontab_env)
    assert "s3cret-pw" not in text and "GREX_NLP_MODEL=en_core_web_sm" in text
    assert f"--kb {kb} sync --quiet --log-file {kb}/logs/sync.log" in text
    shown = grex("cron", "show", "--json")
    assert json.loads(shown.stdout)["block"] == cron.blocks(text)[0]
    bad = grex("cron", "install", "--every", "7m")
    assert bad.returncode == 78 and "divide" in bad.stderr
    assert grex("cron", "remove").stdout.startswith("Removed")
    assert _crontab_l(crontab_env) == ""
    gone = grex("cron", "show")
    assert gone.returncode == 1 and "no grex schedule" in gone.stderr
    units = tmp_path / "units"
    s = grex("cron", "install", "--systemd", "--unit-dir", str(units), "--every", "1h")
    assert s.returncode == 0 and "systemctl --user enable --now grex-sync-kb-" in s.stdout
    assert len(list(units.iterdir())) == 2
    assert grex("cron", "remove", "--systemd", "--unit-dir", str(units)).returncode == 0
    assert not list(units.iterdir())
