"""Quality floors on the shared corpora, a little under what scripts/eval_nlp.py measures.

Skipped when ../shared/corpora is absent. Measured (scripts/eval_nlp.py, all 36 threads):
PER P 0.943 R 0.932 F1 0.937; ORG F1 0.520; LOC F1 0.587 (plain en_core_web_sm: PER P 0.941
F1 0.841, ORG 0.368, LOC 0.291). Topics: NMI 0.553 on the seed-42 sample (NMF(20) 0.43).
"""

from __future__ import annotations

import pytest

from grex.extract.analyze import analyze_text
from grex.extract.evaluation import load_20news_sample, load_enron, score_entities
from tests.fixtures_extract import corpus_or_skip, nlp_model  # noqa: F401

pytestmark = [pytest.mark.nlp, pytest.mark.corpus]


@pytest.fixture(scope="module")
def entity_scores(nlp_model):  # type: ignore[no-untyped-def]  # noqa: F811
    docs = load_enron(corpus_or_skip("enron-emailcoref-ner-train"))
    return score_entities(docs, lambda text: [(e.start, e.end, e.label) for e in
                                              analyze_text(nlp_model, text).entities])


def test_person_floor_without_losing_precision(entity_scores) -> None:  # type: ignore[no-untyped-def]
    per = entity_scores["PER"]
    assert per.f1 >= 0.92
    assert per.precision >= 0.93  # plain en_core_web_sm: 0.941


def test_org_and_loc_floors(entity_scores) -> None:  # type: ignore[no-untyped-def]
    assert entity_scores["ORG"].f1 >= 0.50
    assert entity_scores["LOC"].f1 >= 0.55


@pytest.mark.slow
def test_topic_nmi_floor() -> None:
    from sklearn.metrics import normalized_mutual_info_score

    from grex.extract import topics
    from grex.parse import parse_message

    rows = load_20news_sample(corpus_or_skip("20news-bydate-train"), 2000, 42)
    docs = []
    for _, _, data in rows:
        m = parse_message(data)
        docs.append(f"{m.subject}\n{m.body.new}")
    model = topics.fit(docs, k=20)
    strongest = [a[0][0] if a else -1 for a in model.assign(docs)]
    assert normalized_mutual_info_score([g for _, g, _ in rows], strongest) >= 0.52
