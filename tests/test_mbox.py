"""mbox splitting: a separator is a From_ line by its full shape, not any "From " line."""

from __future__ import annotations

import csv
from pathlib import Path

from grex.ingest import importer
from tests.corpora import corpus, requires_corpora


def _mail(n: int, body: str = "text") -> bytes:
    return (f"From: a{n}@example.org\nSubject: message {n}\nMessage-ID: <m{n}@example.org>\n"
            f"\n{body}\n").encode()


def split(tmp_path: Path, data: bytes) -> list[bytes]:
    path = tmp_path / "box.mbox"
    path.write_bytes(data)
    got = [m for _, m in importer.iter_mbox(path)]
    with path.open("rb") as f:
        assert sum(1 for _ in importer.iter_mbox_starts(f)) == len(got)  # progress total
    return got


def test_separators_without_a_blank_line_before_them(tmp_path: Path) -> None:
    # MimeKit's and gmime's mboxes: the next From_ line follows the body directly
    data = b"".join(b"From sender@example.org Mon Mar  4 10:0%d:00 2024\n" % i + _mail(i)
                    for i in range(5))
    got = split(tmp_path, data)
    assert len(got) == 5
    assert [b"Subject: message %d" % i in m for i, m in enumerate(got)] == [True] * 5
    assert all(b"From sender" not in m for m in got)


def test_unescaped_from_in_a_pipermail_body_stays_body_text(tmp_path: Path) -> None:
    data = (b"From ana at example.org  Fri Mar  6 18:33:38 2009\n" + _mail(0, "Hello.\n\n"
            "From debugging I see that the pointer is filled.\n\nAny ideas?") +
            b"\nFrom bo at example.net  Sun Mar 15 17:21:58 2009\n" + _mail(1))
    got = split(tmp_path, data)
    assert len(got) == 2
    assert b"From debugging I see that the pointer is filled." in got[0]
    assert b"Any ideas?" in got[0]


def test_a_bom_before_the_first_from_line(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbfFrom x@example.org Tue Mar  5 10:00:00 2024\n" + _mail(0) + \
        b"\nFrom y@example.org Tue Mar  5 11:00:00 2024\n" + _mail(1)
    assert importer._is_mbox(data[:1024])
    got = split(tmp_path, data)
    assert len(got) == 2 and got[0].startswith(b"From: a0@")


def test_mboxes_without_dates_keep_the_classic_rule(tmp_path: Path) -> None:
    # the first From_ line has no date: only "From " lines after a blank line separate
    data = b"From lib\n" + _mail(0, "Hi,\nFrom here on\nit is body") + b"\nFrom lib\n" + _mail(1)
    got = split(tmp_path, data)
    assert len(got) == 2 and b"From here on" in got[0]


@requires_corpora
def test_mapnik_devel_splits_into_the_archive_messages() -> None:
    """The pipermail archive's own index (messages.tsv) lists each message's From_ line."""
    folder = corpus("mapnik-devel")
    with (folder / "mapnik-devel.messages.tsv").open(newline="") as f:
        truth = [int(row["from_line"]) - 1 for row in csv.DictReader(f, delimiter="\t")]
    with (folder / "mapnik-devel.mbox").open("rb") as f:
        starts = list(importer.iter_mbox_starts(f))
    assert starts == truth
    assert len(truth) > 1000
