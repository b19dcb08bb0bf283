"""Index documents as pure functions of the catalog's data (no index, no KB)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from grex.models import Address, Attachment, Body, Message
from grex.search.documents import Knowledge, message_document, to_knowledge, validate_document
from grex.search.index import mime_flags
from grex.search.schema import make_schema


def _msg(**kw: object) -> Message:
    base: dict[str, object] = dict(
        message_id="m1@example.com", subject="Plan", sender=Address("Ana López", "ana@x.org"),
        to=(Address("Bo", "bo@y.org"),), cc=(), date=datetime(2024, 3, 4, 9, tzinfo=UTC),
        in_reply_to=(), references=(), body=Body(new="New words.", quoted="> old words",
                                                 signature="Ana"))
    base.update(kw)
    return Message(**base)  # type: ignore[arg-type]


def test_document_fields() -> None:
    doc = message_document(_msg(), thread_id="t1", folders=["INBOX", "INBOX"],
                           labels=["Work", "work"])
    assert doc["id"] == "m1@example.com" and doc["thread_id"] == "t1"
    assert doc["body"] == "New words." and "old words" in doc["quoted"]
    assert "Ana" in doc["quoted"]  # the signature is searchable, at quoted weight
    assert doc["from"] == "Ana López <ana@x.org>" and doc["to"] == "Bo <bo@y.org>"
    assert doc["date"] == datetime(2024, 3, 4, 9)  # naive UTC, as the index stores it
    assert doc["folder"] == "INBOX" and doc["label"] == "Work"
    assert "flag" not in doc and "cc" not in doc  # empty fields are left out
    assert doc["facets"]["from"] == ["Ana López"]
    validate_document(doc)


def test_attachments_and_flags() -> None:
    m = _msg(attachments=(Attachment("q1.pdf", "application/pdf", 10, "x"),
                          Attachment("signature.asc", "application/pgp-signature", 1, "y")),
             in_reply_to=("p@x",))
    doc = message_document(m, thread_id="t")
    assert set(doc["flag"].split(",")) == {"attachment", "signed", "reply"}
    assert doc["attachment"] == "q1.pdf\nsignature.asc"
    only_sig = _msg(attachments=(Attachment("s.asc", "application/pgp-signature", 1, "y"),))
    assert message_document(only_sig, thread_id="t")["flag"] == "signed"


def test_mime_flags_from_raw_part_headers() -> None:
    raw = (b"Content-Type: multipart/signed; protocol=\"application/pgp-signature\"\n\n"
           b"--b\nContent-Type: text/plain\n\nhi\n--b\nContent-Type: application/pgp-signature"
           b"\n\n--b--\n")
    assert mime_flags(raw) == ("signed",)
    assert mime_flags(b"Content-Type: multipart/encrypted; protocol=x\n\n") == ("encrypted",)
    assert mime_flags(b"Subject: about multipart/signed\n\nplain text") == ()
    doc = message_document(_msg(), thread_id="t", flags=mime_flags(raw))
    assert doc["flag"] == "signed"


def test_knowledge_from_the_extraction_stage_shape() -> None:
    found = {
        "entities": [{"text": "Ana López", "label": "PERSON", "count": 3},
                     {"text": "Acme Corp", "label": "ORG", "count": 1},
                     {"text": "Paris", "label": "GPE", "count": 1},
                     {"text": "Tuesday", "label": "DATE", "count": 1}],
        "keyphrases": ["release plan", "budget review"],
        "topics": [{"id": 3, "label": "budget / finance", "weight": 0.7}],
    }
    k = to_knowledge(found)
    assert k == Knowledge(persons=("Ana López",), orgs=("Acme Corp",), places=("Paris",),
                          keyphrases=("release plan", "budget review"),
                          topics=("budget / finance",))
    doc = message_document(_msg(), thread_id="t", knowledge=k)
    assert doc["person"] == "Ana López" and doc["org"] == "Acme Corp"
    assert doc["topics"] == ["budget / finance"]
    assert doc["facets"]["topic"] == ["budget / finance"]
    validate_document(doc)


def test_control_characters_are_cleaned() -> None:
    doc = message_document(_msg(subject="a\x00b", body=Body(new="x\x07y")), thread_id="t")
    assert doc["subject"] == "a b" and doc["body"] == "x y"


@pytest.mark.parametrize("bad", [{"id": "x", "thread_id": "t", "nope": "1"},
                                 {"id": "x", "thread_id": "t", "date": "2024"},
                                 {"id": "", "thread_id": "t"},
                                 {"id": "x", "thread_id": "t", "subject": 3}])
def test_validation_rejects_what_a_writer_would_choke_on(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        validate_document(bad)


def test_schema_pickles_without_the_stem_cache() -> None:
    import pickle

    from grex.search.schema import text_analyzer

    text_analyzer()  # fill nothing in particular
    list(text_analyzer()("running quickly"))
    data = pickle.dumps(make_schema())
    assert len(data) < 20_000 and b"quickly" not in data


def test_security_is_parsed_and_kept_and_old_rows_fall_back_to_the_raw(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The parser keeps signed/encrypted; a catalog row stored before it did (NULL) is
    still flagged, from its raw file."""
    from grex import store
    from grex.ingest import importer
    from grex.ingest.parse import parse_message
    from grex.search.index import _DocBuilder

    signed = (b"From: A <a@x.example>\nTo: b@x.example\nSubject: s\nMessage-ID: <s1@x>\n"
              b"Date: Mon, 4 Mar 2024 10:00:00 +0000\nMIME-Version: 1.0\n"
              b"Content-Type: multipart/signed; protocol=\"application/pgp-signature\"; "
              b"boundary=b\n\n--b\nContent-Type: text/plain\n\nhello\n--b\n"
              b"Content-Type: application/pgp-signature\n\nSIG\n--b--\n")
    plain = b"From: A <a@x.example>\nSubject: p\nMessage-ID: <p1@x>\n\nhello\n"
    assert parse_message(signed).security == ("signed",)
    assert parse_message(plain).security == ()
    (tmp_path / "mail").mkdir()
    (tmp_path / "mail" / "s.eml").write_bytes(signed)
    (tmp_path / "mail" / "p.eml").write_bytes(plain)
    kb = store.KB.init(tmp_path / "kb")
    conn = kb.connect()
    importer.import_messages(kb, conn, importer.scan([tmp_path / "mail"]))
    assert store.get_message(conn, "s1@x").security == ("signed",)
    build = _DocBuilder(kb, conn, None)
    assert build(store.get_message(conn, "s1@x"))["flag"] == "signed"
    assert "flag" not in build(store.get_message(conn, "p1@x"))
    with store.transaction(conn):
        conn.execute("UPDATE messages SET security_json = NULL")
    old = store.get_message(conn, "s1@x")
    assert old.security is None
    assert _DocBuilder(kb, conn, None)(old)["flag"] == "signed"
    conn.close()
