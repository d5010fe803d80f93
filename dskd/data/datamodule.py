"""`DSKDDataModule`: the training and validation streams of an experiment config, with exact resume.

Resume state (saved in Lightning checkpoints through ``state_dict``): the epoch, the batches consumed
per shard (counted in ``on_before_batch_transfer``, i.e. when the training loop takes a batch, not when
the loader prefetches it) and each rank's worker rotation, so that a resumed loader continues every
shard where it stopped and in the same worker order. The number of ranks and workers must stay the
same across a resume. Validation holds out documents by a hash of their text (``data.val_fraction``)
unless ``data.val`` names its own sources.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from dskd.corpora.sources import iter_documents
from dskd.data.sampling import NeighbourTable, max_positions_for
from dskd.data.stream import META_KEYS, PackedStream, StreamSpec
from dskd.errors import ConfigError


class _StreamLoader(DataLoader):
    """A DataLoader over a :class:`PackedStream` that lets its owner prepare the stream before each pass.

    ``lockstep``: under torch.distributed, end the pass on every rank as soon as one rank's shard is
    exhausted (see :func:`lockstep`).
    """

    def __init__(self, stream: PackedStream, num_workers: int, before_iter, lockstep: bool = False):
        super().__init__(stream, batch_size=None, num_workers=num_workers)
        self._before_iter = before_iter
        self._lockstep = lockstep

    def __iter__(self):
        self._before_iter(self.dataset)
        batches = super().__iter__()
        return lockstep(batches) if self._lockstep else batches


def lockstep(batches: Iterator[Any]) -> Iterator[Any]:
    """Yield ``batches`` while every process of the default group still has one.

    Shards of different ranks can end a few batches apart; a rank that kept training alone would
    wait forever in the gradient all-reduce. One tiny all-reduce (MIN) per batch lets all ranks stop
    at the shortest shard. Without torch.distributed (or with one process) the batches pass through.
    """
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        yield from batches
        return
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    while True:
        batch = next(batches, None)
        have = torch.tensor([0 if batch is None else 1], device=device)
        dist.all_reduce(have, op=dist.ReduceOp.MIN)
        if not have.item():
            return
        yield batch


class DSKDDataModule(L.LightningDataModule):
    def __init__(self, cfg, tokenizer=None, lexicon=None, sense_keys: np.ndarray | None = None):
        """``cfg``: ExperimentConfig; ``tokenizer`` default: the teacher's; ``lexicon`` default: loaded from
        ``cfg.lexicon.output_dir`` when the method needs it (dskd); ``sense_keys``: the keys the sense
        dictionary has senses for (needed by ``data.neighbours_with_senses``)."""
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.lexicon = lexicon
        self.sense_keys = sense_keys
        self._table: NeighbourTable | None = None
        self._batches_per_epoch: dict[tuple[int, int], int] = {}
        self.teacher_targets: dict[str, list[int]] | None = None
        self._consumed: dict[int, int] = {}
        self._epoch = 0
        self._taken = 0
        self._rotation_start = 0
        self._resume: dict[str, Any] | None = None

    # ------------------------------------------------------------ setup
    def _rank_world(self) -> tuple[int, int]:
        t = self.trainer
        return (t.global_rank, t.world_size) if t is not None else (0, 1)

    def _ensure_tokenizer(self):
        if self.tokenizer is None:
            from dskd.models.loading import load_tokenizer

            self.tokenizer = load_tokenizer(self.cfg.teacher.model, self.cfg.teacher.revision)
        return self.tokenizer

    def _prompts(self) -> list[str]:
        sources = [*self.cfg.data.train, *self.cfg.data.val]
        docs = iter_documents(sources, self._ensure_tokenizer(), seed=self.cfg.seed)
        return [doc.meta.get("prompt", doc.text) for doc in docs]

    def _targets(self, build: bool) -> dict[str, list[int]]:
        from dskd.data.targets import load_or_build
        from dskd.models.loading import load_causal_lm, tokenizer_fingerprint

        tok, t = self._ensure_tokenizer(), self.cfg.teacher

        def load_teacher():
            if not build:
                raise ConfigError("Teacher targets are not cached yet; call prepare_data() first.")
            return load_causal_lm(t.model, t.dtype, t.revision)

        return load_or_build(
            self.cfg.data.targets_cache_dir,
            self._prompts(),
            f"{t.model}@{t.revision}",
            tokenizer_fingerprint(tok),
            self.cfg.data.teacher_new_tokens,
            load_teacher,
            tok,
        )

    def prepare_data(self) -> None:
        """Teacher targets pass (targets=teacher): computed once and cached on disk."""
        if self.cfg.data.targets == "teacher":
            self._targets(build=True)

    def setup(self, stage: str | None = None) -> None:
        tok = self._ensure_tokenizer()
        if self.lexicon is None and self.cfg.method == "dskd":
            from dskd.lexicon import Lexicon

            self.lexicon = Lexicon.load(self.cfg.lexicon.output_dir)
        if self.lexicon is not None:
            self.lexicon.check_tokenizer(tok)
        if self.cfg.data.targets == "teacher" and self.teacher_targets is None:
            self.teacher_targets = self._targets(build=False)

    def _neighbour_table(self) -> NeighbourTable:
        """The lexicon's neighbours; with data.neighbours_with_senses only those the sense dictionary has."""
        if self._table is None:
            self._table = self._read_neighbour_table()
        return self._table

    def _read_neighbour_table(self) -> NeighbourTable:
        table = NeighbourTable.from_lexicon(self.lexicon)
        if not self.cfg.data.neighbours_with_senses:
            return table
        if self.sense_keys is None:
            raise ConfigError(
                "data.neighbours_with_senses needs the sense dictionary's keys; `dskd train` passes them "
                "(DSKDDataModule(..., sense_keys=dictionary.key_ids.numpy()) when built by hand)."
            )
        keys = np.asarray(self.sense_keys, dtype=np.int64)
        has_senses = np.zeros(int(keys.max(initial=-1)) + 1, dtype=bool)
        has_senses[keys] = True
        return table.with_senses_only(has_senses)

    # ------------------------------------------------------------ streams
    def spec(self, train: bool) -> StreamSpec:
        d = self.cfg.data
        own_val = bool(d.val)
        table = self._neighbour_table() if self.lexicon is not None else None
        return StreamSpec(
            sources=list(d.train if train or not own_val else d.val),
            seq_len=d.seq_len,
            batch_size=d.batch_size,
            seed=self.cfg.seed,
            pack=d.pack,
            shuffle_buffer=d.shuffle_buffer if train else 0,
            holdout="none" if own_val else ("train" if train else "val"),
            val_fraction=d.val_fraction,
            table=table,
            width=max_positions_for(d.seq_len, d.max_sense_positions, d.sense_fraction),
            max_positions=d.max_sense_positions,
            fraction=d.sense_fraction,
            max_neighbours=d.max_neighbours,
            aligned=d.sense_aligned_neighbours,
            teacher_targets=self.teacher_targets,
        )

    def stream(self, train: bool) -> PackedStream:
        rank, world = self._rank_world()
        return PackedStream(self.spec(train), self._ensure_tokenizer(), rank, world)

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else self._epoch

    def _before_train_iter(self, stream: PackedStream) -> None:
        epoch = self._current_epoch()
        stream.epoch = epoch
        stream.skip, stream.rotation = {}, 0
        if self._resume is not None and self._resume["epoch"] == epoch:
            stream.skip = dict(self._resume["consumed"])
            stream.rotation = self._resume["rotation"]
        self._resume = None
        self._epoch, self._consumed = epoch, dict(stream.skip)
        self._taken, self._rotation_start = 0, stream.rotation

    def train_dataloader(self) -> DataLoader:
        workers = self.cfg.data.num_workers
        return _StreamLoader(self.stream(True), workers, self._before_train_iter, lockstep=True)

    def batches_per_epoch(self, world_size: int, epoch: int) -> int:
        """Training batches of ``epoch`` per rank: the shortest rank's count (ranks stop together, see
        :func:`lockstep`). Counted by tokenizing the training data in that epoch's order (packing
        after each epoch's shuffle can give a different count), once per world size and epoch."""
        key = (world_size, epoch)
        if key not in self._batches_per_epoch:
            stream, workers = self.stream(True), max(1, self.cfg.data.num_workers)
            stream.epoch = epoch
            shards = [stream.count_batches(s, world_size * workers) for s in range(world_size * workers)]
            per_rank = [sum(shards[r * workers : (r + 1) * workers]) for r in range(world_size)]
            self._batches_per_epoch[key] = min(per_rank)
        return self._batches_per_epoch[key]

    def val_dataloader(self) -> DataLoader:
        return _StreamLoader(self.stream(False), self.cfg.data.num_workers, lambda stream: None)

    # ------------------------------------------------------------ resume
    def on_before_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        meta = {k: int(batch.pop(k)) for k in META_KEYS if k in batch}
        training = self.trainer is None or self.trainer.training
        if meta and training:
            self._consumed[meta["stream_shard"]] = meta["stream_batch"] + 1
            self._taken += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        workers = max(1, self.cfg.data.num_workers)
        mine = {
            "consumed": dict(self._consumed),
            "rotation": (self._rotation_start + self._taken) % workers,
            "rank": self._rank_world()[0],
        }
        per_rank = _all_gather(mine)
        consumed = {k: v for r in per_rank for k, v in r["consumed"].items()}
        return {
            "epoch": self._epoch,
            "consumed": consumed,
            "rotation": {r["rank"]: r["rotation"] for r in per_rank},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        rank = self._rank_world()[0]
        self._resume = {
            "epoch": int(state["epoch"]),
            "consumed": {int(k): int(v) for k, v in state["consumed"].items()},
            "rotation": int({int(k): v for k, v in state["rotation"].items()}.get(rank, 0)),
        }


def _all_gather(obj: Any) -> list[Any]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
