"""grex's entity rules one by one, on small made-up texts, with the real model.

Each case is one the plain model gets wrong (checked in the test where NER decides, so the
test fails if the rule goes); cases of the clean-up that NER output can't reliably provoke
set the entities by hand and run ``grex_post`` on them.
"""

from __future__ import annotations

import pytest

from grex.extract.analyze import analyze_text
from grex.extract.records import Seeds

pytestmark = pytest.mark.nlp


def _ents(nlp, text: str, seeds: Seeds | None = None) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return {(e.text, e.label) for e in analyze_text(nlp, text, seeds).entities}


@pytest.fixture(scope="module")
def plain():  # type: ignore[no-untyped-def]
    from grex.extract.model import load_model

    return load_model(rules=False)[0]


def _plain(plain, text: str) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return {(e.text, e.label_) for e in plain(text).ents}


SIGNATURE = ("From : Blue Heron Antiques < bheron@earthlink.net >\nTo : Kerry McGuire\n"
             "Subject : your lamp\nBlue Heron Antiques shipped your lamp.\n"
             "Dana Whitfield\nRoy Baxter\nBlue Heron Antiques\n"
             "214 West 9th Street New York , NY 10011\n")


def test_signature_company_line_is_an_org_even_as_a_header_name(nlp_model, plain) -> None:  # type: ignore[no-untyped-def]
    ents = _ents(nlp_model, SIGNATURE)
    assert ("Blue Heron Antiques", "ORG") in ents
    assert not any(label == "PERSON" and "Heron" in text for text, label in ents)
    assert ("Dana Whitfield", "PERSON") in ents and ("Roy Baxter", "PERSON") in ents
    # a person's home address has no company line above it: the name stays a person
    home = "Thanks,\nKerry McGuire\n12 Elm Street Springfield\n"
    assert ("Kerry McGuire", "PERSON") in _ents(nlp_model, home)
    # nor is a job title or a second person above the address a company
    from grex.extract.names import signature_orgs

    assert signature_orgs("Kerry McGuire\nSenior Buyer\n12 Elm Street Springfield\n") == []
    assert signature_orgs("Dana Whitfield\nKerry McGuire\n12 Elm Street Springfield\n",
                          frozenset({"Kerry"})) == []


def test_acronyms_used_as_systems_are_not_organisations(nlp_model, plain) -> None:  # type: ignore[no-untyped-def]
    text = ("Please enter the volumes into ZMS by noon.\n"
            "The ZMS system is down, and the QRT tab is empty.\n")
    assert ("ZMS", "ORG") in _plain(plain, text)
    ents = _ents(nlp_model, text)
    assert not {t for t, label in ents if label == "ORG"} & {"ZMS", "QRT"}
    # an acronym that is no system stays an organisation
    assert ("FERC", "ORG") in _ents(nlp_model, "FERC approved the tariff on Monday.")


def test_facility_heads_make_a_place(nlp_model, plain) -> None:  # type: ignore[no-untyped-def]
    text = "The Walden Compressor Station Electric Agreement was signed."
    assert not any(label == "FAC" for _, label in _plain(plain, text))
    assert any(label == "FAC" and "Walden Compressor Station" in t
               for t, label in _ents(nlp_model, text))


def test_state_code_after_a_city_is_a_place(nlp_model, plain) -> None:  # type: ignore[no-untyped-def]
    text = "Trip to Houston , TX , meeting at the client."
    assert ("TX", "ORG") in _plain(plain, text)
    assert ("TX", "GPE") in _ents(nlp_model, text)


def test_initials_above_the_quoted_message_sign_it(nlp_model) -> None:  # type: ignore[no-untyped-def]
    text = "Looks good to me.\nRK\nOriginal Message\nFrom : Kerry McGuire\n"
    assert ("RK", "PERSON") in _ents(nlp_model, text)
    assert ("OK", "PERSON") not in _ents(nlp_model, text.replace("RK", "OK"))


def test_attachment_names_abbreviations_and_shouting_are_not_orgs(nlp_model, plain) -> None:  # type: ignore[no-untyped-def]
    cases = ["See the numbers.\n<< File : FERC summary Aug2001.xls >>\n",
             "Send it to the CEO by EOD, FYI.",
             "ANY PERSON WHO OWNS A FIREARM SHALL REGISTER IT WITH THE SHERIFF.",
             "I will handle this request from the Planning side."]
    for text in cases:
        assert any(label == "ORG" for _, label in _plain(plain, text)), text
        assert not any(label == "ORG" for _, label in _ents(nlp_model, text)), text


def test_names_spelling_a_mail_domain_and_org_heads(nlp_model, plain) -> None:  # type: ignore[no-untyped-def]
    text = "The Blue Heron team agreed to the price."
    seeds = Seeds(addresses=("dana@blueheron.com",))
    assert ("Blue Heron", "ORG") in _ents(nlp_model, text, seeds)
    assert ("Blue Heron", "ORG") not in _ents(nlp_model, text)
    text = "Jamie Hanrahan, Kernel Mode Systems"
    assert ("Kernel Mode Systems", "PERSON") in _plain(plain, text)
    assert ("Kernel Mode Systems", "ORG") in _ents(nlp_model, text)


