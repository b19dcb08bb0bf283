"""The NLP pass on its own: real model, offsets, rules, what is not an entity."""

from __future__ import annotations

import pytest

from grex.extract.analyze import analyze_text, truncate
from grex.extract.readers import analysis_json
from grex.extract.records import Seeds

pytestmark = pytest.mark.nlp

TEXT = ("Hi Kerry,\n\nThanks for Friday. Please send the Acme contract to Dana Whitfield in "
        "Houston by Monday; the ticket is OPS-1234 and the draft is on "
        "https://wiki.example.org/contracts/acme. Call me on (713) 853-1431 or mail "
        "dana.whitfield@acme.com.\n\nBest regards,\nKerry McGuire\nSenior Buyer\n")


def test_offsets_point_into_the_text_exactly_as_given(nlp_model) -> None:
    a = analyze_text(nlp_model, TEXT)
    assert a.entities
    for e in a.entities:
        assert TEXT[e.start:e.end] == e.text
    labels = {(e.text, e.label) for e in a.entities}
    assert ("OPS-1234", "TICKET") in labels
    assert ("https://wiki.example.org/contracts/acme", "URL") in labels
    assert ("(713) 853-1431", "PHONE") in labels
    assert ("dana.whitfield@acme.com", "EMAIL") in labels
    assert ("Houston", "GPE") in labels


def test_greetings_signoffs_and_weekdays_are_not_entities(nlp_model) -> None:
    texts = {e.text for e in analyze_text(nlp_model, TEXT).entities}
    for word in ("Hi", "Hi Kerry", "Thanks", "Best regards", "Friday", "Monday", "Regards"):
        assert word not in texts


def test_header_names_seed_people_in_signatures(nlp_model) -> None:
    text = "Numbers attached.\n\nTeb\nSr. Analyst, Gas Logistics\n"
    plain = analyze_text(nlp_model, text)
    seeded = analyze_text(nlp_model, text, Seeds(names=("Lokey, Teb",),
                                                 addresses=("teb.lokey@enron.com",)))
    assert ("Teb", "PERSON") in {(e.text, e.label) for e in seeded.entities}
    assert ("Teb", "PERSON") not in {(e.text, e.label) for e in plain.entities}


def test_mail_domain_names_the_organisation(nlp_model) -> None:
    text = "The people at Initech said the numbers are final."
    seeded = analyze_text(nlp_model, text, Seeds(addresses=("bill@initech.com",)))
    assert ("Initech", "ORG") in {(e.text, e.label) for e in seeded.entities}


def test_long_text_is_truncated_and_says_so(nlp_model) -> None:
    text = "Kerry met Dana in Paris. " * 100
    a = analyze_text(nlp_model, text, max_chars=500)
    assert a.truncated and a.chars <= 500
    assert truncate("short", 10) == ("short", False)
    out = analysis_json(text, a)
    assert out["truncated"] is True
    assert all(text[e["start"]:e["end"]] == e["text"] for e in out["entities"])


def test_model_info_names_the_model(nlp_model) -> None:
    from grex.extract import model_info

    info = model_info()
    assert "core_web_sm" in info.name and info.version and info.path
    assert "ner" in info.pipeline and "parser" not in info.pipeline


def test_patches_are_not_read_as_prose(nlp_model) -> None:
    text = ("Carl, here is the fix for Keith Packard's report.\n\n"
            "diff --git a/lib/index.c b/lib/index.c\nindex 3a1b..9f2c 100644\n"
            "--- a/lib/index.c\n+++ b/lib/index.c\n@@ -10,3 +10,4 @@\n"
            "-    Syntax NULL Archive\n+    Maildir Syntax NULL\n\nThanks, Carl Worth\n")
    a = analyze_text(nlp_model, text)
    patch_start = text.index("diff --git")
    patch_end = text.index("\n\nThanks")
    assert not [e for e in a.entities if patch_start <= e.start < patch_end]
    assert ("Carl Worth", "PERSON") in {(e.text, e.label) for e in a.entities}
    for e in a.entities:
        assert text[e.start:e.end] == e.text


def test_money_keeps_its_currency_sign(nlp_model) -> None:
    text = "The budget review moves to Boston next week. Spend is $40,000 in total."
    money = [e.text for e in analyze_text(nlp_model, text).entities if e.label == "MONEY"]
    assert money == ["$40,000"]
