"""raw/: a Maildir of every message's bytes, named by content hash, written durably."""

from __future__ import annotations

import os
from typing import Any

from grex.store.kb import KB

# ------------------------------------------------------------------ raw Maildir


def raw_name(content_hash: str) -> str:
    return f"{content_hash[:40]}.grex:2,"


def write_raw(kb: KB, data: bytes, content_hash: str, *, durable: bool = True) -> str:
    """Store bytes in raw/cur (write to tmp, rename). Returns the path under raw/.

    Idempotent: the name is the content hash, so an existing file with the right hash is
    the same message (one with the wrong hash, left by a crash, is rewritten). With
    ``durable=False`` the caller makes a whole batch durable with one ``sync_raw_dir``
    before its catalog rows commit.
    """
    import hashlib

    rel = f"cur/{raw_name(content_hash)}"
    final = kb.raw_dir / rel
    if final.exists():
        try:
            if hashlib.sha256(final.read_bytes()).hexdigest() == content_hash:
                return rel
        except OSError:
            pass
    tmp = kb.raw_dir / "tmp" / f"{raw_name(content_hash)}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    return rel


def _libc_syncfs() -> Any:
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):
        return None


_SYNCFS = _libc_syncfs()


def sync_raw_dir(kb: KB) -> None:
    """Make every file written to raw/ so far durable: one syncfs(2) of the filesystem
    (where available, else fsync of each recent file is the caller's job) and an fsync
    of raw/cur itself, so the renames are durable too."""
    fd = os.open(kb.raw_dir / "cur", os.O_RDONLY)
    try:
        if _SYNCFS is not None and _SYNCFS(fd) == 0:
            return
        os.fsync(fd)
    finally:
        os.close(fd)


def read_raw(kb: KB, raw_path: str) -> bytes:
    return (kb.raw_dir / raw_path).read_bytes()