def test_a_year_before_an_acronym_is_no_count(nlp_model, plain) -> None:  # type: ignore[no-untyped-def]
    text = "Subject : August 2001 FERC California Report"
    ents = _ents(nlp_model, text)
    assert ("FERC", "ORG") in ents and ("California", "GPE") in ents
    assert ("1400 MT", "ORG") not in _ents(nlp_model, "Meet at 1400 MT today.")


def _post(nlp, text: str, ents: list[tuple[int, int, str]]) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    from spacy.tokens import Span

    doc = nlp.make_doc(text)
    doc.ents = [Span(doc, s, e, label=lab) for s, e, lab in ents]
    doc = nlp.get_pipe("grex_post")(doc)
    return {(e.text, e.label_) for e in doc.ents}


def test_post_joins_of_and_reads_given_names(nlp_model) -> None:  # type: ignore[no-untyped-def]
    # tokens: The(0) Public(1) Utility(2) Commission(3) of(4) Texas(5) ruled(6) .(7)
    assert _post(nlp_model, "The Public Utility Commission of Texas ruled.",
                 [(1, 5, "ORG"), (5, 6, "GPE")]) == {
        ("Public Utility Commission of Texas", "ORG")}
    # help(0) from(1) Dana(2) Whitfield(3) on(4) it(5)
    assert _post(nlp_model, "help from Dana Whitfield on it", [(2, 4, "ORG")]) == {
        ("Dana Whitfield", "PERSON")}
    # an organisation word keeps it an organisation
    assert _post(nlp_model, "help from Dana Whitfield Partners", [(2, 5, "ORG")]) == {
        ("Dana Whitfield Partners", "ORG")}


def test_post_one_word_orgs_take_the_sense_of_the_text(nlp_model) -> None:  # type: ignore[no-untyped-def]
    # Modem(0) ships(1) today(2) ;(3) the(4) modem(5) is(6) fast(7)
    assert _post(nlp_model, "Modem ships today; the modem is fast", [(0, 1, "ORG")]) == set()
    # Jim(0) Berryhill(1) called(2) ;(3) Berryhill(4) agreed(5)
    assert _post(nlp_model, "Jim Berryhill called; Berryhill agreed",
                 [(0, 2, "PERSON"), (4, 5, "ORG")]) == {
        ("Jim Berryhill", "PERSON"), ("Berryhill", "PERSON")}
    # an address is not prose: "@initech.com" doesn't make Initech a common noun
    assert _post(nlp_model, "Initech said no (bill@initech.com)", [(0, 1, "ORG")]) == {
        ("Initech", "ORG")}


def test_post_unknown_capitals_are_acronyms_not_people_or_places(nlp_model) -> None:  # type: ignore[no-untyped-def]
    # ask(0) NOVA(1) or(2) ESBI(3) and(4) JOHN(5)
    assert _post(nlp_model, "ask NOVA or ESBI and JOHN",
                 [(1, 2, "GPE"), (3, 4, "PERSON"), (5, 6, "PERSON")]) == {
        ("NOVA", "ORG"), ("ESBI", "ORG"), ("JOHN", "PERSON")}


def test_dotted_abbreviations_stay_names(nlp_model, plain) -> None:  # type: ignore[no-untyped-def]
    """"U.S." is a word for the clean-up (it used to be dropped: no letters-only token)."""
    text = "The pipeline from Canada to the U.S. was approved. Exports to the U.S.A. grew."
    assert ("U.S.", "GPE") in _plain(plain, text)
    ents = _ents(nlp_model, text)
    assert {("U.S.", "GPE"), ("U.S.A.", "GPE")} <= ents


# -- organisations by general mechanisms (heads, one sense, short names, abbreviations,
# -- acronyms in context): made-up names, none from any evaluation set


def test_capitalised_run_ending_in_an_organisation_head_is_an_org(nlp_model, plain) -> None:  # type: ignore[no-untyped-def]
    text = "please send the gas numbers for Brackett Basin Pipeline and Corsair Gas Exchange"
    assert ("Brackett Basin Pipeline and", "FAC") in _plain(plain, text)
    ents = _ents(nlp_model, text)
    assert ("Brackett Basin Pipeline", "ORG") in ents
    assert ("Corsair Gas Exchange", "ORG") in ents
    text = "Welcome Harlan Springs Utilities and Lindell Group to the call"
    assert not any("Harlan" in t for t, _ in _plain(plain, text))
    assert ("Harlan Springs Utilities", "ORG") in _ents(nlp_model, text)  # not "Welcome ..."
    # only generic words before the head: a department, not a name
    # please(0) ask(1) the(2) Risk(3) Management(4) Group(5) and(6) Public(7) Service(8)
    assert _post(nlp_model, "please ask the Risk Management Group and Public Service", []) \
        == set()
    # two organisations joined by "&" after an acronym stay two
    # between(0) TWX(1) &(2) Kestrel(3) Valley(4) Pipeline(5)
    assert _post(nlp_model, "between TWX & Kestrel Valley Pipeline", [(1, 2, "ORG")]) == {
        ("TWX", "ORG"), ("Kestrel Valley Pipeline", "ORG")}


