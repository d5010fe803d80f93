"""Atomic file writes, artifact metadata and its integrity checks.

Every artifact is written under a temporary name in the same directory and renamed into place, so
a killed process or a full disk never leaves a half-written file under the final name; a full disk
is reported as one line naming the path and the free space (:class:`DiskFullError`). Under
:func:`dskd.core.stopping.stop_cleanly` SIGTERM and Ctrl-C unwind through here too (removing the
temporary) and are held back while the result is renamed into place.

Artifacts record the size and sha256 of their data files (:func:`file_digests`); opening one checks
the sizes, and with ``DSKD_VERIFY=full`` in the environment also every sha256 (:func:`verify_files`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dskd
from dskd.core.errors import DSKDError
from dskd.core.stopping import Stopped, holding_signals

VERIFY_ENV = "DSKD_VERIFY"
VERIFY_LEVELS = ("fast", "full")
"""fast (default): sizes and cheap structural checks at open; full: also every recorded sha256."""
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(DSKDError):
    """The file system ran out of space while an artifact was written (nothing was left behind)."""


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _is_disk_full(error: BaseException, folder: Path) -> bool:
    """OSError ENOSPC/EDQUOT, or a library's own error for it (safetensors, torch) on a full file system."""
    if isinstance(error, OSError) and error.errno in _DISK_FULL:
        return True
    return "No space left on device" in str(error) or _free_bytes(folder) == 0


def _disk_full(path: Path) -> DiskFullError:
    free = _free_bytes(path.parent)
    shown = "unknown" if free is None else f"{free / 2**20:.1f} MiB"
    return DiskFullError(
        f"No space left on the device while writing {path} ({shown} free in {path.parent}); nothing was "
        "written there. Free some space or choose an output on another file system, then run it again."
    )


@contextlib.contextmanager
def _cleanup_on_error(path: Path, tmp: Path) -> Iterator[None]:
    """Remove ``tmp`` when the block fails; a full disk becomes :class:`DiskFullError` about ``path``;
    a :class:`Stopped` learns that ``path`` was not replaced."""
    try:
        yield
    except BaseException as e:
        full = isinstance(e, Exception) and not isinstance(e, DSKDError) and _is_disk_full(e, path.parent)
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        if isinstance(e, Stopped) and path not in e.completed:
            e.unfinished.append(path)
        if full:
            raise _disk_full(path) from e
        raise


def _share(path: Path) -> None:
    """Give ``path`` (and, for a folder, everything in it) the mode the umask gives a new file or folder:
    mkstemp and mkdtemp create 0600 and 0700, and so does safetensors (0.8) for every file it saves, which
    would hide shared artifacts from the other users of a cluster."""
    umask = os.umask(0)
    os.umask(umask)
    for item in (path, *path.rglob("*")) if path.is_dir() else (path,):
        if not item.is_symlink():
            item.chmod((0o777 if item.is_dir() or item.stat().st_mode & 0o100 else 0o666) & ~umask)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    with _cleanup_on_error(path, tmp_path):
        yield tmp_path
        _share(tmp_path)
        with holding_signals(path):
            os.replace(tmp_path, path)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    with _cleanup_on_error(path, tmp):
        yield tmp
        _share(tmp)
        with holding_signals(path):  # a stop between the two renames would leave only .NAME.old
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_artifact_json(path: str | os.PathLike, rebuild: str) -> dict[str, Any]:
    """A JSON object of an artifact's metadata; damage is a :class:`DSKDError` advising ``rebuild``."""
    try:
        data = read_json(path)
    except (OSError, ValueError) as e:
        raise DSKDError(
            f"Cannot read {path} ({type(e).__name__}: {e}); the artifact is damaged. {rebuild}"
        ) from e
    if not isinstance(data, dict):
        raise DSKDError(
            f"{path} holds a JSON {type(data).__name__}, not an object; the artifact is damaged. {rebuild}"
        )
    return data


def verify_level() -> str:
    """The integrity check to run when opening an artifact: ``$DSKD_VERIFY`` (fast | full, default fast)."""
    level = os.environ.get(VERIFY_ENV, "fast")
    if level not in VERIFY_LEVELS:
        raise DSKDError(f"{VERIFY_ENV}={level!r} is not one of {', '.join(VERIFY_LEVELS)}.")
    return level


def file_digests(folder: str | os.PathLike, names: list[str]) -> dict[str, dict[str, Any]]:
    """``{name: {"size", "sha256"}}`` of files in ``folder`` (recorded in an artifact's metadata)."""
    folder = Path(folder)
    return {n: {"size": (folder / n).stat().st_size, "sha256": sha256_file(folder / n)} for n in names}


def verify_files(
    folder: str | os.PathLike, recorded: dict[str, Any], rebuild: str, full: bool | None = None
) -> None:
    """Check files against :func:`file_digests` output: sizes always, sha256 when ``full``
    (default: ``DSKD_VERIFY=full``). A mismatch is a :class:`DSKDError` advising ``rebuild``."""
    folder = Path(folder)
    full = verify_level() == "full" if full is None else full
    for name, want in recorded.items():
        path = folder / name
        if not path.is_file():
            raise DSKDError(f"{path} is missing; the artifact is incomplete. {rebuild}")
        size = path.stat().st_size
        if size != want["size"]:
            raise DSKDError(
                f"{path} has {size} bytes, its metadata records {want['size']}: the file is truncated or was "
                f"changed. {rebuild}"
            )
        if full and sha256_file(path) != want["sha256"]:
            raise DSKDError(
                f"{path} does not match the sha256 in its metadata: the file is corrupt. {rebuild}"
            )


@dataclass(frozen=True)
class MappedFiles:
    """Files a process reads memory-mapped, as they were when mapped: :meth:`check` before a read turns a
    file changed in place under the process (``cp`` over it, a truncation) into one line, where the read
    could die of SIGBUS (a page past the new end of the file) or read the new bytes. A file replaced by a
    rename (``mv``, every dskd build) leaves the mapped one intact and passes, and so does a deleted one."""

    files: tuple[tuple[Path, int, int, int, int], ...]
    """(path, device, inode, size, mtime in ns) of each file."""

    @classmethod
    def of(cls, paths: Iterable[str | os.PathLike]) -> MappedFiles:
        stats = ((Path(p), os.stat(p)) for p in paths)
        return cls(tuple((p, s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns) for p, s in stats))

    def check(self) -> None:
        """Refuse to go on reading a file that was changed in place (a stat per file: microseconds)."""
        for path, dev, ino, size, mtime in self.files:
            try:
                now = os.stat(path)
            except FileNotFoundError:
                continue
            if (now.st_dev, now.st_ino) == (dev, ino) and (now.st_size, now.st_mtime_ns) != (size, mtime):
                raise DSKDError(
                    f"{path} was changed in place while this process reads it memory-mapped ({size} bytes "
                    f"then, {now.st_size} now): something copied or wrote over it. Stopped before a read "
                    "of it could crash with SIGBUS or mix old and new data. Replace an artifact in use "
                    "with `mv` or a rebuild (both rename a new file into place), never `cp` onto it; then "
                    "run again."
                )


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def provenance(stage: str, inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    """What produced an artifact: stage, dskd version, command line, time and named inputs."""
    return {
        "stage": stage,
        "dskd_version": dskd.__version__,
        "command": " ".join(sys.argv),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "inputs": inputs or {},
    }
