"""Exact resumption: a data loader that remembers how far into the epoch it got, and the checkpoint to resume.

Lightning stores the ``state_dict`` of a stateful training loader in its checkpoints. Because
:class:`ResumableLoader` has a length, Lightning does not prefetch from it, so the number of
batches it has handed out equals the number of batches trained on. On resume the same batches
are skipped, which reproduces the uninterrupted run when the wrapped loader yields the same
batches in each epoch (a seeded, epoch-dependent order). It also deals the batches of each epoch
round-robin to the processes, so the wrapped data module need not know about ranks. A data module
that saves its own resume state and shards by rank (DSKDDataModule) is used as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from dskd.errors import ConfigError


class ResumableLoader:
    """Iterates ``loader`` (rank ``rank`` of ``world`` takes every ``world``-th batch), resumable."""

    def __init__(self, loader: Iterable, rank: int = 0, world: int = 1) -> None:
        self.loader = loader
        self.rank, self.world = rank, world
        self._done = 0  # batches of the current epoch handed out by this process
        self._skip = 0

    def __len__(self) -> int:
        return len(self.loader) // self.world  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        skip, self._skip = self._skip, 0
        self._done = 0
        n = len(self)
        for i, batch in enumerate(self.loader):
            local, turn = divmod(i, self.world)
            if local >= n:
                break
            if turn != self.rank:
                continue
            if local >= skip:
                self._done = local + 1
                yield batch
            else:
                self._done = local + 1

    def state_dict(self) -> dict[str, int]:
        return {"batches_done": self._done, "world": self.world}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("world", self.world) != self.world:
            raise ConfigError(
                f"The checkpoint was written with {state['world']} processes, this run has {self.world}; "
                "resume with the same number of devices (or start a new run: trainer.resume=never)."
            )
        self._skip = int(state["batches_done"])


class ResumableDataModule(pl.LightningDataModule):
    """Wraps a data module: its training loader becomes a :class:`ResumableLoader`."""

    def __init__(self, inner: pl.LightningDataModule) -> None:
        super().__init__()
        self.inner = inner

    def prepare_data(self) -> None:
        self.inner.prepare_data()

    def setup(self, stage: str) -> None:
        self.inner.trainer = self.trainer
        self.inner.setup(stage)

    def train_dataloader(self) -> Any:
        t, loader = self.trainer, self.inner.train_dataloader()
        try:
            len(loader)
        except TypeError:  # an unsized stream: Lightning's own (inexact) mid-epoch resume applies
            return loader
        return ResumableLoader(loader, t.global_rank, t.world_size)

    def val_dataloader(self) -> Any:
        if not has_validation(self.inner):
            return []
        return self.inner.val_dataloader()

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.inner.load_state_dict(state_dict)


def resumable(dm: pl.LightningDataModule) -> pl.LightningDataModule:
    """``dm`` itself when it saves its own resume state (like DSKDDataModule), else it wrapped."""
    if type(dm).state_dict is not pl.LightningDataModule.state_dict:
        return dm
    return ResumableDataModule(dm)


def has_validation(dm: pl.LightningDataModule) -> bool:
    return type(dm).val_dataloader is not pl.LightningDataModule.val_dataloader


def resume_checkpoint(resume: str, checkpoint_dir: Path) -> str | None:
    """The checkpoint to continue from: ``auto``: the run's last.ckpt if any; ``never``: none; else a path."""
    if resume == "never":
        return None
    last = checkpoint_dir / "last.ckpt"
    if resume == "auto":
        return str(last) if last.exists() else None
    if not Path(resume).exists():
        raise ConfigError(
            f"trainer.resume={resume!r} is not a checkpoint; use auto, never or the path of a .ckpt file."
        )
    return resume
