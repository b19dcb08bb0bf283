"""Ingest: bytes and mailboxes in, frozen records out, saved through the store.

Takes raw bytes (IMAP, mbox, Maildir, .eml) and gives ``Message`` records (``parse``, pure)
and computed threads (``threads``, pure), saved with ``catalog`` (re-threading over the
store). ``imap`` is the IMAP side (selection, fetching, sync state, unsharing), ``importer``
the offline one, ``rebuild`` re-parses raw/ after an upgrade.

May import: grex.store, grex.models, grex.config, grex.errors. No other stage.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: a served search imports this package (launcher)
if TYPE_CHECKING:
    from grex.ingest.catalog import add_messages, remove_location, rethread, rethread_all
    from grex.ingest.imap import (
        FETCH_BATCH,
        HEADER_BATCH,
        KILL_POINTS,
        MAX_ATTEMPTS,
        PARALLEL_MIN,
        SCHEMA,
        SEARCH_IDS_PER_COMMAND,
        AccountReport,
        Header,
        PlanItem,
        SyncReport,
        WhyEntry,
        WhyReport,
        apply_removals,
        connect,
        ensure_schema,
        fetch_headers,
        fetch_raw,
        gmail_thread_criteria,
        is_whole_folder,
        location_source,
        resolve_folders,
        save_batch,
        seed_criteria,
        selection_fingerprint,
        sync,
        sync_account,
        thread_criteria,
        tls_context,
        why,
    )
    from grex.ingest.importer import (
        BATCH,
        POOL_THRESHOLD,
        Progress,
        count_messages,
        default_workers,
        import_messages,
        iter_mbox,
        parse_raw,
        scan,
    )
    from grex.ingest.parse import (
        EPOCH,
        MAX_BODY,
        MAX_FILENAME,
        MAX_HEADER,
        addresses_from_header,
        clean_header,
        clean_text,
        content_id,
        date_from_received,
        decode_bytes,
        html_to_text,
        mime_security,
        normalize_address,
        normalize_message_id,
        parse_addresses,
        parse_date,
        parse_id_list,
        parse_message,
        sanitize_filename,
        split_body,
        strip_bsmtp,
    )
    from grex.ingest.rebuild import rebuild_catalog
    from grex.ingest.threads import Component, Link, build_threads, normalize_subject, thread_id_for

# public name -> the module that defines it; imported on first use, so importing the
# package costs nothing and no module of it waits on another's imports
_EXPORTS = {
    "EPOCH": "grex.ingest.parse",
    "MAX_BODY": "grex.ingest.parse",
    "MAX_FILENAME": "grex.ingest.parse",
    "MAX_HEADER": "grex.ingest.parse",
    "addresses_from_header": "grex.ingest.parse",
    "clean_header": "grex.ingest.parse",
    "clean_text": "grex.ingest.parse",
    "content_id": "grex.ingest.parse",
    "date_from_received": "grex.ingest.parse",
    "decode_bytes": "grex.ingest.parse",
    "html_to_text": "grex.ingest.parse",
    "mime_security": "grex.ingest.parse",
    "normalize_address": "grex.ingest.parse",
    "normalize_message_id": "grex.ingest.parse",
    "parse_addresses": "grex.ingest.parse",
    "parse_date": "grex.ingest.parse",
    "parse_id_list": "grex.ingest.parse",
    "parse_message": "grex.ingest.parse",
    "sanitize_filename": "grex.ingest.parse",
    "split_body": "grex.ingest.parse",
    "strip_bsmtp": "grex.ingest.parse",
    "Component": "grex.ingest.threads",
    "Link": "grex.ingest.threads",
    "build_threads": "grex.ingest.threads",
    "normalize_subject": "grex.ingest.threads",
    "thread_id_for": "grex.ingest.threads",
    "BATCH": "grex.ingest.importer",
    "POOL_THRESHOLD": "grex.ingest.importer",
    "Progress": "grex.ingest.importer",
    "count_messages": "grex.ingest.importer",
    "default_workers": "grex.ingest.importer",
    "import_messages": "grex.ingest.importer",
    "iter_mbox": "grex.ingest.importer",
    "parse_raw": "grex.ingest.importer",
    "scan": "grex.ingest.importer",
    "rebuild_catalog": "grex.ingest.rebuild",
    "add_messages": "grex.ingest.catalog",
    "remove_location": "grex.ingest.catalog",
    "rethread": "grex.ingest.catalog",
    "rethread_all": "grex.ingest.catalog",
    "AccountReport": "grex.ingest.imap",
    "FETCH_BATCH": "grex.ingest.imap",
    "HEADER_BATCH": "grex.ingest.imap",
    "Header": "grex.ingest.imap",
    "KILL_POINTS": "grex.ingest.imap",
    "MAX_ATTEMPTS": "grex.ingest.imap",
    "PARALLEL_MIN": "grex.ingest.imap",
    "PlanItem": "grex.ingest.imap",
    "SCHEMA": "grex.ingest.imap",
    "SEARCH_IDS_PER_COMMAND": "grex.ingest.imap",
    "SyncReport": "grex.ingest.imap",
    "WhyEntry": "grex.ingest.imap",
    "WhyReport": "grex.ingest.imap",
    "apply_removals": "grex.ingest.imap",
    "connect": "grex.ingest.imap",
    "ensure_schema": "grex.ingest.imap",
    "fetch_headers": "grex.ingest.imap",
    "fetch_raw": "grex.ingest.imap",
    "gmail_thread_criteria": "grex.ingest.imap",
    "is_whole_folder": "grex.ingest.imap",
    "location_source": "grex.ingest.imap",
    "resolve_folders": "grex.ingest.imap",
    "save_batch": "grex.ingest.imap",
    "seed_criteria": "grex.ingest.imap",
    "selection_fingerprint": "grex.ingest.imap",
    "sync": "grex.ingest.imap",
    "sync_account": "grex.ingest.imap",
    "thread_criteria": "grex.ingest.imap",
    "tls_context": "grex.ingest.imap",
    "why": "grex.ingest.imap",
}

__all__ = [
    "AccountReport", "BATCH", "Component", "EPOCH", "FETCH_BATCH", "HEADER_BATCH", "Header",
    "KILL_POINTS", "Link", "MAX_ATTEMPTS", "MAX_BODY", "MAX_FILENAME", "MAX_HEADER",
    "PARALLEL_MIN", "POOL_THRESHOLD", "PlanItem", "Progress", "SCHEMA", "SEARCH_IDS_PER_COMMAND",
    "SyncReport", "WhyEntry", "WhyReport", "add_messages", "addresses_from_header",
    "apply_removals", "build_threads", "clean_header", "clean_text", "connect", "content_id",
    "count_messages", "date_from_received", "decode_bytes", "default_workers", "ensure_schema",
    "fetch_headers", "fetch_raw", "gmail_thread_criteria", "html_to_text", "import_messages",
    "is_whole_folder", "iter_mbox", "location_source", "mime_security", "normalize_address",
    "normalize_message_id", "normalize_subject", "parse_addresses", "parse_date", "parse_id_list",
    "parse_message", "parse_raw", "rebuild_catalog", "remove_location", "resolve_folders",
    "rethread", "rethread_all", "sanitize_filename", "save_batch", "scan", "seed_criteria",
    "selection_fingerprint", "split_body", "strip_bsmtp", "sync", "sync_account",
    "thread_criteria", "thread_id_for", "tls_context", "why",
]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # the import statement's machinery (not importlib's), so -X importtime reports it
    value = getattr(__import__(module, fromlist=(name,)), name)
    globals()[name] = value
    return value
