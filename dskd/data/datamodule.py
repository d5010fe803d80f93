"""`DSKDDataModule`: the training and validation streams of an experiment config, with exact resume.

Resume state (saved in Lightning checkpoints through ``state_dict``): the data's epoch, the batches
consumed per shard (counted in ``on_before_batch_transfer``, i.e. when the training loop takes a batch,
not when the loader prefetches it), each rank's worker rotation, whether the epoch's stream ran out,
and the offset between Lightning's epoch counter and the data's, so that a resumed loader continues
every shard where it stopped and in the same worker order. A run stopped by ``trainer.max_steps`` in
the middle of an epoch is marked by Lightning as having finished it; extended (a larger ``max_steps``),
it resumes in Lightning's next epoch, where the data module continues the unfinished one (the offset;
``max_epochs`` then counts the data's epochs). The number of ranks and workers must stay the same across
a resume. Validation holds out documents by a hash of their text (``data.val_fraction``)
unless ``data.val`` names its own sources. With ``data.targets=teacher`` the module trains on the
teacher's continuations it is given (:func:`dskd.data.continuations.read_continuations`); it never runs
the teacher itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from dskd.core.devices import all_gather_object, rank_world
from dskd.core.errors import ConfigError
from dskd.corpora.shards import index_sources
from dskd.data.config import DataConfig
from dskd.data.cross_stream import CrossTokenizerStream
from dskd.data.sampling import NeighbourTable, max_positions_for
from dskd.data.stream import META_KEYS, PackedStream, StreamSpec, sense_sample
from dskd.data.words import WordKeys
from dskd.lexicon import Lexicon


class _StreamLoader(DataLoader):
    """A DataLoader over a :class:`PackedStream` that lets its owner prepare the stream before each pass.

    ``lockstep``: under torch.distributed, end the pass on every rank as soon as one rank's shard is
    exhausted (see :func:`lockstep`).
    """

    def __init__(
        self, stream: PackedStream, num_workers: int, before_iter, lockstep: bool = False, ran_out=None
    ):
        super().__init__(stream, batch_size=None, num_workers=num_workers)
        self._before_iter = before_iter
        self._lockstep = lockstep
        self._ran_out = ran_out

    def __iter__(self):
        self._before_iter(self.dataset)
        batches = super().__iter__()
        batches = lockstep(batches) if self._lockstep else batches
        return batches if self._ran_out is None else _then(batches, self._ran_out)


def _then(batches: Iterator[Any], done) -> Iterator[Any]:
    """Yield ``batches``, then call ``done()`` once they ran out (not when the consumer stops early)."""
    yield from batches
    done()


def lockstep(batches: Iterator[Any]) -> Iterator[Any]:
    """Yield ``batches`` while every process of the default group still has one.

    Shards of different ranks can end a few batches apart; a rank that kept training alone would
    wait forever in the gradient all-reduce. One tiny all-reduce (MIN) per batch lets all ranks stop
    at the shortest shard. Without torch.distributed (or with one process) the batches pass through.
    """
    if rank_world()[1] == 1:
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
    def __init__(
        self,
        data: DataConfig,
        seed: int,
        tokenizer,
        lexicon: Lexicon | None = None,
        sense_keys: np.ndarray | None = None,
        continuations: dict[str, list[int]] | None = None,
    ):
        """The streams of ``data`` with ``seed``, tokenized by ``tokenizer`` (the teacher's). ``lexicon``:
        the neighbours of the sense loss (None: no sense sampling, method=kd); ``sense_keys``: the keys
        the sense dictionary has senses for (needed by ``data.neighbours_with_senses``);
        ``continuations``: prompt_key -> the teacher's continuation ids (for ``data.targets=teacher``)."""
        super().__init__()
        self.data = data
        self.seed = seed
        self.tokenizer = tokenizer
        self.lexicon = lexicon
        self.sense_keys = sense_keys
        self.teacher_continuations = continuations
        self._table: NeighbourTable | None = None
        self._batches_per_epoch: dict[tuple[int, int], int] = {}
        self._consumed: dict[int, int] = {}
        self._epoch = 0
        self._taken = 0
        self._rotation_start = 0
        self._ran_out = False
        """Whether the training stream of ``_epoch`` ran out (the epoch is over, not merely stopped)."""
        self._offset = 0
        """Lightning's epoch minus the data's (see the module doc)."""
        self._resume: dict[str, Any] | None = None

    # ------------------------------------------------------------ setup
    def _rank_world(self) -> tuple[int, int]:
        t = self.trainer
        return (t.global_rank, t.world_size) if t is not None else (0, 1)

    def prepare_data(self) -> None:
        """Index the text and JSONL files of ``data.train`` and ``data.val`` where no index is kept
        (:mod:`dskd.corpora.shards`), when the stream has several shards (ranks x workers): Lightning
        calls it in one process per node before the others start reading, so that each shard then
        reads only its share of the files. One shard reads them whole, without an index."""
        if self._rank_world()[1] * max(1, self.data.num_workers) > 1:
            index_sources([*self.data.train, *self.data.val])

    def setup(self, stage: str | None = None) -> None:
        """Check that the lexicon reads the tokenizer's ids and that ``data.targets=teacher`` has its
        continuations."""
        if self.lexicon is not None:
            self.lexicon.check_tokenizer(self.tokenizer)
        if self.data.targets == "teacher" and self.teacher_continuations is None:
            raise ConfigError(
                "data.targets=teacher needs the teacher's continuations: DSKDDataModule(..., "
                "continuations=dskd.data.continuations.read_continuations(...)); `dskd train` passes them."
            )

    def _neighbour_table(self) -> NeighbourTable:
        """The lexicon's neighbours; with data.neighbours_with_senses only those the sense dictionary has."""
        if self._table is None:
            self._table = self._read_neighbour_table()
        return self._table

    def _read_neighbour_table(self) -> NeighbourTable:
        table = NeighbourTable.from_lexicon(self.lexicon)
        if not self.data.neighbours_with_senses:
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
        d = self.data
        own_val = bool(d.val)
        table = self._neighbour_table() if self.lexicon is not None else None
        return StreamSpec(
            sources=list(d.train if train or not own_val else d.val),
            seq_len=d.seq_len,
            batch_size=d.batch_size,
            seed=self.seed,
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
            teacher_continuations=self.teacher_continuations,
            prompt_lengths=d.on_policy.fraction > 0,
            pad_to=d.pad_to,
        )

    def stream(self, train: bool) -> PackedStream:
        rank, world = self._rank_world()
        return PackedStream(self.spec(train), self.tokenizer, rank, world)

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else self._epoch

    def _before_train_iter(self, stream: PackedStream) -> None:
        stream.skip, stream.rotation = {}, 0
        resume, self._resume = self._resume, None
        if resume is not None:
            self._resume_offset(resume)
        epoch = self._current_epoch() - self._offset
        stream.epoch = epoch
        if resume is not None and resume["epoch"] == epoch:
            stream.skip = dict(resume["consumed"])
            stream.rotation = resume["rotation"]
        self._epoch, self._consumed, self._ran_out = epoch, dict(stream.skip), False
        self._taken, self._rotation_start = 0, stream.rotation

    def _resume_offset(self, resume: dict[str, Any]) -> None:
        """Set the epoch offset of a resumed run: the saved one, or, when Lightning counts the saved
        epoch as done though its stream had not run out (a run stopped by ``max_steps``, then
        extended), the one that continues it. ``max_epochs`` is raised by the offset."""
        self._offset = resume["offset"]
        if not resume["ran_out"] and resume["epoch"] + self._offset < self._current_epoch():
            self._offset = self._current_epoch() - resume["epoch"]
        loop = self.trainer.fit_loop if self.trainer is not None else None
        if self._offset and loop is not None and loop.max_epochs not in (None, -1):
            loop.max_epochs += self._offset

    def _training_ran_out(self) -> None:
        self._ran_out = True

    def train_dataloader(self) -> DataLoader:
        workers = self.data.num_workers
        return _StreamLoader(
            self.stream(True), workers, self._before_train_iter, lockstep=True, ran_out=self._training_ran_out
        )

    def batches_per_epoch(self, world_size: int, epoch: int) -> int:
        """Training batches of ``epoch`` per rank: the shortest rank's count (ranks stop together, see
        :func:`lockstep`). Counted by tokenizing the training data in that epoch's order (packing
        after each epoch's shuffle can give a different count), once per world size and epoch. Under
        torch.distributed with ``world_size`` processes each counts its own shards and they share the
        counts (every process must call this, as the LR schedule's set-up does); otherwise this
        process counts every rank's."""
        key = (world_size, epoch)
        if key not in self._batches_per_epoch:
            stream, workers = self.stream(True), max(1, self.data.num_workers)
            stream.epoch = epoch
            rank, world = rank_world()
            ranks = [rank] if world == world_size > 1 else range(world_size)
            counts = {
                r: sum(stream.count_batches(r * workers + w, world_size * workers) for w in range(workers))
                for r in ranks
            }
            if len(counts) < world_size:
                counts = {r: c for shared in all_gather_object(counts) for r, c in shared.items()}
            self._batches_per_epoch[key] = min(counts.values())
        return self._batches_per_epoch[key]

    def on_policy_senses(self, labels: np.ndarray, key: Sequence[int]) -> dict[str, np.ndarray]:
        """The sense-loss arrays of an on-policy batch's ``labels`` [B, L] (the student's own tokens),
        drawn as for a data batch with the same neighbour table, sequence b from the generator seeded
        by ``(*key, b)``; no gold synsets (generated text has none)."""
        rngs = [np.random.default_rng([*key, b]) for b in range(len(labels))]
        return sense_sample(self.spec(True), labels, rngs)

    def val_dataloader(self) -> DataLoader:
        """Validation in lockstep too: every validation forward under DDP is collective (buffer
        broadcast), so a rank with one more held-out batch than another would wait forever (the
        2-process rehearsal of paper-llama3 hung at its first validation)."""
        workers = self.data.num_workers
        return _StreamLoader(self.stream(False), workers, lambda stream: None, lockstep=True)

    # ------------------------------------------------------------ resume
    def on_before_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        meta = {k: int(batch.pop(k)) for k in META_KEYS if k in batch}
        training = self.trainer is None or self.trainer.training
        if meta and training:
            self._consumed[meta["stream_shard"]] = meta["stream_batch"] + 1
            self._taken += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        workers = max(1, self.data.num_workers)
        mine = {
            "consumed": dict(self._consumed),
            "rotation": (self._rotation_start + self._taken) % workers,
            "rank": self._rank_world()[0],
        }
        per_rank = all_gather_object(mine)
        consumed = {k: v for r in per_rank for k, v in r["consumed"].items()}
        return {
            "epoch": self._epoch,
            "consumed": consumed,
            "rotation": {r["rank"]: r["rotation"] for r in per_rank},
            "ran_out": self._ran_out,
            "offset": self._offset,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        rank = self._rank_world()[0]
        self._resume = {
            "epoch": int(state["epoch"]),
            "consumed": {int(k): int(v) for k, v in state["consumed"].items()},
            "rotation": int({int(k): v for k, v in state["rotation"].items()}.get(rank, 0)),
            # checkpoints written before these were recorded: an epoch counted done by Lightning was
            "ran_out": bool(state.get("ran_out", True)),
            "offset": int(state.get("offset", 0)),
        }


class CrossTokenizerDataModule(DSKDDataModule):
    """The data module of cross-tokenizer KD (``loss.kd.divergence`` uld or uld_hybrid): its streams
    are :class:`dskd.data.cross_stream.CrossTokenizerStream` (one document per sequence, tokenized by
    the teacher's ``tokenizer`` and the ``student_tokenizer``, aligned), with the same seeding, sharding
    and exact resume as :class:`DSKDDataModule`. Observed targets only; with a ``lexicon`` (built for
    the teacher's tokenizer; method=dskd) the batches hold word-keyed sense positions
    (:mod:`dskd.data.words`); set ``sense_keys`` after construction for ``data.neighbours_with_senses``
    (as :class:`DSKDDataModule`'s argument)."""

    def __init__(
        self, data: DataConfig, seed: int, tokenizer, student_tokenizer, lexicon: Lexicon | None = None
    ):
        super().__init__(data, seed, tokenizer, lexicon)
        self.student_tokenizer = student_tokenizer

    def spec(self, train: bool) -> StreamSpec:
        spec = super().spec(train)
        if self.lexicon is not None:
            spec.word_keys = WordKeys.from_lexicon(self.tokenizer, self.lexicon)
        return spec

    def stream(self, train: bool) -> PackedStream:
        rank, world = self._rank_world()
        return CrossTokenizerStream(self.spec(train), self.tokenizer, self.student_tokenizer, rank, world)
