"""Crash-safe, trusted checkpoints: atomic saves on any filesystem, safe loading, resume with fallback.

Saving (:class:`AtomicCheckpointIO`): the checkpoint is written to a staging file in the
destination folder (``.NAME.*.tmp``), flushed to disk (fsync) and renamed onto ``NAME``; the
checkpoint it replaces is first renamed to ``NAME`` with ``.prev`` before the suffix
(``last.prev.ckpt``), where it stays as a fallback until the next save. A process killed at any
point therefore leaves a complete checkpoint: the new one, or the previous one. Renames within one
folder are atomic on any filesystem (Lightning's own save stages the file in ``$TMPDIR`` and copies
it when that is another filesystem, which a kill leaves half-written). Staging files a killed
process left behind are removed by the next run of the same folder (:func:`remove_staging`).

Loading (:func:`read_checkpoint`) uses ``torch.load(weights_only=True)``: tensors and plain Python
values only, so a crafted checkpoint cannot run code; it is refused with a one-line error.

Resuming (:func:`pick_checkpoint`) reads each candidate and takes the first usable one, with a
one-line note for each one passed over. A checkpoint written after the last batch of a finished
epoch resumes at the next epoch's first batch (:class:`ResumeAtEpochStart`).

What the training module writes into its checkpoints and checks when it loads one
(:class:`RunCheckpoint`): the run's record under ``"dskd"`` (config, fingerprint, student config,
tokenizer, counters, the teacher's generation config) and, in a trainable-only checkpoint, which
frozen weights were left out and which teacher and dtype they are copied from.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import nn

from dskd.core.errors import ConfigError
from dskd.core.io import atomic_path
from dskd.core.trusted_load import CheckpointError, read_checkpoint
from dskd.models.config import TeacherConfig
from dskd.models.loading import resolve_dtype
from dskd.training.config import TrainerConfig

log = logging.getLogger(__name__)

STAGING_GLOB = ".*.ckpt.*.tmp"
"""Staging files of :class:`AtomicCheckpointIO` (``dskd.io.atomic_path`` names them ``.NAME.*.tmp``)."""


def previous_path(path: str | os.PathLike) -> Path:
    """Where the checkpoint ``path`` replaces is kept: ``last.ckpt`` -> ``last.prev.ckpt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _os_error(error: BaseException | None) -> OSError | None:
    """The OSError ``error`` is or was raised while handling (None if there is none)."""
    while error is not None and not isinstance(error, OSError):
        error = error.__cause__ or error.__context__
    return error


def save_atomic(checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    """``torch.save`` ``checkpoint`` to ``path`` crash-safely (see the module docstring)."""
    path = Path(path)
    if path.exists():  # at most two checkpoints on disk, also while saving: the current one and the new
        previous_path(path).unlink(missing_ok=True)
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            if path.exists():
                os.replace(path, previous_path(path))
        _fsync_dir(path.parent)
    except (OSError, RuntimeError) as e:  # torch's zip writer turns a failed write into a RuntimeError
        cause = _os_error(e)
        if cause is None:
            raise
        raise CheckpointError(
            f"Could not write the checkpoint {path} ({cause.strerror or cause}); the checkpoints already in "
            f"{path.parent} are intact. Free disk space (or fix the folder's permissions) and run the same "
            "command again to resume."
        ) from e


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with crash-safe saves and trusted (``weights_only``) loads."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any | None = None
    ) -> None:
        save_atomic(checkpoint, path)

    def load_checkpoint(
        self, path: str | os.PathLike, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return read_checkpoint(path)


def pick_checkpoint(candidates: list[Path]) -> tuple[Path, dict[str, Any] | None] | None:
    """The first of ``candidates`` (preferred first) that reads as a checkpoint, with its contents.

    Missing files are passed over silently, unusable ones with a one-line note; None when no
    candidate exists; :class:`CheckpointError` when some exist but none is usable. A DeepSpeed
    checkpoint folder is taken as it is (its contents None): DeepSpeed reads it itself.
    """
    problems: list[str] = []
    for path in dict.fromkeys(candidates):  # in order, without repeats
        if not path.exists():
            continue
        try:
            ckpt = None if path.is_dir() else read_checkpoint(path, mmap=True)
        except CheckpointError as e:
            problems.append(str(e))
            continue
        for problem in problems:
            log.warning("note: %s Resuming from %s instead.", problem, path)
        return path, ckpt
    if problems:
        raise CheckpointError(
            f"{' '.join(problems)} No usable checkpoint is left to resume from; start over in this folder "
            "with trainer.resume=never, or use another run folder."
        )
    return None


def remove_staging(*folders: Path) -> list[Path]:
    """Delete the staging files of checkpoint saves that were killed; returns what was deleted."""
    removed = [p for folder in folders for p in folder.glob(STAGING_GLOB) if p.is_file()]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def finished_epoch(checkpoint: dict[str, Any]) -> bool:
    """Whether ``checkpoint`` was written after the last batch of a finished epoch (a run stopped by
    ``trainer.max_steps`` on an epoch's last batch, saved when the fit ended), not inside an epoch
    (Lightning's own on-batch-end save, which it handles itself)."""
    loop = checkpoint.get("loops", {}).get("fit_loop") or {}
    if "epoch_loop.batch_progress" not in loop:
        return False
    batches, epochs = loop["epoch_loop.batch_progress"], loop["epoch_progress"]["current"]
    done = len(set(epochs.values())) == 1 and len(set(batches["current"].values())) == 1
    return bool(batches.get("is_last_batch")) and done


class ResumeAtEpochStart(pl.Callback):
    """Resume a checkpoint written after an epoch's last batch (:func:`finished_epoch`) at the start of
    the next epoch, as a run in one go goes on.

    Under ``max_steps`` Lightning restores that state as an epoch it must finish: it runs it without
    taking a batch, so the training loader's saved position (the finished epoch's count) is applied
    to the next epoch, which then yields nothing ("Training epoch 2 has no batch"; a data module that
    counts epochs itself skips one), and a sized loader's first step goes to validation it thinks it
    owes, which moves the logged step one on. Here the loaders' saved positions are dropped before
    Lightning restores its loops, and its epoch loop starts the next epoch afresh.
    """

    def __init__(self) -> None:
        self._fresh_epoch = False

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint) -> None:
        self._fresh_epoch = finished_epoch(checkpoint)
        if self._fresh_epoch:
            checkpoint["loops"]["fit_loop"].get("state_dict", {}).pop("combined_loader", None)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._fresh_epoch:  # the finished epoch is over: no restart stage, counters from zero
            trainer.fit_loop.epoch_loop.restarting = False
        self._fresh_epoch = False


