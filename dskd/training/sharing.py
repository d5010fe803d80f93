"""Whether a run shares the trunk (``student.share_trunk``, :mod:`dskd.models.trunk`), and if not,
the one-line reason; read by the training stage and by the memory estimate alike."""

from __future__ import annotations

import torch

from dskd.models.config import StudentConfig
from dskd.training.config import TrainerConfig

SHARING_STRATEGIES = ("auto", "ddp", "fsdp")
"""FSDP leaves the shared modules out of its units (``ignored_modules``: not flattened, sharded or
cast); DeepSpeed wraps every module of the LightningModule (ZeRO-3 shards them, every stage casts
them): shared, those would be the teacher's own, which the teacher needs whole."""
NO_AUTOCAST = {"32-true": torch.float32, "bf16-true": torch.bfloat16}
"""Precisions without autocast, and the dtype the student computes in under each."""


def trunk_off_reason(
    student: StudentConfig, trainer: TrainerConfig, teacher_dtype: torch.dtype
) -> str | None:
    """Why a run with ``student.share_trunk`` keeps copies of the teacher's frozen modules (None:
    it shares them); ``teacher_dtype`` is the dtype the teacher runs in."""
    if student.kind != "truncated":
        return f"student.kind={student.kind} has no layers of the teacher"
    if student.trainable_top_layers >= student.num_layers:
        return f"all {student.num_layers} layers of the student train: none is frozen to share"
    if trainer.strategy not in SHARING_STRATEGIES:
        return (
            f"trainer.strategy={trainer.strategy} wraps the student's modules (shards or casts them), "
            "which shared would be the teacher's own"
        )
    compute = NO_AUTOCAST.get(trainer.precision)
    if compute is not None and compute != teacher_dtype:
        name = str(teacher_dtype).removeprefix("torch.")
        return (
            f"trainer.precision={trainer.precision} has no autocast, so the student's layers cannot run on "
            f"the teacher's {name} modules (a -mixed precision or a matching teacher.dtype shares them)"
        )
    return None


def shares_trunk(student: StudentConfig, trainer: TrainerConfig, teacher_dtype: torch.dtype) -> bool:
    """Whether the run shares the trunk: ``student.share_trunk`` where :func:`trunk_off_reason` is None."""
    return student.share_trunk and trunk_off_reason(student, trainer, teacher_dtype) is None
