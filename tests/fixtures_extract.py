"""Fixtures for extraction: the real spaCy model (loaded once) and a small KB of known mail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from grex import ingest, store
from grex.ingest.parse import parse_message
from grex.models import Location, RawMessage
from tests.corpora import corpus

BASE = datetime(2024, 3, 4, 9, 0, tzinfo=UTC)


def corpus_or_skip(name: str) -> Path:
    """The corpora folder holding ``name`` (skips the test when the corpora are absent)."""
    return corpus(name).parent


def mail(n: int, subject: str, body: str, sender: str, to: str, cc: str = "",
         reply_to: str = "") -> bytes:
    m = EmailMessage()
    m["Subject"] = subject
    m["From"] = sender
    m["To"] = to
    if cc:
        m["Cc"] = cc
    m["Date"] = format_datetime(BASE + timedelta(hours=n))
    m["Message-ID"] = f"<m{n}@fixture.example>"
    if reply_to:
        m["In-Reply-To"] = f"<{reply_to}>"
        m["References"] = f"<{reply_to}>"
    m.set_content(body)
    return bytes(m)


KERRY = "Kerry McGuire <kerry.mcguire@acme-widgets.com>"
RAJ = "Raj Patel <raj.patel@acme-widgets.com>"
LENA = "Lena Fischer <lena.fischer@acme-widgets.com>"

# Who knows what is known: Kerry writes about the database, Raj about the build pipeline,
# Lena about the office move; each also gets mail about the others' subjects.
FIXTURE_MAILS: list[dict[str, Any]] = [
    dict(subject="Postgres replication lag", sender=KERRY, to=RAJ, body=(
        "Hi Raj,\n\nThe Postgres replication lag on the reporting database reached 40 minutes "
        "last night. I moved the vacuum job and rebuilt the index on the orders table; the "
        "replication lag is back under a second. Ticket DB-4211 has the details.\n\n"
        "Thanks,\nKerry\n")),
    dict(subject="Re: Postgres replication lag", sender=RAJ, to=KERRY, reply=0, body=(
        "Thanks Kerry. Does the database failover still work with the new replication "
        "settings? I copied kerry.mcguire@acme-widgets.com on the runbook request.\n\nRaj\n\n"
        "> The Postgres replication lag on the reporting database\n")),
    dict(subject="Re: Postgres replication lag", sender=KERRY, to=RAJ, reply=1, body=(
        "Yes: I tested the database failover on Tuesday. The replica promoted in 12 seconds and "
        "the connection pool reconnected. Kerry McGuire will document the failover runbook "
        "on https://wiki.acme-widgets.com/db/failover .\n\nBest regards,\nKerry\n")),
    dict(subject="CI build pipeline is slow", sender=RAJ, to=LENA, cc=KERRY, body=(
        "Hello Lena,\n\nThe CI build pipeline takes 45 minutes since the Docker base image "
        "changed. I split the test stage into four parallel jobs and added a build cache; "
        "the pipeline now runs in 12 minutes. The build cache lives in our Amazon S3 bucket "
        "in Frankfurt.\n\nCheers,\nRaj Patel\nphone +1 (415) 555-0134\n")),
    dict(subject="Re: CI build pipeline is slow", sender=LENA, to=RAJ, reply=3, body=(
        "Great work Raj. Could the build pipeline also publish the Docker image?\n\nLena\n")),
    dict(subject="Re: CI build pipeline is slow", sender=RAJ, to=LENA, reply=4, body=(
        "Yes, the build pipeline now publishes the Docker image after the parallel test "
        "jobs pass; the build cache makes the image build take two minutes.\n\nRaj\n")),
    dict(subject="Office move to Berlin", sender=LENA, to=KERRY, cc=RAJ, body=(
        "Dear Kerry,\n\nThe office move to Berlin is planned for May. The movers from "
        "Schenker will pack the desks on Friday, and the new office lease is signed with "
        "Allianz. Please label your monitors for the office move.\n\nKind regards,\nLena\n")),
    dict(subject="Re: Office move to Berlin", sender=LENA, to=KERRY, reply=6, body=(
        "One more thing about the office move: the furniture delivery and the desk plan "
        "for the new office are ready; the office lease starts on 1 May.\n\nLena\n")),
    dict(subject="Database backup restore test", sender=KERRY, to=RAJ, body=(
        "Raj,\n\nThe monthly database backup restore test passed: the Postgres base backup "
        "restored in 20 minutes and the replication caught up.\n\nKerry\n")),
    dict(subject="Docker image size", sender=RAJ, to=KERRY, body=(
        "Kerry,\n\nThe Docker image for the build pipeline shrank to 300 MB after the build "
        "cache change; the pipeline pulls it in seconds now.\n\nRaj\n")),
]


def build_fixture_kb(path: Path, mails: list[dict[str, Any]] | None = None,
                     ) -> tuple[store.KB, Any]:
    kb = store.KB.init(path)
    conn = kb.connect()
    add_fixture_mails(kb, conn, mails or FIXTURE_MAILS)
    return kb, conn


def add_fixture_mails(kb: store.KB, conn: Any, mails: list[dict[str, Any]],
                      offset: int = 0) -> None:
    pairs = []
    for i, spec in enumerate(mails):
        n = offset + i
        reply = spec.get("reply")
        data = mail(n, spec["subject"], spec["body"], spec["sender"], spec["to"],
                    spec.get("cc", ""),
                    f"m{offset + reply}@fixture.example" if reply is not None else "")
        pairs.append((RawMessage(data, Location(f"file:/fixture/{n}.eml")),
                      parse_message(data)))
    ingest.add_messages(kb, conn, pairs)


@pytest.fixture(scope="session")
def nlp_model() -> Any:
    """The real extraction pipeline (en_core_web_sm), loaded once per test session."""
    from grex.extract.model import load_model

    return load_model()[0]


@pytest.fixture
def fixture_kb(tmp_path: Path) -> Any:
    kb, conn = build_fixture_kb(tmp_path / "kb")
    yield kb, conn
    conn.close()
