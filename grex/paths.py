"""Where a knowledge base lives when none is named (standard library only: the served
search path imports this before anything else).

Inside a grex checkout (a directory holding both ``grex/`` and ``indexes/``, found from the
current directory upwards) KBs live in its ``indexes/``, as the demo and the tests use
them; anywhere else the default is per user, as notmuch's and mu's are:
``$XDG_DATA_HOME/grex/default`` (``~/.local/share/grex/default``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

KB_ENV = "GREX_KB"


def checkout_root(cwd: str | None = None) -> str | None:
    """The grex checkout the current directory is in, or None."""
    here = os.path.abspath(cwd or os.getcwd())
    while True:
        if os.path.isdir(os.path.join(here, "indexes")) and \
                os.path.isfile(os.path.join(here, "grex", "__init__.py")):
            return here
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


def default_kb(env: Mapping[str, str] | None = None, cwd: str | None = None) -> str:
    """The KB a command uses when neither --kb nor GREX_KB names one."""
    env = os.environ if env is None else env
    root = checkout_root(cwd)
    if root is not None:
        return os.path.join(root, "indexes", "default")
    data = env.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "grex", "default")


def kb_path(flag: str | None, env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(path, where it came from: "--kb", "GREX_KB" or "default")."""
    env = os.environ if env is None else env
    if flag:
        return os.path.expanduser(flag), "--kb"
    if env.get(KB_ENV):
        return os.path.expanduser(env[KB_ENV]), KB_ENV
    return default_kb(env), "default"
