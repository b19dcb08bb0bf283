"""Unsharing: UIDs that left the chosen set leave the KB (on_unshare = "remove")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grex import store
from grex.config import Account
from grex.ingest import catalog
from grex.ingest.imap.fetch import location_source
from grex.ingest.imap.state import _checkpoint


def apply_removals(kb: Any, conn: Any, account: Account, removals: Sequence[Any], *,
                   unshare: str, subject_merge: bool) -> int:
    """Forget the UIDs that left the chosen set (unlabelled, moved out, expunged).

    Runs after every fetch of the run, so a message moved between shared folders never
    leaves. A message whose last copy in this account's folder went is removed from the KB
    when ``on_unshare = "remove"`` (it stays when another account or folder still shares
    it). Returns how many messages were removed.
    """
    removed = 0
    for r in removals:
        with store.transaction(conn):
            conn.execute("DELETE FROM sync_message WHERE account = ? AND folder = ? AND uid = ?"
                         " AND uidvalidity = ?",
                         (account.name, r["folder"], r["uid"], r["uidvalidity"]))
            still = conn.execute(
                "SELECT 1 FROM sync_message WHERE account = ? AND folder = ? AND message_id = ?",
                (account.name, r["folder"], r["message_id"])).fetchone()
            if not still and unshare == "remove":
                catalog.remove_location(kb, conn, r["message_id"],
                                        location_source(account.name, r["folder"]),
                                        subject_merge=subject_merge)
                removed += 1
        _checkpoint("removed")
    return removed
