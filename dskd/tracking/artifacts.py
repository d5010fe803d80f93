"""W&B artifacts with lineage: the lexicon and the sense dictionary a training used, the student it
exported (logged by :func:`dskd.training.loggers.log_training`), the students an evaluation scored and
the results it wrote.

``logging.artifacts=reference`` (default) records each folder's files by ``file://`` reference with
their checksums (nothing is copied, however large the model); ``upload`` copies the files into the
artifact; ``off`` logs none. Everything works offline and reaches the server with ``wandb sync``.

A student's artifact leaves out its model card (``README.md``): ``dskd eval`` rewrites the card with the
results, and the evaluation must declare as its input the very version (the same digest) that the
training logged, not a new draft that differs by the card.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

MODEL_CARD = "README.md"
"""A Hugging Face model card (``dskd.models.card.CARD``; models/ is tracking's peer, not imported)."""


def _name(text: str) -> str:
    """A valid artifact name (letters, digits, ``-``, ``_``, ``.``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def folder_artifact(
    name: str,
    kind: str,
    folder: str | Path,
    mode: str,
    metadata: dict[str, Any],
    leave_out: tuple[str, ...] = (),
) -> Any:
    """A W&B artifact of the files under ``folder`` (by reference or copied, see ``mode``), but those at
    the relative paths ``leave_out``."""
    # deferred: wandb (heavy, imported only when a run logs to W&B)
    import wandb

    artifact = wandb.Artifact(_name(name), type=kind, metadata=metadata)
    folder = Path(folder).resolve()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel in leave_out:
            continue
        if mode == "upload":
            artifact.add_file(str(path), name=rel)
        else:
            artifact.add_reference(path.as_uri(), name=rel, checksum=True)
    return artifact


def student_artifact(export_dir: str | Path, mode: str) -> Any:
    """The artifact (type ``model``) of an exported student, named after its experiment and seed; without
    the model card, which ``dskd eval`` rewrites."""
    meta = json.loads((Path(export_dir) / "export_meta.json").read_text())
    cfg = yaml.safe_load(meta["experiment_config"])
    info = {"method": cfg["method"], "teacher": cfg["teacher"]["model"], **meta["inputs"]}
    return folder_artifact(f"{cfg['name']}-seed{cfg['seed']}", "model", export_dir, mode, info, (MODEL_CARD,))


def use(run: Any, artifact: Any) -> None:
    """Declare ``artifact`` an input of ``run``. Offline, W&B refuses ``use_artifact``, so the artifact is
    logged the way ``use_artifact`` logs a new artifact online (committed, then marked used, on sync)."""
    if not run.offline:
        run.use_artifact(artifact)
    else:
        run._log_artifact(artifact, is_user_created=True, use_after_commit=True)
