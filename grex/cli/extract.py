"""Commands of the extraction area: extract, entities, topics, who, analyze."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from grex.cli.core import emit_json, progress_bar, say, state
from grex.errors import GrexError, ImportSourceError


def register(app: typer.Typer) -> None:
    @app.command()
    def extract(
        ctx: typer.Context,
        all_: Annotated[bool, typer.Option("--all", help="recompute every message and refit "
                                           "the topics")] = False,
        json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    ) -> None:
        """Extract entities, keyphrases, topics and people from new or changed messages."""
        from grex.extract import run_extract

        st = state(ctx)
        kb, conn, config = st.open()
        with kb.writer_lock(wait=False), progress_bar(st, "Extracting") as advance:
            report = run_extract(kb, conn, config, all=all_, progress=advance)
        if json_out:
            emit_json(report)
        else:
            say(st, report.summary())
            say(st, f"model: {report.model}")

    @app.command()
    def entities(
        ctx: typer.Context,
        type_: Annotated[str | None, typer.Option("--type", help="only this label, e.g. "
                                                  "PERSON, ORG, GPE, EMAIL")] = None,
        limit: Annotated[int, typer.Option(help="at most this many")] = 50,
        json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    ) -> None:
        """Entities across the knowledge base, most mentioned first."""
        from grex.extract import list_entities

        st = state(ctx)
        _, conn, _ = st.open(readonly=True)
        rows = list_entities(conn, type_, limit)
        if type_ and not rows:
            from grex.errors import NotFound
            from grex.extract import entity_labels

            here = entity_labels(conn)
            raise NotFound(f"no entities of type {type_!r} in this knowledge base",
                           hint="types here: " + ", ".join(here) if here else
                           "run `grex extract` first")
        if json_out:
            emit_json([{"text": e.text, "label": e.label, "count": e.count, "key": e.key}
                       for e in rows])
            return
        for e in rows:
            say(st, f"{e.count:6d}  {e.label:<8} {e.text}")

    @app.command()
    def topics(
        ctx: typer.Context,
        refit: Annotated[bool, typer.Option("--refit", help="refit the topic model on every "
                                            "thread first")] = False,
        json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    ) -> None:
        """Topics across the knowledge base with their threads."""
        from grex.extract import list_topics, refit_topics

        st = state(ctx)
        if refit:
            kb, conn, config = st.open()
            with kb.writer_lock(wait=False):
                refit_topics(kb, conn, config)
        else:
            _, conn, _ = st.open(readonly=True)
        out = list_topics(conn)
        if json_out:
            emit_json(out)
            return
        if not out:
            say(st, "No topics yet (run `grex extract`; topics need at least 4 threads).")
        for t in out:
            say(st, f"[{t['id']}] {t['label']}  ({len(t['threads'])} threads)  "
                    f"terms: {', '.join(t['terms'][:8])}")

    @app.command()
    def who(
        ctx: typer.Context,
        query: Annotated[str, typer.Argument(help="a subject, e.g. 'database failover'")],
        limit: Annotated[int, typer.Option(help="at most this many people")] = 10,
        json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    ) -> None:
        """Who to ask: people ranked by how much they wrote about QUERY."""
        from grex.extract import list_people
        from grex.extract import who as who_

        if not query.strip():
            from grex.errors import NotFound

            raise NotFound("an empty subject names nobody", hint="grex who 'database failover'")
        st = state(ctx)
        kb, conn, _ = st.open(readonly=True)
        people = who_(kb, conn, query, limit)
        if json_out:
            works = {p["addr"]: p["works_with"] for p in list_people(conn)}
            emit_json([{"addr": p.addr, "name": p.name, "score": p.score,
                        "messages": p.messages, "threads": p.threads,
                        "topics": [{"id": i, "label": lab, "weight": w}
                                   for i, lab, w in p.topics],
                        "works_with": works.get(p.addr, []),
                        "evidence": list(p.evidence)} for p in people])
            return
        if not people:
            say(st, f"Nobody has written about {query!r}.")
        for p in people:
            who_s = f"{p.name} <{p.addr}>" if p.name else p.addr
            say(st, f"{p.score:7.3f}  {who_s}  ({p.messages} messages; "
                    f"{', '.join(p.evidence)})")

    @app.command()
    def analyze(
        ctx: typer.Context,
        file: Annotated[str, typer.Argument(help="an .eml file or a text file; - for "
                                            "standard input")] = "-",
        json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    ) -> None:
        """Run the extraction on one message or text (offsets are into the analysed text:
        the new text of an .eml, or a plain text exactly as given)."""
        from grex.extract import analysis_json, analyze_text, load_model, seeds_for

        st = state(ctx)
        try:
            data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
        except OSError as exc:
            raise ImportSourceError(f"cannot read {file}: {exc.strerror or exc}") from exc
        seeds = None
        text = data.decode("utf-8", errors="replace")
        if file.lower().endswith(".eml") or _looks_like_mail(data):
            from grex.ingest import parse_message

            try:
                msg = parse_message(data)
            except GrexError:
                msg = None
            if msg is not None:
                text = msg.body.new
                seeds = seeds_for(msg.participants)
        try:
            config = st.config()
            model_name = config.nlp.model
            max_chars = config.nlp.max_chars
        except GrexError:
            model_name, max_chars = None, 20_000
        nlp, _ = load_model(model_name)
        out = analysis_json(text, analyze_text(nlp, text, seeds, max_chars=max_chars))
        if json_out:
            emit_json(out)
            return
        for e in out["entities"]:
            say(st, f"{e['start']:6d}-{e['end']:<6d} {e['label']:<8} {e['text']}")
        say(st, "keyphrases: " + ", ".join(out["keyphrases"]))


def _looks_like_mail(data: bytes) -> bool:
    head = data[:2000].decode("latin-1").lower()
    return all(f"\n{h}:" in "\n" + head or head.startswith(f"{h}:")
               for h in ("from", "subject")) and "\n\n" in data[:20000].decode("latin-1")
