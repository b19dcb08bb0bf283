"""The store: the knowledge base on disk, and the only code that touches it.

Takes frozen records (``RawMessage``, ``Message``, computed threads) and saves them; gives
them back as the same records. It imports only ``grex.models``, ``grex.config`` and
``grex.errors``: no stage. Re-threading is the ingest stage's job (``grex.ingest.catalog``);
the store saves the threads it is given.

    KB/
      grex.toml        configuration (commented, written by `grex init`)
      raw/             every message's bytes as received: a Maildir (cur/ new/ tmp/) that
                       notmuch and mu can read; file names are the content hash
      catalog.sqlite   messages, locations (where each copy was seen), threads, sync state,
                       extraction results; WAL mode; per-component schema versions
      quarantine/      bytes of messages that could not be parsed, with the reason in the catalog
      index/           Whoosh index (derived: `grex reindex`)
      site/            exported HTML (derived)
      logs/            sync logs
      lock             the writer lock (fcntl); lock.json says who holds it

Durability: a message's raw file is written to raw/tmp, fsynced and renamed into raw/cur
(and the directory fsynced) before the catalog row that names it commits. A crash in between
leaves an orphan file that the next run adopts; nothing is lost or duplicated, because the
file name is the content hash and catalog inserts are keyed by Message-ID.

Derived stages follow the ``changes`` feed (seq, kind, key, op) from their own cursor and
move the cursor only after their own output is durable.

Modules: ``schema`` (migrations, transactions), ``kb`` (the directory and its lock), ``raw``
(the Maildir), ``rows`` (rows <-> models), ``messages`` (adding and removing copies),
``threads`` (saving computed threads), ``feed`` (the change feed), ``reading``.
"""

from grex.store.feed import (
    Change,
    changes_since,
    get_cursor,
    has_cursor,
    last_seq,
    log_change,
    prune_changes,
    set_cursor,
)
from grex.store.kb import KB
from grex.store.messages import (
    AddResult,
    Removed,
    delete_location,
    has_location,
    insert_messages,
    list_quarantine,
    quarantine,
    replace_parsed,
    unlink_raw,
    update_location_keywords,
    write_new_raw,
)
from grex.store.raw import raw_name, read_raw, sync_raw_dir, write_raw
from grex.store.reading import (
    counts,
    get_message,
    get_messages,
    get_thread,
    iter_messages,
    iter_threads,
    message_locations,
    message_thread_id,
    resolve_thread_id,
    thread_aliases,
    thread_summaries,
)
from grex.store.rows import message_row, row_to_message
from grex.store.schema import CATALOG, CORE_MIGRATIONS, ensure_schema, transaction
from grex.store.threads import (
    all_message_ids,
    delete_thread,
    record_merge,
    thread_ages,
    thread_exists,
    thread_rows,
    write_thread,
)

__all__ = [
    "CATALOG", "CORE_MIGRATIONS", "KB", "AddResult", "Change", "Removed", "all_message_ids",
    "changes_since", "counts", "delete_location", "delete_thread", "ensure_schema",
    "get_cursor", "get_message", "get_messages", "get_thread", "has_cursor", "has_location",
    "insert_messages", "iter_messages", "iter_threads", "last_seq", "list_quarantine",
    "log_change", "message_locations", "message_row", "message_thread_id", "prune_changes",
    "quarantine", "raw_name", "read_raw", "record_merge", "replace_parsed",
    "resolve_thread_id", "row_to_message", "set_cursor", "sync_raw_dir", "thread_aliases",
    "thread_ages",
    "thread_exists", "thread_rows", "thread_summaries", "transaction", "unlink_raw",
    "update_location_keywords", "write_new_raw", "write_raw", "write_thread",
]
