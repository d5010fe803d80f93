"""Files the code reads at run time, shipped inside the package (and so inside the wheel).

``presets/<name>/`` are the presets of ``dskd reproduce`` (``experiments/<name>/`` in the repository
holds the same files for reading and editing; a test keeps them identical), ``slurm/train.sbatch``
the default template of ``dskd slurm submit`` and ``negation_affixes.json`` the lexicon's default
affix rules (README.md here describes its fields).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from dskd.errors import DSKDError


def resource(*parts: str) -> Path:
    """The path of a file or folder under ``dskd/resources`` (an installed wheel is unpacked on disk)."""
    path = files(__name__).joinpath(*parts)
    if not isinstance(path, Path) or not path.exists():
        raise DSKDError(
            f"dskd resource '{'/'.join(parts)}' is not on disk at {path}: reinstall dskd from its wheel "
            "or a checkout (`pip install -e .`)."
        )
    return path
