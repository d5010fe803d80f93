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

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import yaml

from dskd.core.errors import ConfigError
from dskd.training.checkpoints import previous_path
from dskd.training.slurm import resume_path


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


RESUMABLE_KEYS = (
    "name",
    "preset",
    "runs_dir",
    "trainer.resume",
    "trainer.max_steps",
    "trainer.max_epochs",
    "optim.total_steps",
    "trainer.log_every_n_steps",
    "trainer.val_check_interval",
    "trainer.limit_val_batches",
    "trainer.checkpoint_every_n_steps",
    "trainer.checkpoint_weights",
    "trainer.nan_policy",
    "trainer.max_skipped_steps",
    "trainer.max_consecutive_skips",
    "logging",
    "eval",
)
"""Config keys (and sections) a resumed run may change: labels, where runs go, how long to train (and
the schedule's length), how often to log, validate and checkpoint (and which weights checkpoints
hold), the NaN guard, logging and
evaluation. Every other key is part of the experiment's fingerprint."""


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}."))
    return out


def experiment_keys(config_yaml: str) -> dict[str, Any]:
    """The flattened config of ``config_yaml`` without the :data:`RESUMABLE_KEYS`."""
    flat = {k.rstrip("."): v for k, v in _flat(yaml.safe_load(config_yaml)).items()}
    return {k: v for k, v in flat.items() if not any(k == r or k.startswith(f"{r}.") for r in RESUMABLE_KEYS)}


def fingerprint(config_yaml: str) -> str:
    """A short hash of the experiment a config describes (its keys other than :data:`RESUMABLE_KEYS`)."""
    text = json.dumps(experiment_keys(config_yaml), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_same_experiment(config_yaml: str, checkpoint: dict[str, Any], path: Path) -> None:
    """Refuse to resume ``checkpoint`` (read from ``path``) under a config of another experiment."""
    saved = checkpoint["dskd"].get("config") if isinstance(checkpoint["dskd"], dict) else None
    if not isinstance(saved, str):
        raise ConfigError(
            f"{path} records no experiment config, so it cannot be checked against this run's; resume from "
            "a checkpoint written by `dskd train`, or start over with trainer.resume=never."
        )
    mine = fingerprint(config_yaml)
    theirs = checkpoint["dskd"].get("fingerprint") or fingerprint(saved)
    if mine == theirs:
        return
    old, new = experiment_keys(saved), experiment_keys(config_yaml)
    changed = [k for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]
    shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:5])
    more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
    raise ConfigError(
        f"{path} belongs to another experiment (config fingerprint {theirs}, this run's {mine}; changed: "
        f"{shown or 'keys'}{more}). Give this run its own folder (another name, seed or runs_dir), or "
        "start over in this folder with trainer.resume=never."
    )


def resume_candidates(resume: str, checkpoint_dir: Path) -> list[Path]:
    """Checkpoints to continue from, preferred first: ``auto``: the run's newest checkpoint
    (``last.ckpt`` or a SLURM ``hpc_ckpt_N.ckpt``), then ``last.ckpt`` and the one it replaced;
    ``never``: none; else the path given."""
    if resume == "never":
        return []
    last = checkpoint_dir / "last.ckpt"
    if resume == "auto":
        newest = resume_path(checkpoint_dir, str(last) if last.exists() else None)
        return [Path(p) for p in (newest, last, previous_path(last)) if p is not None]
    if not Path(resume).exists():
        raise ConfigError(
            f"trainer.resume={resume!r} is not a checkpoint; use auto, never or the path of a .ckpt file."
        )
    return [Path(resume)]
