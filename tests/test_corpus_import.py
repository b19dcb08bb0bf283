"""Every message of every corpus imports with no unhandled error.

What is quarantined must be something that is not a message: ground-truth files, notes,
tool outputs, an Outlook .msg, a headerless digest fragment. Real messages never are.
"""

from __future__ import annotations

import re

import pytest

from grex import store
from grex.ingest import importer
from tests.corpora import CORPORA, corpus

# files in the corpora that are not RFC 5322 messages, and why
NOT_MAIL = re.compile(
    r"(\.md|\.json|\.tsv|\.py|\.log|\.verify|notmuch-search-summary\.txt)$"  # notes, truth
    r"|expected-output/"  # notmuch's expected command output
    r"|enron-emailcoref-ner-train/"  # CoNLL annotation files
    r"|stackoverflow-ner/(train|dev)\.txt$|UPSTREAM_LICENSE$"  # CoNLL NER files, a licence
    r"|mailparser-testmails/mails/mail_outlook_1$"  # an Outlook .msg (OLE2)
    r"|cpython-email-testdata/messages/msg_19\.txt$"  # a digest body without headers
    r"|patchwork-testdata/fuzz/name-len\.mbox#\d+$"  # a fuzz case: no header survives
    r"|spamassassin-testdata/spam/bsmtpnull$"  # an empty batch-SMTP transcript
)

SETS = sorted(p.name for p in CORPORA.iterdir() if p.is_dir() and p.name != "tools") \
    if CORPORA else []


@pytest.mark.corpus
@pytest.mark.slow
@pytest.mark.parametrize("name", SETS or ["(absent)"])
def test_every_corpus_imports_cleanly(kb, conn, name: str) -> None:  # type: ignore[no-untyped-def]
    path = corpus(name)
    report = importer.import_messages(kb, conn, importer.scan([path]))
    assert report.seen == report.added + report.duplicates + report.unchanged + len(
        report.quarantined)
    wrongly = [f"{q.source}: {q.reason}" for q in report.quarantined
               if not NOT_MAIL.search(q.source)]
    assert wrongly == []
    c = store.counts(conn)
    assert c["messages"] == report.added
    assert c["threads"] >= 1 or report.added == 0  # enron holds annotations, not mail
    # every stored message can be read back from the catalog and its raw file
    for m in store.iter_messages(conn):
        assert m.date.tzinfo is not None
    again = importer.import_messages(kb, conn, importer.scan([path]))
    assert again.added == 0 and again.unchanged == report.seen - len(report.quarantined)
