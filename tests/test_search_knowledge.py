"""Extraction results in the index (runs once grex.extract is merged; skipped before)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.corpora import corpus as corpus_path
from tests.fixtures_search import grex_process

pytestmark = [pytest.mark.nlp, pytest.mark.corpus, pytest.mark.slow]


def test_entities_and_topics_are_searchable_and_faceted(tmp_path: Path,
                                                        grex_cli: Any) -> None:
    pytest.importorskip("grex.extract", reason="the extraction stage is not in this build")
    maildir = corpus_path("notmuch-default", "maildir")
    kb = tmp_path / "kb"
    done = grex_process("--kb", str(kb), "import", str(maildir))  # extract, then index
    assert done.returncode == 0, done.stderr
    out = grex_cli(kb, "search", "--json", "--facet", "person", "--facet", "topic",
                   "--limit", "100", "*").json()
    people = {f["value"] for f in out["facets"]["person"]}
    assert "Carl Worth" in people or "Keith Packard" in people
    assert out["facets"]["topic"], "no thread got a topic"
    assert any(h["topics"] for h in out["hits"])
    topic = out["facets"]["topic"][0]["value"]
    first_word = topic.split()[0]
    hits = grex_cli(kb, "search", "--json", f"topic:{first_word}").json()
    assert hits["total"] >= 1
    person = sorted(people)[0]
    assert grex_cli(kb, "search", "--json", f'person:"{person}"').json()["total"] >= 1
