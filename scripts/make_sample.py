#!/usr/bin/env python3
"""Writes grex/sample/: the bundled demo mailbox (a small, made-up SRE team's mail).

Everything here is invented for the demo. `keywords.json` says which messages carry the
share keyword in the demo (one message per shared thread: whole_thread brings the rest).
Run again after editing the THREADS below; the output is deterministic.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "grex" / "sample"
KERRY = "Kerry McGuire <kerry.mcguire@example.com>"
PAT = "Pat Lee <pat.lee@example.com>"
DANA = "Dana Whitfield <dana.whitfield@example.com>"
SAM = "Sam Okafor <sam.okafor@example.com>"
MARIA = "Maria Gonzalez <maria.gonzalez@acme-corp.example>"
TEAM = "SRE team <sre@example.com>"

# (thread key, shared?, [(from, to, cc, minutes after start, body), ...], subject)
THREADS = [
    ("acme-outage", True, "Acme outage: API returning 502s since 09:40", [
        (KERRY, TEAM, DANA, 0,
         "Acme Corp reports that every call to the orders API fails with 502 Bad Gateway\n"
         "since 09:40 UTC. Ticket OPS-1423. The load balancer health checks are green,\n"
         "so the gateway pods themselves look fine.\n\nWho is on call for the message "
         "queue this week?\n\nKerry"),
        (PAT, TEAM, KERRY, 14,
         "I am. The RabbitMQ broker on mq-2 hit its disk alarm at 09:38: the disk\n"
         "was 98% full because the dead-letter queue grew to 40 GB overnight. Publishers\n"
         "block when the alarm fires, so the API gateway times out and returns 502.\n\n"
         "I'm purging the dead-letter queue now."),
        (PAT, TEAM, KERRY, 31,
         "Fixed: after purging the dead-letter queue and restarting the broker on mq-2\n"
         "the 502s stopped at 10:12 UTC. Root cause: the retry policy of the billing\n"
         "consumer re-queued poisoned messages forever.\n\nFollow-ups:\n"
         "- cap retries at 5 and park the rest (OPS-1424)\n"
         "- alert at 70% disk instead of the broker's 90% alarm (OPS-1425)"),
        (DANA, TEAM, f"{KERRY}, {MARIA}", 45,
         "Thanks Pat. I told Maria Gonzalez at Acme Corp that service is back and that\n"
         "we will send a post-mortem by Friday."),
        (KERRY, TEAM, DANA, 60,
         "Post-mortem draft is in the wiki under Incidents/2024-03 Acme 502s. Pat, can\n"
         "you check the timeline? Lesson: a full broker disk looks like a gateway bug."),
    ]),
    ("failover", True, "Postgres failover drill next Tuesday", [
        (SAM, TEAM, "", 1440,
         "Next Tuesday at 14:00 UTC I will run the Postgres failover drill on the\n"
         "orders cluster: promote the replica in Frankfurt, point PgBouncer at it, then\n"
         "fail back. Expect about 30 seconds of write errors."),
        (KERRY, TEAM, SAM, 1500,
         "Sounds good. Please watch replication lag on the Dublin replica during the\n"
         "switch; last time Patroni needed a manual restart there."),
        (SAM, TEAM, KERRY, 1560,
         "Will do. I've added a Patroni health check to the runbook so we catch it\n"
         "before fail-back."),
    ]),
    ("release", True, "Release 4.2 checklist", [
        (DANA, TEAM, "", 2880,
         "Release 4.2 goes out Thursday. Checklist:\n1. database migration 0042 "
         "(adds the invoices index)\n2. feature flag new-checkout off by default\n"
         "3. Kubernetes manifests bumped to 4.2.0\n\nPat, can you own the migration?"),
        (PAT, TEAM, DANA, 2950,
         "Yes. Migration 0042 takes about 4 minutes on a copy of production, so I'll\n"
         "run it with CREATE INDEX CONCURRENTLY to avoid locking the invoices table."),
        (KERRY, TEAM, DANA, 3000,
         "I'll add a Grafana panel for checkout latency so we can compare before and\n"
         "after the new-checkout flag is turned on."),
    ]),
    ("kafka", True, "Kafka consumer lag alerts firing at night", [
        (SAM, TEAM, "", 4320,
         "The consumer lag alert for the analytics topic fires every night around\n"
         "02:00 UTC. It clears by itself within twenty minutes."),
        (PAT, TEAM, SAM, 4400,
         "That's the nightly batch export: it produces 3 million events in ten minutes.\n"
         "The consumers catch up, so the alert is noise. Let's alert on lag growing for\n"
         "30 minutes instead of on an absolute threshold."),
    ]),
    ("contract", False, "Acme contract renewal: pricing question", [
        (MARIA, DANA, "", 5000,
         "Hello Dana,\n\nBefore we renew, could you confirm the price per million API\n"
         "calls for next year?\n\nBest regards,\nMaria Gonzalez\nProcurement, Acme Corp"),
        (DANA, MARIA, "", 5100,
         "Hi Maria, I'll come back to you with the numbers on Monday."),
    ]),
    ("lunch", False, "Lunch on Friday?", [
        (KERRY, PAT, "", 5200, "Tacos at the usual place, 12:30?"),
    ]),
]


def main() -> None:
    start = datetime(2024, 3, 4, 9, 45, tzinfo=UTC)
    mail = OUT / "maildir" / "cur"
    mail.mkdir(parents=True, exist_ok=True)
    for old in mail.iterdir():
        old.unlink()
    keywords: dict[str, list[str]] = {}
    n = 0
    for key, shared, subject, msgs in THREADS:
        ids: list[str] = []
        for i, (frm, to, cc, minutes, body) in enumerate(msgs):
            n += 1
            m = EmailMessage()
            m["From"] = frm
            m["To"] = to
            if cc:
                m["Cc"] = cc
            m["Subject"] = subject if i == 0 else f"Re: {subject}"
            m["Date"] = format_datetime(start + timedelta(minutes=minutes))
            mid = f"{key}.{i + 1}@sample.grex.example"
            m["Message-ID"] = f"<{mid}>"
            if ids:
                m["In-Reply-To"] = f"<{ids[-1]}>"
                m["References"] = " ".join(f"<{x}>" for x in ids)
            m.set_content(body + "\n")
            name = f"{n:03d}-{key}-{i + 1}.eml"
            (mail / name).write_bytes(bytes(m))
            ids.append(mid)
            if shared and i == len(msgs) - 1:
                keywords[name] = ["grex-share"]
    (OUT / "keywords.json").write_text(json.dumps(keywords, indent=1) + "\n")
    (OUT / "README.md").write_text(
        "A made-up SRE team's mailbox for the grex demo (written for grex, no real people).\n"
        "`keywords.json` lists the messages that carry the share keyword `grex-share`;\n"
        "with `whole_thread = true` each brings its whole thread. Two threads are not shared.\n"
        "Regenerate with `python scripts/make_sample.py`.\n")


if __name__ == "__main__":
    main()
