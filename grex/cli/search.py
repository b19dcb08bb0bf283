"""`grex search`, `grex related`, `grex reindex`: thin over grex.search and grex.index."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from grex.cli.core import JsonOpt, console, emit_json, progress_bar, say, state
from grex.errors import QueryError

SEARCH_HELP = """Search the knowledge base (threads by relevance; --messages for messages).

\b
Query language (notmuch / mu compatible where they agree):
  word  "a phrase"  foo*       words match subject, body, names, addresses and
                               attachment names; stemmed (run = running),
                               accents folded
  a b   a AND b                both (the default)
  a OR b   ( ... )             either; parentheses group
  NOT a   -a                   without (a AND NOT b, a -b)
  from:  to: (To and Cc)  cc:  subject:  body:  attachment:
  date:2024-01-01..2024-03-31  date:2024-05  date:2024-05-17  date:30d..
        (open ends: date:..2024-01; relative: 2w.., 6m.., 1y..; times are UTC)
  id:MESSAGE-ID   thread:THREAD-ID   folder:   label: (also tag:, is:)
  person:  org:  place:  topic:  keyword:   (from extraction, when present)
  has:attachment  has:signed  has:encrypted  (tag:attachment works too)
  *                            every message
Operators are upper case; a bad query is reported with a caret at the problem.
Unquoted words are joined: grex search budget -draft (-draft negates).
"""


def register(app: typer.Typer) -> None:
    @app.command(help=SEARCH_HELP)
    def search(
        ctx: typer.Context,
        query: Annotated[list[str], typer.Argument(help="the query (words are joined)")],
        messages: Annotated[bool, typer.Option("--messages", help="one hit per message, "
                                               "not per thread")] = False,
        limit: Annotated[int, typer.Option(help="hits to show")] = 20,
        offset: Annotated[int, typer.Option(help="skip this many hits first")] = 0,
        sort: Annotated[str, typer.Option(help="relevance | newest | oldest")] = "relevance",
        facet: Annotated[list[str] | None, typer.Option(
            "--facet", help="count values of: topic | person | org | place | from | label | "
            "folder (repeatable)")] = None,
        json_out: JsonOpt = False,
    ) -> None:
        from grex import search as gs

        st = state(ctx)
        kb, conn = _open_readonly(st)
        try:
            result = gs.search(kb, " ".join(query), messages=messages, limit=limit,
                               offset=offset, sort=sort, facets=tuple(facet or ()), conn=conn)
        except QueryError as e:
            raise _with_caret(e) from None
        if json_out:
            emit_json(result.to_json())
            return
        _print_result(st, result)

    @app.command()
    def related(
        ctx: typer.Context,
        thread_id: Annotated[str, typer.Argument(help="a thread id (or unique prefix)")],
        limit: Annotated[int, typer.Option(help="threads to show")] = 10,
        json_out: JsonOpt = False,
    ) -> None:
        """Threads like this one (more like this: its most distinctive words)."""
        from grex import search as gs

        st = state(ctx)
        kb, conn = _open_readonly(st)
        result = gs.related(kb, thread_id, limit=limit, conn=conn)
        if json_out:
            emit_json(result.to_json())
            return
        _print_result(st, result)

    @app.command()
    def reindex(
        ctx: typer.Context,
        procs: Annotated[int | None, typer.Option(help="writer processes (default: 2 for "
                                                  "5,000+ messages on 2+ cores)")] = None,
        json_out: Annotated[bool, typer.Option("--json", help="print the report as JSON")]
        = False,
    ) -> None:
        """Rebuild the search index from the catalog into a new directory, then swap it in
        (searches keep using the old one until the swap)."""
        from grex import search as gi

        st = state(ctx)
        kb, conn, config = st.open()
        with kb.writer_lock(wait=True, timeout=600, command="grex reindex"):
            total = int(conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
            with progress_bar(st, "Indexing", total) as advance:
                report = gi.rebuild_index(kb, conn, procs=procs,
                                          progress=lambda n, _t=None: advance(n))
        if json_out:
            emit_json(report)
            return
        say(st, report.summary())
        for line in report.skipped[:20]:
            say(st, f"  skipped {line}")


def _with_caret(e: QueryError) -> QueryError:
    """The same error, its message followed by the query and a caret under the problem."""
    from grex.search import format_error

    return QueryError(format_error(e), query=e.query, position=e.position)


def _open_readonly(st: Any) -> tuple[Any, Any]:
    from grex import store

    config = st.config()
    kb = store.KB.open(config.kb)
    return kb, kb.connect(readonly=True)


def _print_result(st: Any, result: Any, out: Any = None) -> None:
    """The human view of a result on ``out`` (default: the process's console)."""
    from rich.text import Text

    out = console if out is None else out

    def say_(text: str) -> None:  # grex.cli.core.say, on ``out``
        if not st.quiet:
            out.print(text, markup=False)

    if result.suggestion:
        say_(f"Did you mean: {result.suggestion}")
    unit = "messages" if result.messages else "threads"
    if not result.hits:
        say_(f"No {unit} match." if result.total == 0 else
             f"{result.total} {unit} match; none on this page.")
    for h in result.hits:
        when = _span(h.first_date, h.last_date)
        count = f" [{len(h.message_ids)}/{h.total_messages}]" if h.total_messages else (
            f" [{len(h.message_ids)}]" if not result.messages else "")
        line = Text()
        line.append(h.thread_id, style="cyan")
        line.append(f"  {when}{count}  ")
        line.append(h.subject or "(no subject)", style="bold")
        who = h.sender if result.messages and h.sender else ", ".join(h.participants[:4])
        if who:
            line.append(f"  ({who})", style="dim")
        out.print(line)
        if result.messages:
            out.print(Text(f"  id:{h.message_ids[0]}", style="dim"))
        if h.snippet:
            snip = Text("  " + h.snippet)
            for a, b in h.highlights:
                snip.stylize("bold yellow", a + 2, b + 2)
            out.print(snip)
        if h.topics:
            out.print(Text("  topics: " + ", ".join(h.topics[:5]), style="green"))
    for name, values in (result.facets or {}).items():
        say_(f"{name}: " + ", ".join(f"{v} ({c})" for v, c in values) if values else
             f"{name}: (none)")
    shown = len(result.hits)
    if result.total > result.offset + shown and shown:
        say_(f"{result.offset + 1}-{result.offset + shown} of {result.total} {unit} "
             f"(--offset {result.offset + shown} for more)")


def _span(a: Any, b: Any) -> str:
    if a is None:
        return ""
    if b is None or a.date() == b.date():
        return f"{a:%Y-%m-%d}"
    return f"{a:%Y-%m-%d}..{b:%Y-%m-%d}"


def fast_main(argv: list[str]) -> int | None:
    """`grex [--kb PATH] [-q] [--debug] search QUERY... [options]` without Typer.

    Typer's parameter coercion imports pydantic and builds an adapter per option: about
    0.3 s of CPU in every `grex search` process, more than the search. grex.cli.main calls
    this first; it returns None (Typer then handles the command) for anything but a plain
    search: another command, --help, an option it does not know. Same options, output and
    exit codes as the Typer command. After a search it starts the KB's search server for
    the next `grex search` (grex.search.client; GREX_SEARCH_SERVER=0 disables it).
    """
    parsed = parse_fast_argv(argv)
    if parsed is None:
        return None
    kb_flag, quiet, opts = parsed
    from grex import search as search_client
    from grex.cli.core import err_console

    # an entry point older than grex.launch reaches here first: the server still answers
    code = search_client.ask(list(argv))
    if code is not None:
        return code
    code, kb_path = run_fast(kb_flag, quiet, opts, out=console, err=err_console)
    if kb_path is not None:
        search_client.start_server(kb_path)
    return code


def parse_fast_argv(argv: list[str]) -> tuple[str | None, bool, dict[str, Any]] | None:
    """(--kb value, --quiet, search options) of a plain `grex ... search ...`, else None."""
    args = list(argv)
    kb_flag: str | None = None
    quiet = debug = False
    while args and args[0].startswith("-"):
        opt = args.pop(0)
        if opt == "--kb" and args:
            kb_flag = args.pop(0)
        elif opt.startswith("--kb="):
            kb_flag = opt[len("--kb="):]
        elif opt in ("--quiet", "-q"):
            quiet = True
        elif opt == "--debug":
            debug = True
        else:
            return None
    if not args or args[0] != "search" or debug or any(
            a in ("--help", "-h") for a in args[1:]):
        return None
    opts = _parse_search_args(args[1:])
    if opts is None:
        return None
    return kb_flag, quiet, opts


def run_fast(kb_flag: str | None, quiet: bool, opts: dict[str, Any], *, out: Any, err: Any,
             env: Any = None) -> tuple[int, Any]:
    """One search as `grex search` prints it: the result on ``out``, an error on ``err``
    (Rich consoles), the environment ``env`` (default: this process's) for the config.
    Returns (exit code, the KB's path, or None when no KB was opened). Shared by the
    in-process path and the search server, so both print the same bytes."""
    from grex import search as gs
    from grex import store
    from grex.cli.core import AppState
    from grex.config import load_config
    from grex.errors import GrexError

    st = AppState(kb_flag=kb_flag, quiet=quiet)
    kb_path = None
    conn = None
    try:
        config = load_config(kb_flag, {}, env=env)
        kb = store.KB.open(config.kb)
        conn = kb.connect(readonly=True)
        kb_path = kb.path
        try:
            result = gs.search(kb, " ".join(opts["query"]), messages=opts["messages"],
                               limit=opts["limit"], offset=opts["offset"], sort=opts["sort"],
                               facets=tuple(opts["facet"]), conn=conn)
        except QueryError as e:
            raise _with_caret(e) from None
        if opts["json"]:
            if out is console:
                emit_json(result.to_json())
            else:
                out.file.write(json_text(result.to_json()))
        else:
            _print_result(st, result, out)
    except GrexError as e:
        err.print(f"Error: {e}", markup=False)
        return e.exit_code, kb_path
    except BrokenPipeError:
        return 0, kb_path
    finally:
        if conn is not None:
            conn.close()
    return 0, kb_path


def json_text(obj: Any) -> str:
    """What grex.cli.core.emit_json prints, as a string."""
    import json

    from grex.cli.core import _default

    return json.dumps(obj, ensure_ascii=False, indent=2, default=_default) + "\n"


def _parse_search_args(args: list[str]) -> dict[str, Any] | None:
    """Options of `grex search`; anything else is the query, so `grex search budget -draft`
    works (``-draft`` negates). None for an unknown ``--option`` or a bad value."""
    opts: dict[str, Any] = {"query": [], "messages": False, "json": False, "limit": 20,
                            "offset": 0, "sort": "relevance", "facet": []}
    valued = {"--limit": int, "--offset": int, "--sort": str, "--facet": str}
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if a == "--":
            opts["query"].extend(args[i:])
            break
        if a in ("--messages", "--json"):
            opts[a[2:]] = True
            continue
        name, eq, value = a.partition("=")
        if name in valued:
            if not eq:
                if i >= len(args):
                    return None
                value = args[i]
                i += 1
            try:
                v = valued[name](value)
            except ValueError:
                return None
            if name == "--facet":
                opts["facet"].append(v)
            else:
                opts[name[2:]] = v
            continue
        if a.startswith("--"):
            return None
        opts["query"].append(a)
    return opts if opts["query"] else None
