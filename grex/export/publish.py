"""Writing the site: incremental, and swapped in atomically.

Layout, for ``grex export html /srv/kb``::

    /srv/kb                  -> .kb.grex/v000007    (a relative symlink: the live site)
    /srv/.kb.grex/lock       one exporter at a time (fcntl)
    /srv/.kb.grex/v000006/   the previous version, kept for readers still on it
    /srv/.kb.grex/v000007/   the live version; .grex-manifest.json lists each file's sha256

An export builds ``v000008`` beside the live one: a file whose content hash matches the
manifest is hard-linked from the live version (not rewritten: same inode, same mtime), any
other file is written, and the new version is flushed to disk (syncfs) before it goes
live. Then a new symlink is made and renamed over ``/srv/kb``
(rename(2) is atomic), so a reader sees the old site or the new one, never a mix; older
versions are then removed. A crash before the rename leaves the live site as it was, and the
next export removes the half-built directory. When nothing changed, no version is made.

The first export to a path that is an empty directory removes it and puts the symlink there
(a static host or file:// follows the link). A non-empty directory that is not a grex site
is refused, so an export never deletes someone's files.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grex.errors import ExportError

MANIFEST = ".grex-manifest.json"
MANIFEST_VERSION = 1
_VERSION_DIR = re.compile(r"^v(\d{6,})$")


@dataclass(frozen=True, slots=True)
class PublishReport:
    out_dir: Path
    version_dir: Path  # the live version after this run
    files: int  # files in the site
    pages: int  # of which HTML pages
    written: int  # files written (new or changed)
    unchanged: int  # files hard-linked from the previous version
    removed: int  # files of the previous version no longer in the site
    bytes: int  # size of the site
    swapped: bool  # False when nothing changed (the live site was left alone)


def versions_dir(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}.grex"


def _safe_relpath(rel: str) -> str:
    """Refuse paths that could leave the site directory (they come from our own code, but
    a bug here would write anywhere)."""
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in rel:
        raise ExportError(f"refusing to write an unsafe site path: {rel!r}")
    return rel


def live_version(out_dir: Path) -> Path | None:
    """The version directory ``out_dir`` points at, or None (no site yet). Raises ExportError
    when ``out_dir`` holds something an export must not replace."""
    vdir = versions_dir(out_dir)
    if out_dir.is_symlink():
        target = Path(os.readlink(out_dir))
        resolved = (out_dir.parent / target).resolve() if not target.is_absolute() else target
        if resolved.parent == vdir.resolve() and _VERSION_DIR.match(resolved.name):
            return resolved if resolved.is_dir() else None
        raise ExportError(
            f"{out_dir} is a symlink to {target}, not to a grex site version",
            hint="choose another output path or remove the link",
        )
    if out_dir.exists():
        if out_dir.is_dir() and not any(out_dir.iterdir()):
            return None
        raise ExportError(
            f"{out_dir} exists and is not a grex site",
            hint="give an empty or new directory; grex never overwrites other files",
        )
    return None


def _manifest_json(version: Path | None) -> Any:
    """The parsed manifest of a site version, or None when there is none readable."""
    if version is None:
        return None
    try:
        return json.loads((version / MANIFEST).read_text("utf-8"))
    except (OSError, ValueError):
        return None


def read_manifest(version: Path | None) -> dict[str, str]:
    data = _manifest_json(version)
    if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION:
        return {}
    files = data.get("files")
    return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}


@contextlib.contextmanager
def _lock(vdir: Path) -> Iterator[None]:
    vdir.mkdir(parents=True, exist_ok=True)
    fd = os.open(vdir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise ExportError(
                    f"another export is writing {vdir.parent}", hint="wait for it to finish"
                ) from None
            raise
        yield
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_tree(path: Path) -> None:
    """Flush the new version to disk in one call: syncfs(2) on the file system holding it
    (one flush instead of an fsync per file: 18,000 files take seconds, not minutes), or
    sync(2) where syncfs is not available."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc_syncfs is not None and _libc_syncfs(fd) == 0:
            return
        os.sync()
    finally:
        os.close(fd)


def _find_syncfs() -> Any:
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.syncfs
        fn.argtypes = [ctypes.c_int]
        fn.restype = ctypes.c_int
        return fn
    except (OSError, AttributeError):
        return None


_libc_syncfs = _find_syncfs()


def _next_version(vdir: Path) -> Path:
    numbers = [int(m.group(1)) for p in vdir.iterdir() if (m := _VERSION_DIR.match(p.name))]
    return vdir / f"v{max(numbers, default=0) + 1:06d}"


