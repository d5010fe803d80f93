"""What a person watching a training sees: a progress bar over optimizer steps on a terminal, plain
progress lines elsewhere (a SLURM ``.out`` file, ``make reproduce > log``), and the throughput.

Throughput is Lightning's ``ThroughputMonitor`` (tokens are its *items*, the model FLOPs per batch give
the MFU on GPUs whose peak Lightning knows), keeping its validation batches out of the logs.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import RichProgressBar, ThroughputMonitor
from lightning.pytorch.utilities import rank_zero_only

from dskd.models.student import decoder_layers
from dskd.models.trunk import shared_depth

PROGRESS_KEYS = ("train/loss", "train/ce", "train/kd", "train/sense")
"""Loss components shown on a progress line (those the run logs)."""


def _total_steps(trainer: pl.Trainer) -> int:
    """Optimizer steps of the whole run: the lr schedule's total (``max_steps``, or the epochs' steps
    counted from the data), else Lightning's estimate."""
    total = getattr(trainer.lightning_module, "total_steps", None)
    return int(total) if total else int(trainer.estimated_stepping_batches)


def _clock(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class StepProgressBar(RichProgressBar):
    """Rich bar over the optimizer steps of the whole run: ``step/total`` stays right with ``max_steps``
    (Lightning's shows ``Epoch 0/-2``) and after a resume (its batch count restarts mid-epoch)."""

    @property
    def total_train_batches(self) -> int | float:
        return _total_steps(self.trainer)

    def _get_train_description(self, current_epoch: int) -> str:
        t = self.trainer
        if t.max_steps is not None and t.max_steps > 0:
            return "Training"
        return f"Epoch {current_epoch + 1}/{t.max_epochs}"

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self._update(self.train_progress_bar_id, trainer.global_step)


class ProgressLines(pl.Callback):
    """One plain line every ``every`` optimizer steps (and at the last): step/total, the loss
    components, tokens/s of all processes since the previous line, elapsed time and ETA."""

    def __init__(self, every: int, stream: TextIO | None = None) -> None:
        self.every = max(1, every)
        self.stream = stream
        self._t0 = self._t_last = 0.0
        self._first = self._printed = 0
        self._tokens: torch.Tensor | int = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = self._t_last = time.perf_counter()
        self._first = self._printed = trainer.global_step
        self._tokens = 0

    @rank_zero_only
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._tokens = self._tokens + batch["attention_mask"].sum()  # stays on the device until printed
        step, total = trainer.global_step, _total_steps(trainer)
        if step == self._printed or (step % self.every and step < total):
            return
        now = time.perf_counter()
        tokens_per_s = float(self._tokens) * trainer.world_size / max(now - self._t_last, 1e-9)
        eta = (now - self._t0) / max(step - self._first, 1) * max(total - step, 0)
        metrics = trainer.callback_metrics
        losses = " ".join(f"{k.split('/')[1]} {float(metrics[k]):.4g}" for k in PROGRESS_KEYS if k in metrics)
        print(
            f"[train] step {step}/{total} ({100 * step // max(total, 1)}%) | {losses} | "
            f"{tokens_per_s:,.0f} tok/s | elapsed {_clock(now - self._t0)} | ETA {_clock(eta)}",
            file=self.stream or sys.stdout,
            flush=True,
        )
        self._t_last, self._tokens, self._printed = now, 0, step


class TokenThroughput(ThroughputMonitor):
    """``ThroughputMonitor`` counting non-padding tokens as items, with ``flops_per_token`` x the batch's
    (padded) tokens as the FLOPs of a batch. Validation batches are timed (so that validation does not
    count as training time) but not logged: their counters would be logged at the validation's own
    batch numbers, which are not training steps."""

    def __init__(self, flops_per_token: int, window: int) -> None:
        super().__init__(
            batch_size_fn=lambda batch: int(batch["input_ids"].shape[0]),
            length_fn=lambda batch: int(batch["attention_mask"].sum()),
            window_size=max(2, window),
        )
        self.flops_per_token = flops_per_token

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        pl_module.flops_per_batch = None  # set per training batch; a validation-only run has none
        super().setup(trainer, pl_module, stage)

    @rank_zero_only
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, *args: Any
    ) -> None:
        pl_module.flops_per_batch = self.flops_per_token * batch["input_ids"].numel()
        super().on_train_batch_end(trainer, pl_module, outputs, batch, *args)

    @rank_zero_only
    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        *args: Any,
        **kw: Any,
    ) -> None:
        if not trainer.sanity_checking:
            self._update(trainer, pl_module, batch, 0)


def _numel(module: torch.nn.Module | None, trainable: bool) -> int:
    if module is None:
        return 0
    # ZeRO-3 keeps the full size of a partitioned parameter in ds_numel
    return sum(getattr(p, "ds_numel", p.numel()) for p in module.parameters() if p.requires_grad == trainable)


def flops_per_token(student: torch.nn.Module, teacher: torch.nn.Module | None, projection=None) -> int:
    """Model FLOPs of one training token, approximately: 6 per trainable weight (forward and backward),
    2 per frozen student weight and per teacher weight (forward only; none for a cached teacher), but
    none for the student's layers of a trunk shared with the teacher (they run once, as the teacher's)."""
    trainable = _numel(student, True) + _numel(projection, True)
    depth = shared_depth(student, teacher)
    trunk = decoder_layers(student)[:depth] if depth else None
    frozen = _numel(student, False) - _numel(trunk, False)
    return 6 * trainable + 2 * (frozen + _numel(teacher, False) + _numel(teacher, True))
