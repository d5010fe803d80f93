"""Loggers of a run: CSV always (``metrics.csv`` in the run folder), W&B when ``logging.wandb`` is on.

W&B runs offline (``<run>/wandb/offline-run-*``, upload later with ``wandb sync``) unless
WANDB_API_KEY is set or WANDB_MODE=online. The W&B run is named after the experiment and seed,
grouped by the experiment family and tagged with the method and the switches that differ from the
defaults; the resolved config is uploaded with it. Its id is random, kept in ``wandb_run.json`` and
reused only when the same config resumes its checkpoint; its steps are the trainer's global steps.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from dskd.config.schema import ExperimentConfig
from dskd.tracking.session import wandb_online


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if is_dataclass(obj):
        out: dict[str, Any] = {}
        for f in fields(obj):
            out.update(_flat(getattr(obj, f.name), f"{prefix}{f.name}."))
        return out
    return {prefix.rstrip("."): obj}


def run_tags(cfg: ExperimentConfig) -> list[str]:
    """Method, student and every loss/data switch that differs from its default, plus logging.tags."""
    from dskd.data.config import DataConfig
    from dskd.losses.config import LossConfig

    tags = [
        cfg.method,
        f"student:{cfg.student.kind}-{cfg.student.num_layers}L",
        f"kd:{cfg.loss.kd.divergence}",
    ]
    for section, default in (("loss", LossConfig()), ("data", DataConfig())):
        have, want = _flat(getattr(cfg, section)), _flat(default)
        for key, value in have.items():
            if isinstance(value, bool) and value != want.get(key):
                tags.append(f"{section}.{key}={str(value).lower()}")
    return tags + [t for t in cfg.logging.tags if t not in tags]


def truncate_csv(path: Path, from_step: int) -> None:
    """Drop the rows of ``path`` logged at ``step >= from_step`` (a resumed run logs them again)."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames or [], [r for r in reader if int(r["step"]) < from_step]
    from dskd.core.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


def _csv_logger(run_dir: Path, flush_every: int) -> Any:
    """Lightning's CSV logger writing ``run_dir/metrics.csv``, appending to an existing file."""
    from lightning.fabric.loggers.logger import rank_zero_experiment
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    class AppendingWriter(ExperimentWriter):
        def _check_log_dir_exists(self) -> None:  # keep the file; continue its columns
            if os.path.isfile(self.metrics_file_path):
                with open(self.metrics_file_path, newline="") as f:
                    self.metrics_keys = list(next(csv.reader(f), []))

    class RunCSVLogger(CSVLogger):
        @property
        @rank_zero_experiment
        def experiment(self) -> ExperimentWriter:
            if self._experiment is None:
                self._experiment = AppendingWriter(log_dir=self.log_dir)
            return self._experiment

    return RunCSVLogger(save_dir=str(run_dir), name="", version="", flush_logs_every_n_steps=flush_every)


RUN_ID_FILE = "wandb_run.json"
"""In the run folder: the W&B id of the run and the fingerprint of the config it was started with."""


def config_fingerprint(cfg: ExperimentConfig) -> str:
    """SHA-256 of the resolved config, ``trainer.resume`` aside (how a run starts is not what it is)."""
    from dskd.config.loading import config_to_yaml

    return hashlib.sha256(
        config_to_yaml(replace(cfg, trainer=replace(cfg.trainer, resume=""))).encode()
    ).hexdigest()


def wandb_run_id(cfg: ExperimentConfig, run_dir: Path, resuming: bool) -> tuple[str, bool]:
    """(W&B run id, whether it continues a W&B run): the id stored in ``run_dir`` when the training
    resumes a checkpoint of the same config, else a fresh random id (then stored for a later resume)."""
    import json
    import secrets

    from dskd.core.io import write_json_atomic

    path, fingerprint = run_dir / RUN_ID_FILE, config_fingerprint(cfg)
    if resuming and path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("config") == fingerprint:
            return str(stored["id"]), True
    new_id = secrets.token_hex(6)  # W&B ids are [a-z0-9]
    write_json_atomic(path, {"id": new_id, "config": fingerprint})
    return new_id, False


def _wandb_logger(**kwargs: Any) -> Any:
    """Lightning's W&B logger whose W&B step is the trainer's global step (``_step`` equals
    ``trainer/global_step``), so the segments of a resumed run continue one another instead of each
    restarting at 0."""
    from lightning.pytorch.loggers import WandbLogger
    from lightning.pytorch.utilities import rank_zero_only

    class StepWandbLogger(WandbLogger):
        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self._wandb_init.pop("anonymous", None)  # wandb warns about the setting even when it is None

        @rank_zero_only
        def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
            if step is None:
                return super().log_metrics(metrics)
            self.experiment.log({**metrics, "trainer/global_step": step}, step=step)

    return StepWandbLogger(**kwargs)


def build_loggers(cfg: ExperimentConfig, run_dir: Path, resuming: bool = False) -> list[Any]:
    """CSV logger, and the W&B logger (``logging.wandb``); ``resuming``: the run continues a checkpoint."""
    loggers: list[Any] = [_csv_logger(run_dir, cfg.trainer.log_every_n_steps)]
    if cfg.logging.wandb:
        from lightning.pytorch.utilities import rank_zero_only
        from omegaconf import OmegaConf

        from dskd.config.loading import to_dictconfig

        run_id, resume = None, False
        if rank_zero_only.rank == 0:  # the only process with a W&B run
            run_dir.mkdir(parents=True, exist_ok=True)
            run_id, resume = wandb_run_id(cfg, run_dir, resuming)
        loggers.append(
            _wandb_logger(
                name=f"{cfg.name}-seed{cfg.seed}",
                project=cfg.logging.project,
                group=cfg.preset,
                job_type="train",
                tags=run_tags(cfg),
                save_dir=str(run_dir),
                offline=not wandb_online(),
                id=run_id,
                resume="must" if resume else None,
                config=OmegaConf.to_container(to_dictconfig(cfg), resolve=True),
            )
        )
    return loggers


def wandb_experiment(trainer: Any) -> Any:
    """The W&B run of ``trainer``'s W&B logger (on the process that logs)."""
    from lightning.pytorch.loggers import WandbLogger

    return next(lg.experiment for lg in trainer.loggers if isinstance(lg, WandbLogger))
