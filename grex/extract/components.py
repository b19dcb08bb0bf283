"""grex's spaCy components: rules before the statistical NER, clean-up after it.

``grex_rules`` (before ``ner``) marks what rules know better than the model, so that NER
predicts around it: email addresses, URLs, phone numbers and ticket ids (regular
expressions), the people of the thread (their display names, first or last name alone when
only one person in the thread has it, names read from header lines in the text), the
organisations behind the thread's mail domains, and a shipped gazetteer of well-known places
and organisations. Per-text seeds travel in ``doc.user_data["grex_seeds"]`` (plain lists,
so they survive ``n_process`` workers).

The rules also take: a signature's company line (between its people and its street address)
as an ORG, also where it stands as a header display name; names before a legal form (Inc,
Corp, LLC, ...); capitalised words that spell a mail domain; initials signing a message.

``grex_post`` (after ``ner``) cuts entities at line breaks, strips greetings and sign-offs,
and drops weekday names, mail header words and lowercase junk. For organisations it also
drops acronyms the text uses as computer systems, common abbreviations (CEO, FYI, PDF, MW),
words of all-capital lines, departments named by their function, names inside attachment
markers and one-word names the text also writes in lowercase; it turns an ORG led by a
common given name into a PERSON, a name ending in an organisation word (Systems, Commission)
into an ORG, an unknown word in capitals into an ORG, facility names (Compressor Station,
Hub) into FAC, and a state code after a place ("Austin, TX") into a GPE. Organisations also
come from general mechanisms: capitalised runs ending in a head word ("Kestrel Valley
Electric"), one ORG sense per name per thread, the first word of an organisation's name
standing for it, abbreviations (bracketed, or the initials of an organisation of the
thread) and words in capitals after "at" / "from".

This module imports spaCy: import it only from inside the extraction functions.
""""""grex's spaCy components: rules before the statistical NER, clean-up after it.

``grex_rules`` (before ``ner``) marks what rules know better than the model, so that NER
predicts around it: email addresses, URLs, phone numbers and ticket ids (regular
expressions), the people of the thread (their display names, first or last name alone when
only one person in the thread has it, names read from header lines in the text), the
organisations behind the thread's mail domains, and a shipped gazetteer of well-known places
and organisations. Per-text seeds travel in ``doc.user_data["grex_seeds"]`` (plain lists,
so they survive ``n_process`` workers).

The rules also take: a signature's company line (between its people and its street address)
as an ORG, also where it stands as a header display name; names before a legal form (Inc,
Corp, LLC, ...); capitalised words that spell a mail domain; initials signing a message.

``grex_post`` (after ``ner``) cuts entities at line breaks, strips greetings and sign-offs,
and drops weekday names, mail header words and lowercase junk. For organisations it also
drops acronyms the text uses as computer systems, common abbreviations (CEO, FYI, PDF, MW),
words of all-capital lines, departments named by their function, names inside attachment
markers and one-word names the text also writes in lowercase; it turns an ORG led by a
common given name into a PERSON, a name ending in an organisation word (Systems, Commission)
into an ORG, an unknown word in capitals into an ORG, facility names (Compressor Station,
Hub) into FAC, and a state code after a place ("Austin, TX") into a GPE. Organisations also
come from general mechanisms: capitalised runs ending in a head word ("Kestrel Valley
Electric"), one ORG sense per name per thread, the first word of an organisation's name
standing for it, abbreviations (bracketed, or the initials of an organisation of the
thread) and words in capitals after "at" / "from".

This module imports spaCy: import it only from inside the extraction functions.
"""

from __future__ import annotations

from spacy.language import Language

from grex.extract.post import GrexPost
from grex.extract.rules import GrexRules


@Language.factory("grex_rules", default_config={"gazetteer": True})
def make_rules(nlp: Language, name: str, gazetteer: bool) -> GrexRules:
    return GrexRules(nlp, gazetteer=gazetteer)


@Language.factory("grex_post")
def make_post(nlp: Language, name: str) -> GrexPost:
    return GrexPost()


