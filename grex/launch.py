"""The `grex` command's entry point (console script and ``python -m grex``).

`grex search` goes to the KB's resident search server when one answers (grex.search_client:
standard-library imports only, so a served search never imports Typer, Rich or Whoosh);
everything else, and a search no server answers, runs grex.cli.main as before.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if "search" in args:
        from grex import search_client

        code = search_client.ask(args)
        if code is not None:
            sys.exit(code)
    from grex.cli import main as cli_main

    cli_main(args)


if __name__ == "__main__":
    main()
