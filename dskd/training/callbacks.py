"""Training guards: the non-finite loss guard and its limits, the empty-data guard and the checkpoint
written when a run is stopped with SIGTERM or Ctrl-C."""

from __future__ import annotations

import math
import os
import signal
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from dskd.core.errors import DSKDError
from dskd.training.checkpoints import save_for_resume
from dskd.training.config import TrainerConfig


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


def check_skip_limits(
    total: int,
    consecutive: int,
    limits: TrainerConfig,
    params: Iterable[tuple[str, torch.Tensor]],
    step: int,
) -> None:
    """Stop a ``nan_policy=skip`` run that no longer trains: a parameter is not finite, or more steps
    than ``limits.max_consecutive_skips`` in a row or ``limits.max_skipped_steps`` in all were skipped."""
    bad = next((name for name, p in params if not torch.isfinite(p.detach()).all()), None)
    advice = "lower optim.lr or check the data, and restart (trainer.resume=never or an earlier checkpoint)."
    if bad is not None:
        raise DSKDError(
            f"Step {step}: the parameter {bad} is no longer finite, the run has diverged; {advice}"
        )
    for count, limit, key in (
        (consecutive, limits.max_consecutive_skips, "max_consecutive_skips"),
        (total, limits.max_skipped_steps, "max_skipped_steps"),
    ):
        if count > limit:
            raise DSKDError(
                f"Step {step}: {count} steps skipped for a non-finite loss (trainer.{key}={limit}); the run "
                f"is not training: {advice}"
            )


def check_run_end(steps: int, last_skipped: bool, metrics: dict[str, float], policy: str) -> None:
    """Refuse to finish (and so to export) a run of ``steps`` steps whose last step was skipped for a
    non-finite loss or whose end-of-run validation ``metrics`` (``val/...``) are not finite."""
    advice = (
        "the student is not exported; lower optim.lr or check the data, and restart "
        "(trainer.resume=never or an earlier checkpoint in checkpoints/)."
    )
    if last_skipped:
        raise DSKDError(
            f"Step {steps - 1}, the last step of the run, was skipped for a non-finite loss "
            f"(trainer.nan_policy={policy}): the run ended diverged; {advice}"
        )
    bad = next((k for k, v in sorted(metrics.items()) if k.startswith("val/") and not math.isfinite(v)), None)
    if bad is not None:
        raise DSKDError(
            f"The end-of-run validation after step {steps - 1} is not finite ({bad}={metrics[bad]:g}, "
            f"trainer.nan_policy={policy}): the student computes non-finite values; {advice}"
        )


class EmptyDataGuard(pl.Callback):
    """Stop with a one-line error when training has no batch: a training loader of length 0, or an
    epoch that yields no batch (which Lightning would otherwise repeat forever under max_steps).

    The first epoch of a resumed run may legitimately be empty (the checkpoint was written after its
    last batch) and is exempt.
    """

    def __init__(self) -> None:
        self._batches = 0
        self._resumed_epoch = False

    def _fail(self, trainer: pl.Trainer) -> None:
        raise DSKDError(
            f"Training epoch {trainer.current_epoch} has no batch: the training data holds no usable "
            "document (empty or blank files, documents shorter than two tokens, or all of them held out "
            "for validation by data.val_fraction). Check data.train and data.val_fraction."
        )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._resumed_epoch = trainer.ckpt_path is not None
        if trainer.num_training_batches == 0:
            self._fail(trainer)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._batches = 0

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx
    ) -> None:
        self._batches += 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._batches == 0 and not self._resumed_epoch:
            self._fail(trainer)
        self._resumed_epoch = False


class CheckpointOnInterrupt(pl.Callback):
    """Write ``path`` (the run's ``last.ckpt``) when the run is stopped with SIGTERM or SIGINT (Ctrl-C).

    Lightning notes SIGTERM and stops at the end of the current batch on every process alike (it
    raises ``SIGTERMException`` there); while training, a first SIGINT is passed on as SIGTERM, so
    Ctrl-C stops the same way (a second Ctrl-C interrupts at once). This callback saves the
    checkpoint at that point, so that ``trainer.resume=auto`` continues from the step the run
    reached instead of the last periodic checkpoint; ``signal`` tells which signal stopped the run
    and ``saved`` whether the checkpoint was written. Under SLURM the requeue signal is handled by
    :class:`dskd.training.slurm.SlurmRequeue`.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.signal = signal.SIGTERM
        self.saved = False
        self._previous: Any = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: object) -> None:
        self.signal = signal.SIGINT
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler: stop after this batch

    def _restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._restore()  # Lightning calls teardown hooks only after a normal end
        if not isinstance(exception, SIGTERMException) or not trainer.training:
            return
        save_for_resume(trainer, self.path)
        self.saved = True
        rank_zero_info(f"{self.signal.name}: saved {self.path} at step {trainer.global_step}.")
