"""The foundation's commands, run as a user runs them."""

from __future__ import annotations

import json
import mailbox as stdlib_mailbox
import os
from pathlib import Path

import pytest

from grex.config import load_config
from grex.errors import ConfigError
from tests.corpora import corpus
from tests.fixtures_core import Mailbox, build_mail, run_grex


def test_init_writes_a_commented_config(tmp_path: Path, grex) -> None:  # type: ignore[no-untyped-def]
    kb = tmp_path / "newkb"
    r = grex("init", kb_path=kb)
    assert r.exit_code == 0, r.stderr
    text = (kb / "grex.toml").read_text()
    assert "[[accounts]]" in text and text.count("#") > 20
    assert (kb / "raw" / "cur").is_dir() and (kb / "catalog.sqlite").is_file()
    assert load_config(kb).nlp.model == "en_core_web_sm"


def test_import_maildir_mbox_and_eml_twice_adds_nothing(tmp_path: Path, grex,  # type: ignore[no-untyped-def]
                                                        mailbox: Mailbox) -> None:
    root = mailbox.deliver(subject="Acme outage", folder="Projects")
    mailbox.deliver(subject="Re: Acme outage", in_reply_to=root, references=[root])
    # a file outside cur/ and new/, as notmuch reads it
    (mailbox.path / "loose").mkdir()
    (mailbox.path / "loose" / "17:2,").write_bytes(build_mail(subject="loose one")[1])
    mbox_path = tmp_path / "takeout.mbox"
    mb = stdlib_mailbox.mbox(str(mbox_path))
    for i in range(3):
        mb.add(build_mail(subject=f"From the mbox {i}",
                          body=f"From here on, a line that needs quoting {i}.")[1])
    mb.close()
    eml_dir = tmp_path / "emls"
    eml_dir.mkdir()
    (eml_dir / "one.eml").write_bytes(build_mail(subject="an eml")[1])

    r = grex("import", "--json", str(mailbox.path), str(mbox_path), str(eml_dir))
    assert r.exit_code == 0, r.stderr
    first = r.json()
    assert first["added"] == 7 and first["quarantined"] == []
    again = grex("import", "--json", str(mailbox.path), str(mbox_path), str(eml_dir)).json()
    assert again["added"] == 0 and again["unchanged"] == 7

    threads = grex("threads", "--json").json()
    assert len(threads) == 6
    t = next(t for t in threads if t["subject"] == "Acme outage")
    assert set(t) >= {"thread_id", "subject", "message_ids", "first_date", "last_date",
                      "participants"}
    assert len(t["message_ids"]) == 2 and not any("<" in m for m in t["message_ids"])
    assert t["participants"][0] == {"name": "Kerry McGuire", "address": "kerry.mcguire@example.com"}
    body = next(t for t in threads if t["subject"] == "From the mbox 1")
    shown = grex("show", body["thread_id"], "--json").json()
    assert shown["messages"][0]["body"]["new"].startswith("From here on")  # >From unquoted


def test_show_lists_messages_in_reply_tree_order(grex, mailbox: Mailbox) -> None:  # type: ignore[no-untyped-def]
    a = mailbox.deliver(subject="tree")
    b = mailbox.deliver(subject="Re: tree", in_reply_to=a, references=[a])
    c = mailbox.deliver(subject="Re: tree", in_reply_to=a, references=[a])
    d = mailbox.deliver(subject="Re: tree", in_reply_to=b, references=[a, b])
    grex("import", str(mailbox.path))
    tid = grex("threads", "--json").json()[0]["thread_id"]
    shown = grex("show", tid, "--json").json()
    assert [(m["message_id"], m["depth"]) for m in shown["messages"]] == [
        (a, 0), (b, 1), (d, 2), (c, 1)]
    text = grex("show", tid[:8])  # a unique prefix works too
    assert text.exit_code == 0 and text.stdout.index(b) < text.stdout.index(d) < \
        text.stdout.index(c)


def test_errors_are_one_line_with_exit_codes(tmp_path: Path, grex) -> None:  # type: ignore[no-untyped-def]
    r = grex("threads", kb_path=tmp_path / "missing")
    assert r.exit_code == 1
    assert r.stderr.startswith("Error: no knowledge base at") and "Traceback" not in r.stderr
    assert grex("show", "no-such-thread").exit_code == 2  # a name naming nothing: usage
    assert grex("import", str(tmp_path / "nope")).exit_code == 66
    usage = grex("threads", "--sort", "sideways")
    assert usage.exit_code == 2


