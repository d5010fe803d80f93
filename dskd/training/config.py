"""Config of optimisation, the Lightning trainer and logging."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dskd.config.ranges import ranged


@dataclass
class OptimConfig:
    lr: float = ranged(5e-5, gt=0)
    """Learning rate per device (scaled by world size when `scale_lr` is on)."""
    scale_lr: bool = True
    """Multiply lr by the world size (paper recipe)."""
    weight_decay: float = ranged(1e-3, ge=0)
    """AdamW weight decay (paper: 1e-3)."""
    warmup_ratio: float = ranged(0.1, ge=0, le=1)
    """Fraction of steps of linear warm-up before the cosine decay."""
    total_steps: int | None = ranged(None, ge=1)
    """Optimizer steps the warm-up + cosine schedule spans in an epoch-based run (max_steps: -1);
    null: counted from the training data (the DSKD data module) or, for other data, Lightning's
    estimate; a run whose total cannot be known is refused (docs/training.md)."""
    grad_clip: float | None = ranged(1.0, gt=0)
    """Gradient-norm clipping (None: off)."""


@dataclass
class TrainerConfig:
    strategy: Literal["auto", "ddp", "fsdp", "deepspeed_stage_2", "deepspeed_stage_3"] = "auto"
    """auto | ddp | fsdp | deepspeed_stage_2 | deepspeed_stage_3."""
    precision: Literal["32-true", "bf16-mixed", "bf16-true", "16-mixed"] = "32-true"
    """32-true | bf16-mixed | bf16-true | 16-mixed."""
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    """auto | cpu | gpu (Lightning accelerator)."""
    devices: str = "auto"
    """Devices per node ("auto", a count, or a list)."""
    num_nodes: int = ranged(1, ge=1)
    """Nodes of a multi-node run (set by `dskd slurm submit`)."""
    max_steps: int = ranged(-1, ge=1, also=(-1,))
    """Stop after this many optimizer steps (-1: run `max_epochs`)."""
    max_epochs: int = ranged(2, ge=1)
    """Epochs when max_steps is -1 (paper: 2)."""
    accumulate_grad_batches: int = ranged(1, ge=1)
    """Batches per optimizer step; the step's gradient is the mean of theirs (each loss divided by this)."""
    log_every_n_steps: int = ranged(10, ge=1)
    """Steps between logged training metrics."""
    val_check_interval: float | None = ranged(None, ge=1)
    """Steps between validations (None: once per epoch)."""
    limit_val_batches: int | None = ranged(50, ge=0)
    """Validation batches per validation (None: the whole validation set)."""
    checkpoint_every_n_steps: int = ranged(100, ge=1)
    """Steps between checkpoints (last.ckpt is always kept for resume)."""
    checkpoint_weights: Literal["trainable", "full"] = "trainable"
    """trainable: checkpoints hold the trainable weights and the optimizer state, not the student's frozen
    weights (copies of the teacher's, restored from it on resume and export) | full: every weight.
    DeepSpeed writes its own (full) checkpoint folders."""
    nan_policy: Literal["stop", "skip"] = "stop"
    """stop (raise naming step and component) | skip (skip the step and count it)."""
    max_skipped_steps: int = ranged(100, ge=0)
    """nan_policy=skip: stop with an error once more steps than this were skipped in all."""
    max_consecutive_skips: int = ranged(10, ge=0)
    """nan_policy=skip: stop with an error once more consecutive steps than this were skipped."""
    resume: str = "auto"
    """auto (continue from the run's last usable checkpoint) | never (start over) | a checkpoint path;
    a resumed run must have the checkpoint's config, but for dskd.training.resume.RESUMABLE_KEYS."""


@dataclass
class LoggingConfig:
    wandb: bool = True
    """Log to W&B (offline unless WANDB_API_KEY is set or WANDB_MODE=online)."""
    project: str = "dskd"
    """W&B project."""
    tags: list[str] = field(default_factory=list)
    """Extra W&B tags (method and switches are added automatically)."""
    artifacts: Literal["reference", "upload", "off"] = "reference"
    """W&B artifacts (lexicon, sense dictionary, exported student, evaluation results) with lineage:
    reference (file:// references with checksums; nothing copied) | upload (copy the files) | off."""
    csv: bool = True
    """Always write metrics.csv (readable without W&B)."""
    example_ids: bool = False
    """Write the id of every training sequence each process takes to <run>/examples/rank-R.tsv
    (epoch, step, hash of its tokens), e.g. to check that the ranks saw disjoint data."""
