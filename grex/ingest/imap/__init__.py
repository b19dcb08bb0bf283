"""IMAP sync of the threads people choose to share.

    accounts (grex.toml) -> connect() -> select() -> plan -> fetch_raw() -> save_batch() -> store

How it decides what comes in (per account, over the folders matching its glob patterns):

* seeds: messages carrying ``share_keyword`` and matching ``search`` (either may be empty;
  both empty chooses whole folders). On Gmail (X-GM-EXT-1) the keyword is a Gmail label,
  searched with X-GM-LABELS.
* with ``whole_thread``, every message in the configured folders connected to a seed by
  Message-ID / In-Reply-To / References comes too. The server does the finding (UID THREAD
  REFERENCES for the seed's own folder where advertised, then HEADER searches for the
  thread's ids in every folder, repeated until nothing new turns up); grex checks each
  candidate's headers itself, because servers' substring HEADER matches and subject
  merging in THREAD=REFERENCES are looser than grex's threading. On Gmail, X-GM-THRID.
* a message that is no longer chosen (keyword removed, deleted on the server, folder gone)
  leaves the KB when ``on_unshare = "remove"`` (store.remove_location: the message goes
  when no other copy, from any account or import, remains); ``keep`` leaves it.

Incremental: per folder the KB keeps UIDVALIDITY, UIDNEXT, MESSAGES and HIGHESTMODSEQ
(CONDSTORE) from the last sync. A folder whose STATUS is unchanged is not even selected,
so a no-change re-sync is one STATUS per folder. A changed folder is re-selected (searches
are cheap on the server); only UIDs not yet in the KB are fetched (BODY.PEEK[], never sets
\\Seen, 500 per command). After a UIDVALIDITY change, messages are matched again by
Message-ID, so nothing is fetched twice, duplicated or lost.

Durability: each fetched batch is saved with store.add_messages and its UID rows in the
same commit; removals come after all fetches (a message moved between two configured
folders never leaves the KB), and the folder's state is written last. A kill at any point
leaves a state that the next run completes exactly. Dropped connections and server
restarts are retried with backoff; the run then resumes from what was saved.

Test seam: ``GREX_TEST_KILL_AT=POINT[:N]`` SIGKILLs the process at the N-th time it passes
POINT (fetched, saved, removed, state); see ``KILL_POINTS``.

Modules: ``state`` (the sync tables, reports, the test seam), ``client`` (TLS, login,
transient errors), ``select`` (which UIDs are shared: keywords, folders, Gmail labels and
whole-thread completion), ``fetch`` (fetching, parsing, saving a batch), ``unshare``
(removals), ``account`` (one account's run, ``sync`` over all, ``why``).
"""

from grex.errors import ConnectError
from grex.ingest.imap.account import ensure_schema, sync, sync_account, why
from grex.ingest.imap.client import connect, tls_context
from grex.ingest.imap.fetch import PARALLEL_MIN, fetch_raw, location_source, save_batch
from grex.ingest.imap.select import (
    Header,
    fetch_headers,
    gmail_thread_criteria,
    is_whole_folder,
    resolve_folders,
    seed_criteria,
    selection_fingerprint,
    thread_criteria,
)
from grex.ingest.imap.state import (
    FETCH_BATCH,
    HEADER_BATCH,
    KILL_POINTS,
    MAX_ATTEMPTS,
    SCHEMA,
    SEARCH_IDS_PER_COMMAND,
    AccountReport,
    PlanItem,
    Progress,
    SyncReport,
    WhyEntry,
    WhyReport,
)
from grex.ingest.imap.unshare import apply_removals

__all__ = [
    "AccountReport", "ConnectError", "FETCH_BATCH", "HEADER_BATCH", "Header", "KILL_POINTS",
    "MAX_ATTEMPTS", "PARALLEL_MIN", "PlanItem", "Progress", "SCHEMA", "SEARCH_IDS_PER_COMMAND",
    "SyncReport", "WhyEntry", "WhyReport", "apply_removals", "connect", "ensure_schema",
    "fetch_headers", "fetch_raw", "gmail_thread_criteria", "is_whole_folder", "location_source",
    "resolve_folders", "save_batch", "seed_criteria", "selection_fingerprint", "sync",
    "sync_account", "thread_criteria", "tls_context", "why",
]