def frozen_state_keys(module: nn.Module) -> frozenset[str]:
    """State-dict keys of the frozen parameters of ``module`` (a tied weight under each of its names)."""
    return frozenset(n for n, p in module.named_parameters(remove_duplicate=False) if not p.requires_grad)


class RunCheckpoint:
    """What :class:`~dskd.training.module.DistillationModule` adds to its checkpoints and checks in
    them (see the module docstring), for ``module`` as it is built (its frozen and all state keys)."""

    def __init__(self, module: nn.Module, teacher: TeacherConfig, trainer: TrainerConfig) -> None:
        self.frozen_keys = frozen_state_keys(module)
        """State-dict keys of the student's frozen weights (left out of trainable-only checkpoints)."""
        self.state_keys = frozenset(module.state_dict())
        self.frozen_dtype = str(resolve_dtype(teacher.dtype)).removeprefix("torch.")
        """The dtype the student's frozen weights were copied from the teacher in (as it was loaded)."""
        self.teacher = teacher
        # DeepSpeed saves its own sharded folders from the engine, not this state dict: nothing to drop
        self.trainable_only = trainer.checkpoint_weights == "trainable" and not trainer.strategy.startswith(
            "deepspeed"
        )

    def save(self, checkpoint: dict[str, Any], record: dict[str, Any]) -> None:
        """Add the run's ``record`` to ``checkpoint``; leave the frozen weights out if trainable-only."""
        checkpoint["dskd"] = record
        if not self.trainable_only:
            return
        state = checkpoint.get("state_dict", {})
        for key in self.frozen_keys:
            state.pop(key, None)
        record["frozen"] = {
            "keys": sorted(self.frozen_keys),
            "teacher": self.teacher.model,
            "revision": self.teacher.revision,
            "dtype": self.frozen_dtype,
        }

    def load(self, checkpoint: dict[str, Any]) -> dict[str, Any]:
        """The run's record of ``checkpoint``, after checking it holds every weight but, in a
        trainable-only one, exactly this student's frozen weights (which the student keeps: the
        teacher's copies, built from the same teacher in the same dtype)."""
        record = checkpoint.get("dskd", {})
        frozen = record.get("frozen")
        left_out = set(frozen["keys"]) if frozen else set()
        if frozen and (left_out != self.frozen_keys or frozen["dtype"] != self.frozen_dtype):
            raise ConfigError(
                f"The checkpoint leaves out {len(left_out)} frozen weights copied from the teacher in "
                f"{frozen['dtype']}; this run's student freezes {len(self.frozen_keys)}, copied in "
                f"{self.frozen_dtype}. Resume with the student and teacher.dtype the checkpoint was "
                "written with."
            )
        if "state_dict" in checkpoint:  # not yet loaded (FSDP loads it before this hook)
            held = set(checkpoint["state_dict"])
            wrong = (self.state_keys - left_out - held) | (held - self.state_keys)
            if wrong:
                raise ConfigError(
                    f"The checkpoint's weights do not fit this model (missing or unexpected: "
                    f"{sorted(wrong)[:3]}); it is damaged or from another experiment."
                )
        return record


def save_for_resume(trainer: pl.Trainer, path: str | os.PathLike) -> None:
    """Write the whole checkpoint (weights, optimizer, loop state: what a resume reads) to ``path``.

    ``weights_only=False`` is Lightning's *save* option "more than the weights", given explicitly (it
    warns when unset); nothing is unpickled here. Every checkpoint is *loaded* with ``weights_only=True``
    (:func:`dskd.core.trusted_load.read_checkpoint`, and ``trainer.fit(..., weights_only=True)``)."""
    trainer.save_checkpoint(str(path), weights_only=False)
