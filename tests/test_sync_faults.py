"""Faults: bad credentials, certificates, hosts and folders give one line and an exit code;
dropped connections and SIGKILL at any point lose nothing and duplicate nothing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from grex.ingest import imap as gsync
from tests.fixtures_imap import ImapUser, grex_cli, kb_state, run_sync, write_accounts

pytestmark = pytest.mark.imap

SHARE = ("grex-share",)


def _one_error_line(r: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def test_wrong_password_exit_77(imap_user, tmp_path):
    kb = write_accounts(tmp_path / "kb", [imap_user.account(password_command="echo nope")])
    r = grex_cli(kb, "sync")
    assert r.returncode == 77
    line = _one_error_line(r)
    assert "login" in line and imap_user.name in line and "nope" not in line


def test_untrusted_certificate_exit_76(imap_user, tmp_path):
    other = tmp_path / "other.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=localhost",
                    "-keyout", str(tmp_path / "k.pem"), "-out", str(other), "-days", "1"],
                   check=True, capture_output=True)
    for ca in (str(other), ""):  # someone else's CA; the system CAs alone
        kb = write_accounts(tmp_path / f"kb{len(ca)}", [imap_user.account(ca_file=ca)])
        r = grex_cli(kb, "sync")
        assert r.returncode == 76, r.stderr
        assert "certificate" in _one_error_line(r)


def test_unknown_host_exit_68(imap_user, tmp_path):
    kb = write_accounts(tmp_path / "kb", [imap_user.account(host="no-such-host.invalid")])
    r = grex_cli(kb, "sync")
    assert r.returncode == 68
    assert "no-such-host.invalid" in _one_error_line(r)


def test_missing_folder_exit_67(imap_user, tmp_path):
    imap_user.deliver("Real", subject="x")
    kb = write_accounts(tmp_path / "kb", [imap_user.account(folders=["INBOX", "Nope"])])
    r = grex_cli(kb, "sync")
    assert r.returncode == 67
    line = _one_error_line(r)
    assert "'Nope'" in line and "Real" in line


def test_cleartext_refused_exit_78(imap_user, imap_server, tmp_path):
    kb = write_accounts(tmp_path / "kb", [imap_user.account(
        tls="none", port=imap_server.starttls_port, host="imap.example.com")])
    r = grex_cli(kb, "sync")
    assert r.returncode == 78
    assert "clear text" in _one_error_line(r)


def test_starttls_is_used_and_verified(imap_user, imap_server, tmp_path):
    mid = imap_user.deliver(subject="over starttls", keywords=SHARE)
    kb = write_accounts(tmp_path / "kb", [imap_user.account(
        tls="starttls", port=imap_server.starttls_port, host="localhost")])
    r = grex_cli(kb, "sync", "--no-later")
    assert r.returncode == 0, r.stderr
    assert "1 new" in r.stdout
    assert mid in str(kb_state(kb)["messages"])
    logins = [ln for ln in imap_server.log().splitlines()
              if "Login:" in ln and f"user=<{imap_user.name}>" in ln]
    assert logins and all("TLS" in ln for ln in logins)


def _load_many(user: ImapUser, n: int, folder: str = "INBOX") -> list[str]:
    """n messages in small threads of 3, every root shared."""
    raws = []
    mids = []
    for i in range(n):
        mid = f"m{i}.{user.name}@faults.test"
        root = f"m{i - i % 3}.{user.name}@faults.test"
        hdr = (f"From: a{i % 7}@example.org\r\nTo: t@example.org\r\nSubject: s{i // 3}\r\n"
               f"Date: Mon, 1 Jan 2024 00:{i % 60:02d}:00 +0000\r\nMessage-ID: <{mid}>\r\n")
        if mid != root:
            hdr += f"In-Reply-To: <{root}>\r\nReferences: <{root}>\r\n"
        raws.append(((hdr + f"\r\nbody {i}\r\n").encode(), None))
        mids.append(mid)
    from tests.fixtures_imap import load_mail

    with user.client() as c:
        load_mail.append_all(c, folder, raws, batch=100)
        c.select_folder(folder)
        roots = [u for u in c.search("ALL")][::3]
        c.add_flags(roots, list(SHARE))
    return mids


def test_server_restart_mid_sync_is_retried_and_resumed(imap_user, imap_server, tmp_path,
                                                        monkeypatch):
    mids = _load_many(imap_user, 60)
    kb = write_accounts(tmp_path / "kb", [imap_user.account()])
    monkeypatch.setenv("GREX_SYNC_BATCH", "10")
    # parse in worker processes (opt-in)
    monkeypatch.setattr("grex.ingest.imap.fetch.PARALLEL_MIN", 20)
    monkeypatch.setenv("GREX_SYNC_WORKERS", "2")
    restarted = []

    def progress(label: str, done: int, total: int | None) -> None:
        if not restarted and done >= 20:
            imap_server.restart()  # blocks until the new server greets
            restarted.append(done)

    report = run_sync(kb, progress=progress)
    assert restarted
    assert report.accounts[0].retries >= 1
    state = kb_state(kb)
    assert sorted(m for m, _ in state["messages"]) == sorted(mids)  # type: ignore[union-attr]
    assert len(state["sync"]) == 60  # type: ignore[arg-type]
    assert run_sync(kb).total("fetched") == 0


def test_connection_refused_gives_up_with_exit_68(imap_user, imap_server, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    kb = write_accounts(tmp_path / "kb", [imap_user.account(port=free)])
    sleeps: list[float] = []
    from grex import store
    from grex.config import load_config

    config = load_config(kb, env={})
    k = store.KB.open(kb)
    with pytest.raises(gsync.ConnectError) as e:
        gsync.sync(k, k.connect(), config, sleep=sleeps.append)
    assert e.value.exit_code == 68
    assert sleeps == [0.25, 0.5, 1.0, 2.0, 4.0]  # backoff before giving up


# ---------------------------------------------------------------- SIGKILL at any point

KILL_POINTS = ["fetched:1", "fetched:2", "saved:2", "removed:1", "removed:3", "state:1"]


@pytest.fixture(scope="module")
def kill_scenario(imap_server, tmp_path_factory):
    """One mailbox, and the KB an uninterrupted two-step history gives:
    sync; then unshare one thread, delete a reply, add new threads; sync again."""
    user = imap_server.new_user()
    _load_many(user, 45)
    base = tmp_path_factory.mktemp("kill")
    env = {"GREX_SYNC_BATCH": "8"}

    def step2() -> None:
        uids = user.uids("INBOX")
        user.set_keywords("INBOX", uids[0:1] + uids[3:4], list(SHARE), add=False)
        user.delete("INBOX", uids[10:11])
        extra = [user.deliver(subject=f"late {i}", keywords=SHARE) for i in range(10)]
        assert extra

    # The reference runs alongside each killed KB, over the same server state.
    return user, base, env, step2


def _sync_until_done(kb: Path, env: dict[str, str]) -> None:
    r = grex_cli(kb, "sync", "--no-later", env=env)
    assert r.returncode == 0, r.stderr


def test_sigkill_anywhere_then_rerun_equals_uninterrupted(kill_scenario):
    user, base, env, step2 = kill_scenario
    first = write_accounts(base / "first", [user.account()])
    _sync_until_done(first, env)  # history step 1, uninterrupted
    kbs = {p: base / p.replace(":", "_") for p in ["reference", *KILL_POINTS]}
    for kb in kbs.values():  # every KB starts from the same step-1 state
        shutil.copytree(first, kb)
    step2()
    _sync_until_done(kbs["reference"], env)
    want = kb_state(kbs["reference"])
    assert len(want["messages"]) > 30  # type: ignore[arg-type]
    assert want != kb_state(first)
    for point in KILL_POINTS:
        kb = kbs[point]
        r = grex_cli(kb, "sync", "--no-later", env={**env, "GREX_TEST_KILL_AT": point})
        assert r.returncode == -9, f"{point}: not killed: {r.stdout} {r.stderr}"
        assert kb_state(kb) != want, f"{point}: killed too late to prove anything"
        _sync_until_done(kb, env)
        assert kb_state(kb) == want, point
