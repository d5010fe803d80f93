"""Training guards: the non-finite loss guard and the checkpoint written when a run is stopped with
SIGTERM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from dskd.errors import DSKDError


def check_finite(parts: dict[str, torch.Tensor], step: int, policy: str, strategy: Any = None) -> bool:
    """True when every loss component is finite.

    Otherwise ``policy="stop"`` raises a :class:`DSKDError` naming the step and the first
    non-finite component, and ``policy="skip"`` returns False (the caller skips the step). With
    several processes the verdict is agreed on by all of them, so they skip or stop together.
    """
    finite = torch.stack([torch.isfinite(v.detach().float()).all() for v in parts.values()])
    bad = (~finite).float().sum()
    if strategy is not None and getattr(strategy, "world_size", 1) > 1:
        bad = strategy.reduce(bad, reduce_op="sum")
    if float(bad) == 0:
        return True
    if policy == "skip":
        return False
    names = [k for k, ok in zip(parts, finite.tolist(), strict=True) if not ok]
    detail = ", ".join(f"{k}={float(parts[k]):g}" for k in names) or "on another process"
    raise DSKDError(
        f"Non-finite loss at step {step}: component '{names[0] if names else 'loss'}' ({detail}). "
        "Lower optim.lr, check the data of this step, or set trainer.nan_policy=skip to skip such steps "
        "(they are counted in train/skipped_steps)."
    )


class CheckpointOnSigterm(pl.Callback):
    """Write ``path`` (the run's ``last.ckpt``) when the run is stopped with SIGTERM.

    Lightning notes SIGTERM and stops at the end of the current batch on every process alike (it
    raises ``SIGTERMException`` there); this callback saves the checkpoint at that point, so that
    ``trainer.resume=auto`` continues from the step the run reached instead of the last periodic
    checkpoint. Under SLURM the requeue signal is handled by :class:`dskd.training.slurm.SlurmRequeue`.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        from lightning.pytorch.utilities import rank_zero_info
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if not isinstance(exception, SIGTERMException) or not trainer.training:
            return
        trainer.save_checkpoint(str(self.path))
        rank_zero_info(f"SIGTERM: saved {self.path} at step {trainer.global_step}.")
