"""The foundation's commands: init, import, threads, show, stats, rebuild."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from grex import pipeline, store
from grex.cli.core import JsonOpt, ThreadIdArg, emit_json, progress_bar, say, state
from grex.errors import NotFound
from grex.models import Address, Message, Thread


def _addr(a: Address | None) -> dict[str, str] | None:
    return {"name": a.name, "address": a.addr} if a else None


def thread_json(t: Thread) -> dict[str, Any]:
    return {
        "thread_id": t.thread_id,
        "subject": t.subject,
        "root_message_id": t.root_message_id,
        "message_ids": list(t.message_ids),
        "message_count": len(t.message_ids),
        "first_date": t.first_date.isoformat(),
        "last_date": t.last_date.isoformat(),
        "participants": [_addr(a) for a in t.participants],
    }


def message_json(m: Message, depth: int = 0, parent: str | None = None) -> dict[str, Any]:
    return {
        "message_id": m.message_id,
        "parent_id": parent,
        "depth": depth,
        "subject": m.subject,
        "from": _addr(m.sender),
        "to": [_addr(a) for a in m.to],
        "cc": [_addr(a) for a in m.cc],
        "date": m.date.isoformat(),
        "date_source": m.date_source,
        "body": {"new": m.body.new, "quoted": m.body.quoted, "signature": m.body.signature,
                 "from_html": m.body.from_html},
        "attachments": [{"filename": a.filename, "content_type": a.content_type,
                         "size": a.size, "sha256": a.sha256} for a in m.attachments],
        "defects": list(m.defects),
    }


def _knowledge(conn: Any, thread_id: str) -> dict[str, Any] | None:
    """Entities, keyphrases and topics of a thread, when the extraction stage is built in."""
    try:
        from grex.extract import thread_knowledge
    except ImportError:
        return None
    return thread_knowledge(conn, thread_id)


def register(app: typer.Typer) -> None:
    @app.command()
    def init(ctx: typer.Context) -> None:
        """Create a knowledge base (with a commented grex.toml) at --kb / GREX_KB."""
        st = state(ctx)
        kb = store.KB.init(st.kb_path)
        say(st, f"Knowledge base ready at {kb.path} (edit {kb.config_path.name} to add accounts)")

    @app.command("import")
    def import_(
        ctx: typer.Context,
        paths: Annotated[list[Path], typer.Argument(help="mbox files, Maildirs, .eml files or "
                                                    "folders of them")],
        json_out: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
        later: Annotated[bool, typer.Option(help="run the later stages (extract, index, "
                                            "export) afterwards")] = True,
    ) -> None:
        """Import mail from files. Importing the same files twice adds nothing."""
        from grex import ingest

        st = state(ctx)
        if not (st.kb_path / store.CATALOG).exists():
            store.KB.init(st.kb_path)
        kb, conn, config = st.open()
        with kb.writer_lock(wait=True, timeout=600, command="grex import"):
            total = ingest.count_messages(paths)
            with progress_bar(st, "Importing", total) as advance:
                report = pipeline.import_paths(kb, conn, config, paths, progress=advance)
            stages = pipeline.run_later_stages(kb, conn, config) if later else None
        if json_out:
            emit_json({
                "seen": report.seen, "added": report.added, "duplicates": report.duplicates,
                "unchanged": report.unchanged, "threads_changed": report.threads_changed,
                "threads_merged": report.threads_merged,
                "quarantined": [{"source": q.source, "reason": q.reason}
                                for q in report.quarantined],
                "stages": [{"name": s.name, "skipped": s.skipped or None}
                           for s in (stages.stages if stages else ())],
            })
            return
        say(st, f"{report.seen} messages read: {report.added} new, {report.duplicates} "
                f"duplicate copies, {report.unchanged} already imported, "
                f"{len(report.quarantined)} quarantined; {report.threads_changed} threads "
                f"updated")
        for q in report.quarantined[:20]:
            say(st, f"  quarantined {q.source}: {q.reason}")
        if len(report.quarantined) > 20:
            say(st, f"  ... and {len(report.quarantined) - 20} more (see `grex stats`)")

    @app.command()
    def threads(
        ctx: typer.Context,
        limit: Annotated[int | None, typer.Option(help="at most this many")] = None,
        sort: Annotated[str, typer.Option(help="newest | oldest")] = "newest",
        json_out: JsonOpt = False,
    ) -> None:
        """List threads, newest activity first."""
        st = state(ctx)
        if sort not in ("newest", "oldest"):
            raise typer.BadParameter("expected newest or oldest", param_hint="--sort")
        _, conn, _ = st.open(readonly=True)
        order = "last_date DESC" if sort == "newest" else "first_date ASC"
        items = list(store.iter_threads(conn, order=order, limit=limit))
        if json_out:
            emit_json([thread_json(t) for t in items])
            return
        for t in items:
            who = ", ".join(a.label for a in t.participants[:3])
            say(st, f"{t.thread_id}  {t.last_date:%Y-%m-%d}  [{len(t.message_ids)}]  "
                    f"{t.subject or '(no subject)'}  ({who})")

    @app.command()
    def show(
        ctx: typer.Context,
        thread_id: ThreadIdArg,
        json_out: JsonOpt = False,
    ) -> None:
        """Show a thread: its messages in reply-tree order."""
        st = state(ctx)
        _, conn, _ = st.open(readonly=True)
        t = store.get_thread(conn, thread_id)
        if t is None:
            raise NotFound(f"no thread {thread_id!r}", hint="`grex threads` lists them")
        msgs = store.get_messages(conn, t.message_ids)
        knowledge = _knowledge(conn, t.thread_id)
        if json_out:
            out = thread_json(t)
            out["messages"] = [message_json(msgs[n.message_id], n.depth, n.parent_id)
                               for n in t.nodes if not n.ghost and n.message_id in msgs]
            out["ghosts"] = [n.message_id for n in t.nodes if n.ghost]
            if knowledge is not None:
                out.update(knowledge)
            emit_json(out)
            return
        say(st, f"Thread {t.thread_id}: {t.subject or '(no subject)'}")
        say(st, f"{len(t.message_ids)} messages, {t.first_date:%Y-%m-%d} .. "
                f"{t.last_date:%Y-%m-%d}")
        if knowledge:
            for key in ("keyphrases", "topics"):
                vals = knowledge.get(key) or []
                if vals:
                    say(st, f"{key}: " + ", ".join(
                        v if isinstance(v, str) else str(v.get("label") or v.get("text") or v)
                        for v in vals[:10]))
        for n in t.nodes:
            pad = "  " * n.depth
            if n.ghost:
                say(st, f"{pad}[missing message <{n.message_id}>]")
                continue
            m = msgs.get(n.message_id)
            if m is None:
                continue
            say(st, f"{pad}--- {m.sender.display() if m.sender else '(unknown sender)'}, "
                    f"{m.date:%Y-%m-%d %H:%M} UTC  <{m.message_id}>")
            for line in (m.body.new or "(no new text)").splitlines()[:40]:
                say(st, f"{pad}  {line}")
            if m.attachments:
                say(st, f"{pad}  attachments: " + ", ".join(
                    f"{a.filename} ({a.size} bytes)" for a in m.attachments))

    @app.command()
    def stats(
        ctx: typer.Context,
        json_out: JsonOpt = False,
    ) -> None:
        """Counts of the knowledge base, quarantined messages, and the NLP model in use."""
        st = state(ctx)
        kb, conn, config = st.open(readonly=True)
        c = store.counts(conn)
        out: dict[str, Any] = {"kb": str(kb.path), **c,
                               "quarantine": [{"source": q.source, "reason": q.reason}
                                              for q in store.list_quarantine(conn)]}
        try:
            from grex.extract import model_info
            out["nlp_model"] = model_info(config)
        except ImportError:
            out["nlp_model"] = None
        if json_out:
            emit_json(out)
            return
        say(st, f"Knowledge base {kb.path}")
        for key in ("messages", "threads", "locations", "ghosts", "merged_threads",
                    "quarantined"):
            say(st, f"  {key.replace('_', ' ')}: {c[key]}")
        for q in out["quarantine"][:20]:
            say(st, f"    {q['source']}: {q['reason']}")
        if out["nlp_model"]:
            say(st, f"  nlp model: {out['nlp_model']}")

    @app.command()
    def rebuild(ctx: typer.Context) -> None:
        """Re-parse every raw message and re-thread the catalog (after an upgrade)."""
        from grex import ingest

        st = state(ctx)
        kb, conn, config = st.open()
        with kb.writer_lock(wait=True, timeout=600, command="grex rebuild"):
            n = conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
            with progress_bar(st, "Re-parsing", n) as advance:
                report = ingest.rebuild_catalog(kb, conn, config, progress=advance)
        say(st, f"{report['reparsed']} messages re-parsed, {report['threads']} threads")