@dataclass(frozen=True, slots=True)
class Pending:
    """A file not rendered yet: ``inputs`` fingerprints everything it is made from. When
    the live version has this path made from the same inputs, it is linked and
    ``render`` is never called (most of an unchanged site costs no rendering)."""

    inputs: str
    render: Callable[[], bytes]


def read_inputs(version: Path | None) -> dict[str, str]:
    data = _manifest_json(version)
    inputs = data.get("inputs") if isinstance(data, dict) else None
    return {str(k): str(v) for k, v in inputs.items()} if isinstance(inputs, dict) else {}


def publish(out_dir: Path, files: Iterable[tuple[str, bytes | Pending]], *,
            keep: int = 1) -> PublishReport:
    """Write ``files`` as the site at ``out_dir`` (see the module docstring). ``keep`` is how
    many earlier versions stay on disk beside the live one."""
    out_dir = Path(os.path.abspath(out_dir))
    vdir = versions_dir(out_dir)
    if not out_dir.parent.is_dir():
        raise ExportError(f"the parent directory of {out_dir} does not exist")
    with _lock(vdir):
        live = live_version(out_dir)
        old = read_manifest(live)
        old_inputs = read_inputs(live)
        # leftovers of an interrupted export: anything that is not live
        for p in vdir.iterdir():
            if p.name.endswith(".tmp-link") or (p.name.startswith("v") and p.name.endswith(".tmp")):
                _remove(p)
        new_dir = _next_version(vdir)
        build = new_dir.with_name(new_dir.name + ".tmp")
        build.mkdir()
        manifest: dict[str, str] = {}
        inputs: dict[str, str] = {}
        written = unchanged = total = 0
        dirs: set[Path] = {build}
        try:
            for rel, content in files:
                rel = _safe_relpath(rel)
                if rel in manifest or rel == MANIFEST:
                    raise ExportError(f"the site has two files at {rel}")
                target = build / rel
                if target.parent not in dirs:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    dirs.add(target.parent)
                if isinstance(content, Pending):
                    inputs[rel] = content.inputs
                    if live is not None and rel in old and old_inputs.get(rel) == content.inputs:
                        try:
                            os.link(live / rel, target)
                        except OSError:
                            pass
                        else:
                            manifest[rel] = old[rel]
                            total += target.stat().st_size
                            unchanged += 1
                            continue
                    data = content.render()
                else:
                    data = content
                digest = hashlib.sha256(data).hexdigest()
                manifest[rel] = digest
                total += len(data)
                if live is not None and old.get(rel) == digest:
                    with contextlib.suppress(OSError):
                        os.link(live / rel, target)
                        unchanged += 1
                        continue
                with open(target, "wb") as f:
                    f.write(data)
                written += 1
            removed = len(set(old) - set(manifest))
            if live is not None and written == 0 and removed == 0 and inputs == old_inputs:
                _remove(build)
                return PublishReport(out_dir, live, len(manifest), _pages(manifest), 0, unchanged,
                                     0, total, False)
            (build / MANIFEST).write_text(
                json.dumps({"version": MANIFEST_VERSION, "files": manifest, "inputs": inputs},
                           sort_keys=True, indent=0),
                "utf-8",
            )
            _sync_tree(build)  # every new file on disk before the site can point at it
            os.rename(build, new_dir)
            _fsync_dir(vdir)
            _swap(out_dir, new_dir)
        except BaseException:
            _remove(build)
            raise
        # old versions: keep the newest `keep` besides the live one
        others = sorted(
            (p for p in vdir.iterdir() if _VERSION_DIR.match(p.name) and p != new_dir),
            key=lambda p: p.name,
        )
        for p in others[: max(0, len(others) - keep)]:
            _remove(p)
        return PublishReport(out_dir, new_dir, len(manifest), _pages(manifest), written,
                             unchanged, removed, total, True)


def _pages(manifest: dict[str, str]) -> int:
    return sum(1 for rel in manifest if rel.endswith(".html"))


def _swap(out_dir: Path, new_dir: Path) -> None:
    """Point ``out_dir`` at ``new_dir`` with one rename."""
    link = versions_dir(out_dir) / f"{new_dir.name}.tmp-link"
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    os.symlink(os.path.relpath(new_dir, out_dir.parent), link)
    if out_dir.is_dir() and not out_dir.is_symlink():
        out_dir.rmdir()  # first export into an empty directory (checked by live_version)
    os.replace(link, out_dir)
    _fsync_dir(out_dir.parent)


def _remove(p: Path) -> None:
    if p.is_symlink() or p.is_file():
        p.unlink(missing_ok=True)
    elif p.is_dir():
        shutil.rmtree(p, ignore_errors=True)
