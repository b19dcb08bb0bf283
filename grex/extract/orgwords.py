"""Word lists the organisation clean-up reads (grex_post), kept apart from its logic."""

from __future__ import annotations

import re

_FILE_NAME = re.compile(r"\.\s?(?:docx?|xlsx?|pptx?|pdf|txt|zip|csv|jpe?g|png|gif|html?)\b",
                        re.IGNORECASE)
# Head nouns of documents, requests and meetings: an "organisation" ending in one of these is
# a title ("Operations & Maintenance Agreement", "Contract Review").
_DOCUMENT_HEADS = frozenset((
    "proposal", "proposals", "agreement", "agreements", "application", "applications",
    "request", "requests", "review", "reviews", "report", "reports", "update", "updates",
    "meeting", "meetings", "schedule", "schedules", "migration", "presentation", "memo",
    "draft", "plan", "plans", "training", "timeframes", "timeline", "letter", "letters",
    "contract", "contracts", "invoice", "invoices", "minutes", "agenda", "summary", "form",
    "forms", "spreadsheet", "checklist",
    # more of the same kinds, from general office usage
    "policy", "policies", "procedure", "procedures", "guidelines", "project", "projects",
    "conference", "call", "notice", "list", "lists", "database", "file", "files", "manual",
    "handbook", "newsletter", "announcement", "filing", "filings", "tariff", "tariffs",
    "workshop", "seminar", "session", "sessions", "survey", "study", "model", "models",
    "deal", "deals", "transaction", "transactions", "amendment", "amendments", "addendum",
    "confirmation", "confirmations", "statement", "statements", "worksheet", "template",
    "memorandum", "budget", "forecast", "lunch", "dinner", "party", "issue", "issues",
))
# Functions of a company: an "organisation" made only of these ("Marketing", "Gas Scheduling",
# "Legal and Regulatory Affairs") is a department named by its work, not an organisation's
# name.
_DEPARTMENT_WORDS = frozenset((
    "planning", "marketing", "logistics", "legal", "trading", "accounting", "finance",
    "financial", "operations", "sales", "engineering", "research", "risk", "treasury", "tax",
    "compliance", "audit", "hr", "origination", "structuring", "scheduling", "settlements",
    "credit", "contracts", "facilities", "regulatory", "affairs", "human", "resources",
    "information", "technology", "management", "development", "business", "gas", "power",
    "and", "&", "of", "the", "back", "front", "office", "middle", "group", "team", "desk",
    "department", "dept", "dept.", "unit", "services", "support", "administration",
    "communications", "public", "relations", "investor", "procurement", "purchasing",
    "strategy", "analysis", "analytics", "reporting", "security", "maintenance", "fac", "fac.",
))
# Words that make a name an organisation's even after a given name ("Mark Anthony Partners").
_ORG_WORDS = frozenset((
    "inc", "corp", "corporation", "co", "company", "llc", "llp", "lp", "ltd", "limited", "plc",
    "group", "partners", "associates", "energy", "services", "bank", "capital", "holdings",
    "brothers", "bros", "foundation", "university", "college", "institute", "fund", "trust",
    "international", "industries", "systems", "solutions", "technologies", "consulting",
    "resources", "power", "gas", "oil", "petroleum", "pipeline", "securities", "investments",
    "management", "media", "press", "news", "airlines", "motors", "labs", "school", "club",
))
# Abbreviations of titles, office jargon, file types, computing and units that NER calls
# ORG on their own ("the CEO", "the RAM", "FYI", "50 MW"): general knowledge, none of them
# names a particular organisation.
_COMMON_ABBREVIATIONS = (
    "CEO CFO COO CTO CIO CAO CCO VP SVP EVP AVP GM MD IT FYI ASAP TBD TBA ETA EOD COB YTD MTD "
    "QTD FAQ IMHO IMO BTW NB PS RSVP AKA NDA RFP RFQ ROI KPI EBITDA EPS IPO LOI MOU SOW GAAP "
    "PDF XLS DOC PPT CSV ZIP HTML XML SQL HTTP FTP URL API GUI CPU RAM ROM DOS OS LAN WAN VPN "
    "DSL USB CD DVD TV PC PDA GPS SMS ID PIN SSN ASCII SCSI IRQ DMA UART FIFO IDE BIOS GIF "
    "JPEG MW MWH GWH KW KWH BCF MCF MMCF BBL BPD MMBTU DTH "
    # trading and utility jargon, and office shorthand
    "OTC LDC LNG LPG NGL CNG BTU MDQ ROFR PPA MTM PNL VAR NPV IRR WACC EFP PO SLA QA QC ISP "
    "IM AM PM NA HQ RE FW FWD CC BCC"
)
_NOT_ORGS = frozenset(_COMMON_ABBREVIATIONS.split())
# Last words that make a name an organisation's, whatever NER called it.
_ORG_HEADS = frozenset((
    "inc", "corp", "corporation", "company", "co", "llc", "ltd", "limited", "plc", "group",
    "partners", "associates", "services", "systems", "energy", "bank", "capital", "holdings",
    "industries", "technologies", "securities", "airlines", "foundation", "institute",
    "university", "college", "commission", "council", "association", "authority", "agency",
    "board", "department", "ministry", "committee", "society", "union", "federation",
))
_STREET_WORDS = frozenset(("street", "st", "avenue", "ave", "boulevard", "blvd", "road", "rd",
                           "parkway", "pkwy", "drive", "dr", "lane", "ln", "highway", "hwy",
                           "plaza", "square", "freeway", "expressway", "box"))
