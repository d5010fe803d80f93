"""The learning-rate schedule: linear warm-up, then cosine decay to 0 over the run's optimizer steps.

Lightning cannot count the steps of an epoch-based run on streamed data (an iterable dataset has no
length, so ``estimated_stepping_batches`` is -1 or infinite). The total is therefore taken from, in
order: ``trainer.max_steps``; ``optim.total_steps``; the data module's own count of training batches
per rank in each epoch (``batches_per_epoch``), divided by gradient accumulation, summed over the
epochs; or
Lightning's estimate when it is finite. A run whose total cannot be known is refused before it
trains (docs/training.md, "Learning-rate schedule").
"""

from __future__ import annotations

import math
from collections.abc import Callable

import lightning.pytorch as pl

from dskd.core.errors import ConfigError
from dskd.training.config import OptimConfig


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    """The lr factor at optimizer step ``s``: ``s / warmup`` during warm-up, then a half cosine from 1
    to 0 at ``total``, and 0 after it (never rising again if a run takes a few more steps)."""

    def factor(step: int) -> float:
        if step < warmup:
            return step / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def total_optimizer_steps(trainer: pl.Trainer, optim: OptimConfig) -> int:
    """Optimizer steps the schedule spans for this run (see the module doc)."""
    if trainer.max_steps is not None and trainer.max_steps > 0:
        return int(trainer.max_steps)
    if optim.total_steps is not None:
        return int(optim.total_steps)
    epochs = trainer.max_epochs
    count = getattr(trainer.datamodule, "batches_per_epoch", None)
    if count is not None and epochs is not None and epochs > 0:
        per_epoch = [
            math.ceil(count(trainer.world_size, e) / trainer.accumulate_grad_batches) for e in range(epochs)
        ]
        if min(per_epoch) < 1:
            raise ConfigError(
                "The training data gives no batch per rank and epoch; add data (data.train) or use fewer "
                "processes (trainer.devices, trainer.num_nodes)."
            )
        return sum(per_epoch)
    estimated = trainer.estimated_stepping_batches
    if math.isfinite(estimated) and estimated > 0:
        return int(estimated)
    raise ConfigError(
        "The number of optimizer steps of this run cannot be known (epoch-based training on data of "
        "unknown length), so the warm-up and cosine schedule would be wrong. Set trainer.max_steps, or "
        "optim.total_steps to the run's optimizer steps."
    )
