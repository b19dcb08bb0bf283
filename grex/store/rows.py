"""Catalog rows <-> frozen models."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from grex.models import (
    Address,
    Attachment,
    Body,
    Message,
)

# ------------------------------------------------------------------ rows <-> models


def _addr_json(addrs: Iterable[Address]) -> str:
    return json.dumps([[a.name, a.addr] for a in addrs], ensure_ascii=False)


def _addrs(text: str) -> tuple[Address, ...]:
    return tuple(Address(name=n, addr=a) for n, a in json.loads(text))


def message_row(m: Message, raw_path: str, thread_id: str | None, now: float) -> tuple[Any, ...]:
    return (
        m.message_id, thread_id, raw_path, m.content_hash, m.subject,
        m.sender.name if m.sender else "", m.sender.addr if m.sender else "",
        _addr_json(m.to), _addr_json(m.cc), m.date.timestamp(), m.date_source,
        json.dumps(m.in_reply_to), json.dumps(m.references),
        m.body.new, m.body.quoted, m.body.signature, int(m.body.from_html),
        int(m.body.truncated),
        json.dumps([[a.filename, a.content_type, a.size, a.sha256] for a in m.attachments],
                   ensure_ascii=False),
        m.size, int(m.synthetic_id), m.list_id, json.dumps(list(m.defects), ensure_ascii=False),
        now, now, None if m.security is None else json.dumps(list(m.security)),
    )


_MESSAGE_COLUMNS = (
    "message_id, thread_id, raw_path, content_hash, subject, sender_name, sender_addr, "
    "to_json, cc_json, date, date_source, in_reply_to_json, references_json, body_new, "
    "body_quoted, body_signature, body_from_html, body_truncated, attachments_json, size, "
    "synthetic_id, list_id, defects_json, added_at, updated_at, security_json"
)


def row_to_message(row: sqlite3.Row) -> Message:
    sender = (Address(row["sender_name"], row["sender_addr"])
              if row["sender_name"] or row["sender_addr"] else None)
    return Message(
        message_id=row["message_id"], subject=row["subject"], sender=sender,
        to=_addrs(row["to_json"]), cc=_addrs(row["cc_json"]),
        date=datetime.fromtimestamp(row["date"], UTC),
        in_reply_to=tuple(json.loads(row["in_reply_to_json"])),
        references=tuple(json.loads(row["references_json"])),
        body=Body(new=row["body_new"], quoted=row["body_quoted"],
                  signature=row["body_signature"], from_html=bool(row["body_from_html"]),
                  truncated=bool(row["body_truncated"])),
        attachments=tuple(Attachment(*a) for a in json.loads(row["attachments_json"])),
        content_hash=row["content_hash"], size=row["size"],
        synthetic_id=bool(row["synthetic_id"]), date_source=row["date_source"],
        list_id=row["list_id"], defects=tuple(json.loads(row["defects_json"])),
        security=None if row["security_json"] is None else tuple(json.loads(row["security_json"])),
    )