def test_invalid_config_field_is_named(kb, grex) -> None:  # type: ignore[no-untyped-def]
    kb.config_path.write_text('[[accounts]]\nname = "w"\nhost = "h"\nport = "many"\n')
    r = grex("sync") if False else grex("stats")
    assert r.exit_code == 78
    assert "accounts[0].port: expected an integer, got 'many'" in r.stderr
    kb.config_path.write_text('[nlp]\nmodle = "x"\n')
    assert "[nlp].modle: unknown field" in grex("stats").stderr


def test_config_precedence(kb, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    kb.config_path.write_text('[nlp]\nmodel = "from_file"\nbatch_size = 8\n')
    assert load_config(kb.path).nlp.model == "from_file"
    monkeypatch.setenv("GREX_NLP_MODEL", "from_env")
    cfg = load_config(kb.path)
    assert (cfg.nlp.model, cfg.nlp.batch_size) == ("from_env", 8)
    assert load_config(kb.path, {"nlp.model": "from_flag"}).nlp.model == "from_flag"


def test_passwords_never_come_from_the_file(kb) -> None:  # type: ignore[no-untyped-def]
    kb.config_path.write_text('[[accounts]]\nname = "w"\nhost = "h"\npassword = "hunter2"\n')
    with pytest.raises(ConfigError, match="passwords are never kept in the file"):
        load_config(kb.path)
    kb.config_path.write_text('[[accounts]]\nname = "w"\nhost = "imap.example.com"\n'
                              'tls = "none"\n')
    with pytest.raises(ConfigError, match="clear text"):
        load_config(kb.path)
    kb.config_path.write_text('[[accounts]]\nname = "w"\nhost = "h"\n'
                              'password_command = "printf s3cret"\n')
    acct = load_config(kb.path, env={}).accounts[0]
    assert acct.password(env={}) == "s3cret"
    assert acct.password(env={"GREX_IMAP_PASSWORD": "fromenv"}) == "fromenv"
    assert "s3cret" not in repr(acct) and "printf" not in repr(acct)


def test_kb_from_environment_and_python_m(tmp_path: Path, mailbox: Mailbox) -> None:
    mailbox.deliver(subject="via env")
    env = {"GREX_KB": str(tmp_path / "envkb")}
    r = run_grex("import", str(mailbox.path), env=env)
    assert r.returncode == 0, r.stderr
    out = run_grex("threads", "--json", env=env)
    assert json.loads(out.stdout)[0]["subject"] == "via env"
    assert "\x1b[" not in out.stdout  # no progress bars or colour when not a TTY


def test_default_kb_is_indexes_default_in_a_checkout(tmp_path: Path, mailbox: Mailbox) -> None:
    mailbox.deliver(subject="default place")
    env = {k: v for k, v in os.environ.items() if k != "GREX_KB"}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    checkout = tmp_path / "checkout"
    (checkout / "grex").mkdir(parents=True)
    (checkout / "grex" / "__init__.py").write_text("")  # not importable: PYTHONPATH wins
    (checkout / "indexes").mkdir()
    r = run_grex("import", "--no-later", str(mailbox.path), env=env, cwd=checkout / "indexes")
    assert r.returncode == 0, r.stderr
    assert (checkout / "indexes" / "default" / "catalog.sqlite").is_file()
    r = run_grex("import", "--no-later", str(mailbox.path), env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "data" / "grex" / "default" / "catalog.sqlite").is_file()


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    r = run_grex("--kb", str(tmp_path / "none"), "--debug", "threads")
    assert r.returncode != 0 and "Traceback" in r.stderr


@pytest.mark.corpus
def test_stats_json_counts_the_notmuch_corpus(grex) -> None:  # type: ignore[no-untyped-def]
    grex("import", str(corpus("notmuch-default", "maildir")))
    s = grex("stats", "--json").json()
    assert (s["messages"], s["threads"], s["locations"]) == (52, 24, 53)


def test_rebuild_restores_parsed_fields_from_the_raw_store(kb, grex, mailbox: Mailbox) -> None:  # type: ignore[no-untyped-def]
    root = mailbox.deliver(subject="Acme outage")
    reply = mailbox.deliver(subject="Re: Acme outage", in_reply_to=root, references=[root])
    grex("import", "--no-later", str(mailbox.path))
    before = grex("threads", "--json").json()
    conn = kb.connect()
    conn.execute("UPDATE messages SET subject = 'damaged', body_new = '' WHERE message_id = ?",
                 (reply,))
    conn.execute("DELETE FROM refs WHERE message_id = ?", (reply,))
    conn.close()
    r = grex("rebuild")
    assert r.exit_code == 0, r.stderr
    assert grex("threads", "--json").json() == before
    shown = grex("show", before[0]["thread_id"], "--json").json()
    assert [m["subject"] for m in shown["messages"]] == ["Acme outage", "Re: Acme outage"]
    assert shown["messages"][1]["body"]["new"] == "Just text."
