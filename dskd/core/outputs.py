"""Output folders that never destroy foreign data, and names that stay inside their root.

Every artifact folder dskd writes (lexicon, senses, cache, export, eval results, run folders) holds
``.dskd-artifact.json`` naming its kind. A stage replaces or writes into an existing folder only
when that file says it holds an artifact of the same kind (folders written before the marker
existed are recognised by the ``stage`` of their metadata); an empty or absent folder is fine. Any
other non-empty folder is refused unless the user passes ``--overwrite``, and a folder that holds
one of the stage's own inputs is refused even then. Run and sweep names become folder names, so
they are restricted to :data:`SAFE_NAME`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from dskd.core.errors import ConfigError, DSKDError
from dskd.core.io import atomic_dir, provenance, write_json_atomic

MARKER = ".dskd-artifact.json"
LOCK_NAME = "run.lock"
"""The lock file of a run folder that one ``dskd train`` holds (:mod:`dskd.training.runlock`)."""
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=@-]{0,127}")
"""A name that is one path component, starts with a letter or digit and needs no shell quoting."""
SEED_FOLDER = re.compile(r"seed-\d+")
"""The name of a run folder, ``runs_dir/NAME/seed-S``; one that ``dskd reproduce`` set aside
(``seed-S.old-KEY``) does not match, so no discovery of runs picks it up."""
_LEGACY_META = ("meta.json", "export_meta.json", "results.json")
"""Metadata files whose ``stage`` (top level or under ``provenance``) names an older artifact's kind."""
_LEGACY_RUN = ("config.yaml", "checkpoints")
"""A run folder written before the marker: the run's config and its checkpoint folder."""


def name_problem(value: str, what: str) -> str | None:
    """Why ``value`` (``what``: how a message names it) is not a :data:`SAFE_NAME`; None when it is."""
    if SAFE_NAME.fullmatch(value):
        return None
    return (
        f"{what} {value!r} is not a safe name: use 1-128 letters, digits and . _ + = @ -, starting with "
        "a letter or digit (it becomes a folder name and a SLURM job name)."
    )


def check_name(value: str, what: str) -> str:
    """Return ``value`` if it matches :data:`SAFE_NAME`, else raise :class:`ConfigError` naming ``what``."""
    problem = name_problem(value, what)
    if problem is not None:
        raise ConfigError(problem)
    return value


def _stage_of(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    provenance = data.get("provenance")
    stage = data.get("stage") or (provenance.get("stage") if isinstance(provenance, dict) else None)
    return stage if isinstance(stage, str) else None


def artifact_kind(folder: str | os.PathLike) -> str | None:
    """The kind of dskd artifact in ``folder`` (``lexicon``, ``senses``, ``export``...), None if not one."""
    folder = Path(folder)
    kind = _stage_of(folder / MARKER)
    if kind is not None:
        return kind
    if (folder / _LEGACY_RUN[0]).is_file() and (folder / _LEGACY_RUN[1]).is_dir():
        return "run"
    return next((k for k in map(_stage_of, (folder / n for n in _LEGACY_META)) if k is not None), None)


def _ours_in_progress(path: Path) -> bool:
    """A temporary file or folder of :mod:`dskd.core.io` (``.NAME.XXXX.tmp``), not yet renamed into place, or
    the lock of a run that is starting (:mod:`dskd.training.runlock`)."""
    return (path.name.startswith(".") and path.name.endswith(".tmp")) or path.name == LOCK_NAME


def _contains(outer: Path, inner: Path) -> bool:
    return inner == outer or outer in inner.parents


def _run_within(folder: Path) -> Path | None:
    """A run folder that ``folder`` is or holds (``runs_dir``, ``runs_dir/NAME`` or ``runs_dir/NAME/seed-S``
    given as ``folder``), None if there is none."""
    candidates = [folder, *folder.glob("*"), *folder.glob("*/*")]
    return next((p for p in candidates if p.is_dir() and artifact_kind(p) == "run"), None)


def check_output(
    folder: str | os.PathLike, kind: str, overwrite: bool = False, inputs: Iterable[str | os.PathLike] = ()
) -> None:
    """Refuse to write artifact ``kind`` into ``folder`` when that could destroy data that is not ours.

    Allowed: ``folder`` absent, empty, or holding a ``kind`` artifact; with ``overwrite``, anything
    else too, except a folder that holds (or is) one of ``inputs`` or a training run.
    """
    folder = Path(folder)
    resolved = folder.resolve()
    for item in inputs:
        if _contains(resolved, Path(item).resolve()):
            raise DSKDError(
                f"The output folder {folder} holds an input of this {kind} stage ({item}); writing there "
                "would delete it. Choose another output folder."
            )
    if not folder.exists():
        return
    run = _run_within(folder) if kind != "run" and folder.is_dir() else None
    if run is not None:
        raise DSKDError(
            f"The output folder {folder} holds a training run ({run}); writing the {kind} artifact there "
            "would delete its checkpoints and logs, so it is refused even with --overwrite. Choose another "
            "output folder."
        )
    if overwrite:
        return
    if not folder.is_dir():
        raise DSKDError(f"The output {folder} is a file, not a folder; remove it or choose another output.")
    found = artifact_kind(folder)
    if found == kind or all(map(_ours_in_progress, folder.iterdir())):
        return
    held = f"a dskd {found} artifact" if found else "files not written by dskd"
    raise DSKDError(
        f"The output folder {folder} holds {held}; writing the {kind} artifact would replace it. Choose "
        "another output folder, empty it, or pass --overwrite to replace it."
    )


def mark_output(folder: str | os.PathLike, kind: str) -> None:
    """Write ``folder/.dskd-artifact.json`` recording that ``folder`` holds a ``kind`` artifact."""
    write_json_atomic(Path(folder) / MARKER, provenance(kind))


@contextlib.contextmanager
def artifact_dir(
    folder: str | os.PathLike, kind: str, overwrite: bool = False, inputs: Iterable[str | os.PathLike] = ()
) -> Iterator[Path]:
    """:func:`dskd.io.atomic_dir` for a ``kind`` artifact after :func:`check_output`; marks the new folder."""
    check_output(folder, kind, overwrite, inputs)
    with atomic_dir(folder) as tmp:
        mark_output(tmp, kind)
        yield tmp


class StageResult(NamedTuple):
    """What the ``build(cfg)`` of an artifact stage (lexicon, senses, teacher cache) returns."""

    path: Path
    """The artifact folder the stage wrote."""
    stats: dict[str, Any]
    """Its JSON-able statistics (also in the folder's ``stats.json``); empty on ranks other than 0."""
