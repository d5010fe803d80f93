"""Loggers of a run: CSV always (``metrics.csv`` in the run folder), W&B when ``logging.wandb`` is on.

W&B runs offline (``<run>/wandb/offline-run-*``, upload later with ``wandb sync``) unless
WANDB_API_KEY is set or WANDB_MODE=online. The W&B run is named after the experiment and seed,
grouped by the experiment family and tagged with the method and the switches that differ from the
defaults; the resolved config is uploaded with it.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from dskd.schema import ExperimentConfig


def wandb_online() -> bool:
    """True when W&B should talk to the server (WANDB_MODE=online, or an API key and no offline mode)."""
    mode = os.environ.get("WANDB_MODE", "")
    if mode == "online":
        return True
    return bool(os.environ.get("WANDB_API_KEY")) and mode not in ("offline", "disabled", "dryrun")


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
    from dskd.io import atomic_path

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


def build_loggers(cfg: ExperimentConfig, run_dir: Path) -> list[Any]:
    loggers: list[Any] = [_csv_logger(run_dir, cfg.trainer.log_every_n_steps)]
    if cfg.logging.wandb:
        from lightning.pytorch.loggers import WandbLogger
        from omegaconf import OmegaConf

        from dskd.config import to_dictconfig

        run_name = f"{cfg.name}-seed{cfg.seed}"
        run_id = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:12]  # same id on resume
        loggers.append(
            WandbLogger(
                name=run_name,
                project=cfg.logging.project,
                group=cfg.family,
                tags=run_tags(cfg),
                save_dir=str(run_dir),
                offline=not wandb_online(),
                id=run_id,
                resume="allow",
                config=OmegaConf.to_container(to_dictconfig(cfg), resolve=True),
            )
        )
    return loggers


def finish_wandb() -> None:
    """Close this process's W&B run, so that the next run in the same process starts its own."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()
