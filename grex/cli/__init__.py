"""The command line: thin over the library. One error handler, in ``main``.

Exit codes: 0 ok; 1 error; 2 usage or bad query; 66 input missing; 67 IMAP folder missing;
68 host unknown/unreachable; 69 IMAP service failed; 75 KB locked (another writer);
76 TLS/certificate failure; 77 login refused; 78 configuration invalid.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Annotated, Any

import typer

from grex.cli.core import AppState, err_console, state

app = typer.Typer(
    name="grex",
    help="Shared email threads as a searchable knowledge base.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from grex import __version__

        print(f"grex {__version__}")
        raise typer.Exit()

# Each area registers its commands; one line per area.
_AREAS: tuple[str, ...] = (
    "grex.cli.core_cmds",
    "grex.cli.ops",
    "grex.cli.sync",
    "grex.cli.extract",
    "grex.cli.search",
    "grex.cli.export",
)


@app.callback()
def _root(
    ctx: typer.Context,
    kb: Annotated[str | None, typer.Option(
        "--kb", help="knowledge base directory [default: $GREX_KB, else indexes/default in a "
        "grex checkout, else $XDG_DATA_HOME/grex/default]")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars or chatter")]
    = False,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks on errors")] = False,
    _version: Annotated[bool, typer.Option("--version", "-V", callback=_print_version,
                                           is_eager=True, help="print grex's version")]
    = False,
) -> None:
    st = ctx.obj if isinstance(ctx.obj, AppState) else AppState()
    st.kb_flag, st.quiet, st.debug = kb, quiet or st.quiet, debug or st.debug
    ctx.obj = st


for _area in _AREAS:
    importlib.import_module(_area).register(app)


def _plain_placeholders(cmd: Any) -> Any:
    """Help in the shape users know from git and notmuch: `--limit LIMIT`, `grex import
    PATHS...`, not Typer's Python types (`<int>`, `{paths}...`, `<list[Path]>`)."""
    for param in cmd.params:  # Typer vendors click: tell the kinds apart by their names
        kind = getattr(param, "param_type_name", "")
        if kind == "argument" and param.metavar is None:
            param.metavar = (param.name or "arg").upper() + ("..." if param.nargs != 1 else "")
        elif kind == "option" and not param.is_flag and not param.count \
                and param.metavar is None:
            param.metavar = (param.name or "value").upper().rstrip("_")
    for sub in getattr(cmd, "commands", {}).values():
        _plain_placeholders(sub)
    return cmd


def _argument_help_shape() -> None:
    """Typer (0.2x) prints an argument's Python type beside its name and wraps required ones
    in braces in the usage line; show the metavar alone, as click does."""
    from typer import core

    arg = getattr(core, "TyperArgument", None)
    if arg is None or not hasattr(arg, "_usage_display_name"):
        return

    def usage_name(self: Any) -> str:
        name = str(self.metavar or self.name)
        return name if self.required else f"[{name}]"

    arg._usage_display_name = usage_name
    arg.display_type_rich = lambda self, ctx: None


def command() -> Any:
    """The click command behind the app, with plain placeholders in its help."""
    _argument_help_shape()
    return _plain_placeholders(typer.main.get_command(app))


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turn every GrexError into one line and an exit code."""
    from grex.errors import GrexError

    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get("GREX_DEBUG") == "1"
    if "search" in args and not debug:  # search's fast path: no Typer (see fast_main)
        from grex.cli.search import fast_main

        code = fast_main(args)
        if code is not None:
            sys.exit(code)
    try:
        # without standalone mode a typer.Exit(n) comes back as a return value
        rc = command().main(args=args, prog_name="grex", standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except GrexError as e:
        if debug:
            raise
        err_console.print(f"Error: {e}", markup=False)
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        err_console.print("Aborted.")
        sys.exit(130)
    except typer.TyperException as e:  # usage errors (Typer's vendored click): exit 2
        if debug or not hasattr(e, "show"):
            raise
        e.show()
        sys.exit(getattr(e, "exit_code", 2))
    except EOFError:
        err_console.print("Aborted.")
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("Interrupted.")
        sys.exit(130)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(0)
    except Exception as e:  # noqa: BLE001 - the last line of defence: no traceback for users
        if debug:
            raise
        err_console.print(f"Error: unexpected {type(e).__name__}: {e} (run with --debug for "
                          "the traceback, and please report it)", markup=False)
        sys.exit(1)


__all__ = ["app", "main", "state"]
