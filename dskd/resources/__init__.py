"""Files the code reads at run time, shipped inside the package (and so inside the wheel).

``presets/<name>/`` are the presets of ``dskd reproduce`` (``experiments/<name>/`` in the repository
holds the same files for reading and editing; a test keeps them identical), ``slurm/train.sbatch``
the default template of ``dskd slurm submit``. ``lexicon/`` holds the lexical resources a user reads
and edits (the affix rules of the polarity rule, an example of extra relations): in the repository it
is the top-level ``lexicon/`` folder, which the wheel ships as ``dskd/resources/lexicon/`` (setup.py
maps it there); ``resource("lexicon", ...)`` finds it in either place.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from dskd.core.errors import DSKDError

CHECKOUT_LEXICON = Path(__file__).resolve().parents[2] / "lexicon"
"""The top-level ``lexicon/`` folder of a checkout (an editable install reads it from there)."""


def resource(*parts: str) -> Path:
    """The path of a file or folder under ``dskd/resources`` (an installed wheel is unpacked on disk);
    ``lexicon/...`` is the packaged copy of the lexicon folder, else the checkout's ``lexicon/``."""
    path = files(__name__).joinpath(*parts)
    if parts and parts[0] == "lexicon" and not path.exists():
        path = CHECKOUT_LEXICON.joinpath(*parts[1:])
    if not isinstance(path, Path) or not path.exists():
        raise DSKDError(
            f"dskd resource '{'/'.join(parts)}' is not on disk at {path}: reinstall dskd from its wheel "
            "or a checkout (`pip install -e .`)."
        )
    return path
