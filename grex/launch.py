"""The `grex` command's entry points.

`main` is the console script pip installs (and ``python -m grex``). `grex search` goes to
the KB's resident search server when one answers (grex.search.client: standard-library
imports only, so a served search never imports Typer, Rich or Whoosh); everything else, and
a search no server answers, runs grex.cli.main.

`fast` is the same behind grex's *fast launcher*, which ``scripts/install`` writes over
pip's console script (`install_launcher`). The launcher starts Python without site
(``-S``): site runs every ``.pth`` hook of the environment (an editable-install finder, a
certificate hook: ~10-40 ms here) before any of grex runs, and a served search needs none
of them. Only a served search runs in that bare interpreter; any other command, and a
search no server answers, replaces the process (exec) with a normal Python running `main`,
so it sees the ordinary environment (site-packages, .pth hooks, sys.flags) exactly as
pip's script would give it, at the price of one bare interpreter start (~5 ms).
"""

from __future__ import annotations

import os
import sys

LAUNCHER_MARK = "# grex fast launcher"
_PIP_SCRIPT_MARK = "from grex.launch import main"
# what a normal Python runs for `fast` when it hands over (with -P: no '' first on sys.path,
# so a ./grex directory cannot shadow the installed grex)
_HANDOVER = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
             "from grex.launch import main; main()")


# global options no command defines for itself: accepted after the command too
# (`grex search cairo --kb X`), as git and notmuch users type them
_GLOBAL_VALUE = ("--kb",)
_GLOBAL_FLAGS = ("--debug",)


def hoist_globals(args: list[str]) -> list[str]:
    """ARGS with the global options that follow the command moved before it (up to a
    `--`, after which everything is the command's)."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            rest.extend(args[i:])
            break
        if a in _GLOBAL_VALUE and i + 1 < len(args):
            front += [a, args[i + 1]]
            i += 2
            continue
        if a in _GLOBAL_FLAGS or a.startswith(tuple(f"{o}=" for o in _GLOBAL_VALUE)):
            front.append(a)
        else:
            rest.append(a)
        i += 1
    return front + rest


def main(argv: list[str] | None = None) -> None:
    args = hoist_globals(sys.argv[1:] if argv is None else argv)
    if "search" in args:
        from grex import search as search_client

        code = search_client.ask(args)
        if code is not None:
            sys.exit(code)
    from grex.cli import main as cli_main

    cli_main(args)


def fast(argv: list[str] | None = None) -> None:
    """The fast launcher's entry (Python started with -S): a search the KB's server answers
    is printed here; anything else is handed to a normal Python."""
    args = hoist_globals(sys.argv[1:] if argv is None else argv)
    if "search" in args:
        from grex import search as search_client

        code = search_client.ask(args)
        if code is not None:
            sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    # the grex this launcher runs, first on the new path: both halves run the same code
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.execv(sys.executable, [sys.executable, "-P", "-c", _HANDOVER, here, *args])


def launcher_text(python: str, grex_parent: str) -> str:
    """The fast launcher's source: a Python script run with -S that finds grex in
    GREX_PARENT (appended to sys.path, so PYTHONPATH still comes first, as with site)."""
    return (f"#!{python} -S\n"
            f"{LAUNCHER_MARK} (written by grex.launch.install_launcher; pip's own script\n"
            "# for grex would start Python with site, see grex/launch.py)\n"
            "import sys\n"
            f"sys.path.append({grex_parent!r})\n"
            "from grex.launch import fast\n"
            "fast()\n")


def install_launcher(path: str | None = None, python: str | None = None) -> str:
    """Write the fast launcher over pip's `grex` console script (PATH: the script beside
    this Python; PYTHON: sys.executable) and return its path. Only pip's script for grex
    or an earlier launcher is replaced (atomically), and only where a shebang can carry
    the interpreter path and one flag; otherwise OSError says why and nothing changes."""
    import sysconfig

    python = python or sys.executable
    if path is None:
        path = os.path.join(sysconfig.get_path("scripts"), "grex")
    grex_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if any(c.isspace() for c in python) or len(python) > 200 or not os.path.isabs(python):
        raise OSError(f"cannot name {python!r} in a shebang line")
    try:
        with open(path, encoding="utf-8") as f:
            current = f.read(4096)
    except FileNotFoundError:
        current = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise OSError(f"{path}: cannot read it: {exc}") from None
    if current and LAUNCHER_MARK not in current and _PIP_SCRIPT_MARK not in current:
        raise OSError(f"{path} is not pip's script for grex: left as it is")
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(launcher_text(python, grex_parent))
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


if __name__ == "__main__":
    main()