def test_a_name_mostly_tagged_org_in_a_thread_is_an_org_throughout(nlp_model) -> None:  # type: ignore[no-untyped-def]
    # Corvane(0) called(1) .(2) Corvane(3) signed(4) .(5) Corvane(6) paid(7) .(8)
    text = "Corvane called. Corvane signed. Corvane paid."
    assert _post(nlp_model, text, [(0, 1, "ORG"), (3, 4, "ORG"), (6, 7, "PERSON")]) == {
        ("Corvane", "ORG")}
    # no majority: nothing changes; a majority of another type changes nothing either
    assert ("Corvane", "PERSON") in _post(nlp_model, text, [(0, 1, "ORG"), (6, 7, "PERSON")])
    assert ("Corvane", "ORG") in _post(nlp_model, text, [(0, 1, "PERSON"), (3, 4, "PERSON"),
                                                         (6, 7, "ORG")])


def test_first_word_of_an_organisation_stands_for_it(nlp_model, plain) -> None:  # type: ignore[no-untyped-def]
    text = ("Ordway signed the deal for Ordway Energy. Ordway Energy will pay. "
            "Ordway wants the gas at Ordway Energy's meter.")
    assert ("Ordway", "PERSON") in _plain(plain, text)
    ents = _ents(nlp_model, text)
    assert ("Ordway", "ORG") in ents and ("Ordway", "PERSON") not in ents
    # not when the word is a person's in the thread, or a common word the text writes
    # Dana(0) Ordway(1) runs(2) Ordway(3) Energy(4) ;(5) Ordway(6) called(7)
    assert ("Ordway", "PERSON") in _post(nlp_model, "Dana Ordway runs Ordway Energy; Ordway "
                                         "called", [(0, 2, "PERSON"), (3, 5, "ORG"),
                                                    (6, 7, "PERSON")])
    # Mouse(0) Systems(1) sells(2) ;(3) the(4) mouse(5) and(6) Mouse(7) work(8)
    assert ("Mouse", "ORG") not in _post(nlp_model, "Mouse Systems sells; the mouse and Mouse "
                                         "work", [(0, 2, "ORG")])


def test_abbreviations_of_the_threads_organisations(nlp_model, plain) -> None:  # type: ignore[no-untyped-def]
    text = ("Our deal with Calloway Northern Transmission Company is done. "
            "Thanks CNTC for the help. CNTC said yes.")
    assert ("CNTC", "ORG") not in _plain(plain, text)
    assert ("CNTC", "ORG") in _ents(nlp_model, text)
    # bracketed: the(0) Ostrander(1) Gathering(2) Authority(3) ((4) OGA(5) )(6) met(7) ;(8)
    # ask(9) OGA(10)
    assert _post(nlp_model, "the Ostrander Gathering Authority (OGA) met; ask OGA",
                 [(1, 4, "ORG")]) == {("Ostrander Gathering Authority", "ORG"), ("OGA", "ORG")}
    # nor does a state code: the(0) Tamsin(1) Xylo(2) Company(3) ((4) TX(5) )(6) met(7)
    assert _post(nlp_model, "the Tamsin Xylo Company (TX) met", [(1, 4, "ORG")]) == {
        ("Tamsin Xylo Company", "ORG")}


def test_acronym_after_at_or_from_is_an_org(nlp_model, plain) -> None:  # type: ignore[no-untyped-def]
    text = "got the numbers from PLXT"
    assert not _plain(plain, text)
    assert ("PLXT", "ORG") in _ents(nlp_model, text)
    # units, time zones, common abbreviations and shouted lines are not
    assert not {t for t, label in _ents(nlp_model, "the call at CST, copied from PDF")
                if label == "ORG"}
    assert _post(nlp_model, "GET IT FROM ZXQR NOW PLEASE", []) == set()


def test_more_document_heads_and_jargon_abbreviations_are_not_orgs(nlp_model, plain) -> None:  # type: ignore[no-untyped-def]
    text = "Please review the Kestrel Storage Tariff before Friday."
    assert ("the Kestrel Storage Tariff", "ORG") in _plain(plain, text)
    assert not {t for t, label in _ents(nlp_model, text) if label == "ORG"}
    text = "The OTC volumes and the LDC demand rose."
    assert ("LDC", "ORG") in _plain(plain, text)
    assert not {t for t, label in _ents(nlp_model, text) if label == "ORG"}
