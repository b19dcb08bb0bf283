"""`python -m grex.cli.serve KB`: the KB's resident search server (grex.search.server),
answering `grex search` clients with the CLI's own formatting (grex.cli.search)."""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m grex.cli.serve KB\n")
        return 2
    from grex.cli import search as frontend
    from grex.search import serve

    return serve(Path(args[0]), frontend)


if __name__ == "__main__":
    sys.exit(main())
