"""Loggers of a run: CSV always (``metrics.csv`` in the run folder), W&B when ``logging.wandb`` is on.

W&B runs offline (``<run>/wandb/offline-run-*``, upload later with ``wandb sync``) unless
WANDB_API_KEY is set or WANDB_MODE=online. The W&B run is named after the experiment and seed,
grouped by the experiment preset and tagged with the method and the switches that differ from the
defaults; the resolved config is uploaded with it. Its id is random, kept in ``wandb_run.json`` and
reused only when the same config resumes its checkpoint; its steps are the trainer's global steps.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only

from dskd.core.io import atomic_path, write_json_atomic
from dskd.data.config import DataConfig
from dskd.losses.config import LossConfig
from dskd.models.config import StudentConfig
from dskd.senses.config import SensesConfig
from dskd.tracking.artifacts import folder_artifact, student_artifact, use
from dskd.tracking.session import wandb_online
from dskd.training.config import LoggingConfig


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if is_dataclass(obj):
        out: dict[str, Any] = {}
        for f in fields(obj):
            out.update(_flat(getattr(obj, f.name), f"{prefix}{f.name}."))
        return out
    return {prefix.rstrip("."): obj}


def run_tags(
    method: str, student: StudentConfig, loss: LossConfig, data: DataConfig, extra: list[str]
) -> list[str]:
    """Method, student and every loss/data switch that differs from its default, plus ``extra``
    (logging.tags)."""
    tags = [method, f"student:{student.kind}-{student.num_layers}L", f"kd:{loss.kd.divergence}"]
    for section, have, default in (("loss", loss, LossConfig()), ("data", data, DataConfig())):
        want = _flat(default)
        for key, value in _flat(have).items():
            if isinstance(value, bool) and value != want.get(key):
                tags.append(f"{section}.{key}={str(value).lower()}")
    return tags + [t for t in extra if t not in tags]


def truncate_csv(path: Path, from_step: int) -> None:
    """Drop the rows of ``path`` logged at ``step >= from_step`` (a resumed run logs them again)."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames or [], [r for r in reader if int(r["step"]) < from_step]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:  # keep the file; continue its columns
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                self.metrics_keys = list(next(csv.reader(f), []))


class AtGlobalStep:
    """A logger whose rows are at the trainer's global step, the optimizer steps done when a row is logged
    (:class:`GlobalStepLogs` tells it the trainer). Lightning logs a training step's values, and a
    validation inside the fit, at the steps done *before* it (the second step's loss at step 1), one
    behind the ``[train] step N/M`` line, the checkpoints' ``global_step`` and a validation after the fit."""

    trainer: pl.Trainer | None = None

    def at(self, step: int | None) -> int | None:
        return step if self.trainer is None or step is None else self.trainer.global_step


class GlobalStepLogs(pl.Callback):
    """Makes every :class:`AtGlobalStep` logger of the trainer log at its global step."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, AtGlobalStep):
                logger.trainer = trainer


class _RunCSVLogger(AtGlobalStep, CSVLogger):
    """Lightning's CSV logger writing ``<save_dir>/metrics.csv``, appending to an existing file."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        super().log_metrics(metrics, self.at(step))

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


RUN_ID_FILE = "wandb_run.json"
"""In the run folder: the W&B id of the run and the fingerprint of the config it was started with."""


@dataclass(frozen=True)
class FolderInput:
    """A folder a training run read, as its W&B artifact names it."""

    name: str
    kind: str
    folder: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class WandbRun:
    """What a W&B run is named, grouped and tagged by, the resolved config it carries and its lineage."""

    name: str
    group: str
    tags: list[str]
    config: dict[str, Any]
    """The resolved experiment config, uploaded with the run."""
    fingerprint: str
    """SHA-256 of the resolved config, ``trainer.resume`` aside (how a run starts is not what it is)."""
    artifacts: str
    """logging.artifacts: reference | upload | off."""
    inputs: list[FolderInput]
    """The lexicon and sense dictionary folders of a DSKD run (none for KD)."""


def folder_inputs(
    preset: str, lexicon_dir: str, senses: SensesConfig, teacher_model: str
) -> list[FolderInput]:
    """The lexicon and sense dictionary folders a DSKD run reads, as its W&B artifacts name them."""
    return [
        FolderInput(f"{preset}-lexicon", "lexicon", lexicon_dir, {"teacher": teacher_model}),
        FolderInput(f"{preset}-senses", "sense-dictionary", senses.output_dir, {"k": senses.k}),
    ]


def wandb_run_id(fingerprint: str, run_dir: Path, resuming: bool) -> tuple[str, bool]:
    """(W&B run id, whether it continues a W&B run): the id stored in ``run_dir`` when the training
    resumes a checkpoint of the config with this ``fingerprint``, else a fresh random id (then stored
    for a later resume)."""
    path = run_dir / RUN_ID_FILE
    if resuming and path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("config") == fingerprint:
            return str(stored["id"]), True
    new_id = secrets.token_hex(6)  # W&B ids are [a-z0-9]
    write_json_atomic(path, {"id": new_id, "config": fingerprint})
    return new_id, False


class _StepWandbLogger(AtGlobalStep, WandbLogger):
    """Lightning's W&B logger whose W&B step is the trainer's global step (``_step`` equals
    ``trainer/global_step``), so the segments of a resumed run continue one another instead of each
    restarting at 0."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._wandb_init.pop("anonymous", None)  # wandb warns about the setting even when it is None

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        step = self.at(step)
        if step is None:
            return super().log_metrics(metrics)
        self.experiment.log({**metrics, "trainer/global_step": step}, step=step)


def build_loggers(
    logging: LoggingConfig, run: WandbRun, run_dir: Path, log_every_n_steps: int, resuming: bool = False
) -> list[Any]:
    """CSV logger, and the W&B logger of ``run`` (``logging.wandb``); ``resuming``: the run continues a
    checkpoint."""
    csv_logger = _RunCSVLogger(
        save_dir=str(run_dir), name="", version="", flush_logs_every_n_steps=log_every_n_steps
    )
    if not logging.wandb:
        return [csv_logger]
    run_id, resume = None, False
    if rank_zero_only.rank == 0:  # the only process with a W&B run
        run_dir.mkdir(parents=True, exist_ok=True)
        run_id, resume = wandb_run_id(run.fingerprint, run_dir, resuming)
    wandb_logger = _StepWandbLogger(
        name=run.name,
        project=logging.project,
        group=run.group,
        job_type="train",
        tags=run.tags,
        save_dir=str(run_dir),
        offline=not wandb_online(),
        id=run_id,
        resume="must" if resume else None,
        config=run.config,
    )
    return [csv_logger, wandb_logger]


def wandb_experiment(trainer: Any) -> Any:
    """The W&B run of ``trainer``'s W&B logger (on the process that logs)."""
    return next(lg.experiment for lg in trainer.loggers if isinstance(lg, WandbLogger))


def log_training(experiment: Any, run: WandbRun, export_dir: str | Path | None, step: int) -> None:
    """Lineage of a training run in its W&B ``experiment``: its inputs (lexicon, sense dictionary, those
    that exist: a run on custom data may have no lexicon folder) and its exported student."""
    if run.artifacts == "off":
        return
    for i in run.inputs:
        if Path(i.folder).is_dir():
            use(experiment, folder_artifact(i.name, i.kind, i.folder, run.artifacts, i.metadata))
    if export_dir is not None:
        experiment.log_artifact(
            student_artifact(export_dir, run.artifacts), aliases=["latest", f"step-{step}"]
        )
