"""Where the shared corpora are, and a skip marker for when they are absent.

Order: $GREX_CORPORA, <repo>/../shared/corpora, /work/shared/corpora (a worktree elsewhere).
Never copy corpus files into the project.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _find() -> Path | None:
    candidates = [os.environ.get("GREX_CORPORA"), REPO.parent / "shared" / "corpora",
                  Path("/work/shared/corpora")]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return None


CORPORA = _find()
requires_corpora = pytest.mark.skipif(
    CORPORA is None,
    reason="../shared/corpora is absent (set GREX_CORPORA to the corpora folder to run these)",
)


def corpus(*parts: str) -> Path:
    """A path inside the corpora; skips the calling test when the corpora are absent."""
    if CORPORA is None:
        pytest.skip("../shared/corpora is absent")
    path = CORPORA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"corpus path {path} is absent")
    return path