_TIME_ZONES = frozenset((
    "UTC", "GMT", "BST", "CET", "CEST", "EET", "PST", "PDT", "MST", "MDT", "CST", "CDT",
    "EST", "EDT", "AST", "HST", "AKST", "AKDT", "IST", "JST", "AEST",
))
# Head words of plants and pipeline facilities: "Walden Compressor Station", "Henry Hub".
_FACILITY_WORDS = frozenset(("compressor", "station", "plant", "refinery", "terminal", "hub",
                             "substation"))
# Nouns that make the acronym before them a computer system, not an organisation:
# "the ZMS system", "ZMS training", "the QRT tab", "QRT and ZMS records".
_SYSTEM_NOUNS = frozenset((
    "system", "systems", "tab", "tabs", "record", "records", "database", "databases",
    "screen", "screens", "training", "software", "module", "modules", "login", "password",
    "interface",
))
_QUOTE_MARKS = re.compile(r"[>|]+")  # "> Thinking Machines Corp.": quoting, not the name
_ACRONYM = re.compile(r"(?<![\w.@/-])[A-Z]{2,6}(?![\w@-])")
# Verbs of data entry: "volumes entered into ZMS" is a system too.
_ENTRY_VERBS = frozenset((
    "input", "inputs", "enter", "enters", "entered", "entering", "key", "keyed", "load",
    "loaded", "upload", "uploaded", "import", "imported", "post", "posted",
))
_STATE_CODES = (
    "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV "
    "NH NJ NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY")
_US_STATES = frozenset(_STATE_CODES.split())
# -- organisations by general mechanisms (heads, abbreviations, contexts, one sense) --------
# Head words that end an organisation's name: a run of capitalised words ending in one of
# these is an organisation when at least one of its other words is not a generic word
# ("Southwestern Public Service", "Kestrel Valley Electric", but not "Risk Management Group").
_RUN_HEADS = _ORG_HEADS - {"systems", "department", "board", "union", "society", "group"} | {
    "exchange", "commission", "committee", "pipeline", "transmission", "utilities", "electric",
    "service", "trust", "fund", "bureau", "coalition", "consortium", "cooperative", "partnership",
    "laboratory", "laboratories", "railroad", "railway", "airways", "insurance", "bancorp",
}
# Generic words that don't make a run a name on their own ("Public Service", "Natural Gas").
_GENERIC_RUN_WORDS = _DEPARTMENT_WORDS | _ORG_WORDS | _RUN_HEADS | {
    "national", "federal", "state", "city", "county", "general", "united", "american",
    "natural", "electric", "public", "private", "new", "first", "central", "global", "world",
    "executive", "advisory", "steering", "standing", "special", "joint", "our", "your", "my",
    "this", "that", "these", "a", "an", "all", "every", "each", "customer", "employee", "staff",
    "energy", "utility", "utilities", "transmission", "pipeline", "water", "oil", "electricity",
    "north", "south", "east", "west", "northern", "southern", "eastern", "western", "pacific",
    "atlantic", "gulf", "mid", "great", "royal", "international", "continental",
}
# Words that start a sentence before a name rather than belong to it ("Welcome Harlan
# Utilities", "Called Tremont Holdings"): greetings, and the verbs of mail.
_LEAD_VERBS = frozenset((
    "welcome", "call", "called", "ask", "asked", "tell", "told", "send", "sent", "see", "saw",
    "contact", "contacted", "email", "emailed", "phone", "phoned", "meet", "met", "visit",
    "visited", "per", "via", "attached", "re", "cc", "to", "from", "for", "with", "at", "by",
))
# Prepositions after which a word in capitals is an organisation ("works at JPL", "a man
# from NASA"): measured on 20news, these two mostly precede an organisation; with, for, of,
# to mostly precede a product or a unit.
_ORG_CONTEXT = frozenset(("at", "from"))

_RUN_HEADS_RE = re.compile(r"\b(?:" + "|".join(sorted(w.title() for w in _RUN_HEADS))
                           + r")\b")
_SENSE_LABELS = frozenset(("ORG", "PERSON", "GPE", "LOC", "FAC", "PRODUCT", "NORP"))
_CONTEXT_ACRONYM = re.compile(r"(?<![\w.@/-])(at|from)[ \t]+([A-Z]{2,6})(?![\w@&.'-])")


