"""The precompute pass: run the teacher once over every sequence the runs will see and cache its outputs.

The sequences are those of the experiment's own data stream (:class:`dskd.data.stream.PackedStream`),
regenerated exactly as training and validation will draw them, for each seed in ``seeds``, each
rank of the configured world size, and as many training batches per rank as the run takes
(``trainer.max_steps x accumulate_grad_batches``, or ``max_epochs`` whole epochs) plus the first
``trainer.limit_val_batches`` validation batches. A sequence met twice (e.g. in two seeds) is stored
once. What the cache must match is in :func:`cache_identity`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader

from dskd.config.schema import ExperimentConfig
from dskd.core.devices import barrier, from_first, gather_to_first, local_device, rank_world
from dskd.core.errors import DSKDError
from dskd.core.io import provenance, read_json
from dskd.core.outputs import StageResult
from dskd.core.progress import progress_bar
from dskd.core.stopping import stop_cleanly
from dskd.data.config import DataConfig
from dskd.data.continuations import read_continuations
from dskd.data.datamodule import DSKDDataModule
from dskd.data.stream import META_KEYS, PackedStream
from dskd.losses.config import SAMPLED_DIVERGENCES, KDConfig
from dskd.losses.sampled import TeacherSamples, teacher_samples
from dskd.losses.topk import TeacherTopK, teacher_topk_at
from dskd.models.config import TeacherConfig
from dskd.models.loading import load_tokenizer, tokenizer_fingerprint
from dskd.models.shared import StageProcess, held
from dskd.teacher_cache.config import CacheConfig
from dskd.teacher_cache.positions import hidden_tokens, needs_hidden
from dskd.teacher_cache.store import (
    CachedTeacher,
    CacheWriter,
    RowBlock,
    SeenKeys,
    encode_rows,
    sequence_keys,
)

DATA_FIELDS = (
    "train",
    "val",
    "val_fraction",
    "seq_len",
    "pack",
    "shuffle_buffer",
    "targets",
    "teacher_new_tokens",
)
"""Fields of ``cfg.data`` that decide which token sequences the stream yields (besides seed and sharding)."""


class RunShape(Protocol):
    """The trainer settings that decide which batches a run draws (:class:`TrainerConfig` of
    ``dskd.training.config``, a layer above the cache, has them)."""

    accelerator: str
    devices: str
    num_nodes: int
    max_steps: int
    max_epochs: int
    accumulate_grad_batches: int
    limit_val_batches: int | None


@dataclass(frozen=True)
class CacheSpec:
    """The sections a teacher cache of a run depends on (what it holds, over which sequences)."""

    teacher: TeacherConfig
    cache: CacheConfig
    data: DataConfig
    kd: KDConfig
    trainer: RunShape
    seed: int
    sense_dirs: tuple[str, str] | None = None
    """(lexicon.output_dir, senses.output_dir) of a run with the sense loss (method=dskd); None: KD only."""


def data_fingerprint(data: DataConfig) -> str:
    """sha256 of the data settings that decide the sequences' content (see :data:`DATA_FIELDS`)."""
    d = dataclasses.asdict(data)
    payload = json.dumps({k: d[k] for k in DATA_FIELDS}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def cache_identity(spec: CacheSpec, tokenizer) -> dict[str, Any]:
    """The fields a cache must share with a run (checked by :meth:`CachedTeacher.open`)."""
    tc, cache = spec.teacher, spec.cache
    sampled = cache.kd_format == "sampled"
    return {
        "teacher": f"{tc.model}@{tc.revision}",
        "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
        "data_fingerprint": data_fingerprint(spec.data),
        "targets": cache.kd_format,
        "top_k": None if sampled else cache.top_k,
        "samples": cache.samples if sampled else None,
        "seed": cache.seed if sampled else None,
        "seq_len": spec.data.seq_len,
    }


def cache_taus(cache: CacheConfig, kd: KDConfig) -> list[float]:
    """Temperatures a cache stores: the samples' ``loss.kd.tau`` (sampled; samples at one tau do not
    serve another), or 1 and ``loss.kd.tau`` (top-k)."""
    tau = float(kd.tau)
    return [tau] if cache.kd_format == "sampled" else sorted({1.0, tau})


def open_cache(spec: CacheSpec, tokenizer) -> CachedTeacher:
    """The run's teacher cache (``cache.dir``), refused unless it matches ``spec`` (with the sense
    loss: hidden states wherever it can read them)."""
    need = spec.sense_dirs is not None
    cache = CachedTeacher.open(
        spec.cache.dir, spec.kd.tau, need_hidden=need, **cache_identity(spec, tokenizer)
    )
    if need and cache.meta.get("hidden_positions") == "sense":
        cache.check_hidden_tokens(hidden_tokens(*spec.sense_dirs, cache.meta["vocab_size"]))
    return cache


def sequence_generators(keys: np.ndarray, seed: int, device: torch.device) -> list[torch.Generator]:
    """One generator per sequence, seeded by ``seed`` and the sequence's key: its draws do not
    depend on the batch, order, rank or seed of the run that met it first."""
    out = []
    for key in keys.tolist():
        digest = hashlib.blake2b(
            int(key).to_bytes(8, "little") + int(seed).to_bytes(8, "little", signed=True)
        )
        out.append(torch.Generator(device).manual_seed(int.from_bytes(digest.digest()[:8], "little") >> 1))
    return out


@torch.inference_mode()
def teacher_outputs(
    teacher: torch.nn.Module, batch: dict[str, torch.Tensor], spec: CacheSpec, keys: np.ndarray
) -> tuple[list[TeacherTopK] | TeacherSamples, torch.Tensor]:
    """(KD targets as ``cache.kd_format`` asks: top-k at each of :func:`cache_taus` or samples at
    ``loss.kd.tau``; last hidden states [B, L, d]) of the teacher on one batch whose sequence keys are
    ``keys``."""
    device = next(teacher.parameters()).device
    ids, am = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    hidden = teacher.get_decoder()(input_ids=ids, attention_mask=am).last_hidden_state
    logits = teacher.get_output_embeddings()(hidden)
    cache = spec.cache
    if cache.kd_format == "topk":
        return teacher_topk_at(logits, cache.top_k, cache_taus(cache, spec.kd)), hidden
    generators = sequence_generators(keys, cache.seed, logits.device)
    return teacher_samples(logits, cache.samples, spec.kd.tau, generators), hidden


def check_buildable(cache: CacheConfig, kd: KDConfig) -> None:
    """Refuse a cache whose targets the config's KD cannot use (sampled: forward KL only)."""
    if cache.kd_format == "sampled" and kd.divergence not in SAMPLED_DIVERGENCES:
        raise DSKDError(
            f"cache.kd_format=sampled estimates forward-KL KD only, but loss.kd.divergence="
            f"{kd.divergence}; build with cache.kd_format=topk, or use loss.kd.divergence=forward_kl."
        )


def writer_tokens(
    cache: CacheConfig, hidden_dtype: str, vocab_size: int, sense_dirs: list[tuple[str, str]]
) -> np.ndarray | None:
    """``hidden_tokens`` of a new cache: the union over the runs' (lexicon, sense dictionary) folders
    ``sense_dirs`` of :func:`hidden_tokens` (None: hidden states at all positions, or none at all)."""
    if hidden_dtype == "none" or cache.hidden_positions == "all":
        return None
    table = np.zeros(vocab_size, dtype=bool)
    for lexicon_dir, senses_dir in sense_dirs:
        try:
            table |= hidden_tokens(lexicon_dir, senses_dir, vocab_size)
        except DSKDError as e:
            raise DSKDError(
                "cache.hidden_positions=sense stores hidden states only where the target has senses "
                "or lexicon neighbours, so it needs the lexicon and the sense dictionary: build them first "
                "(`dskd lexicon build CONFIG`, `dskd senses build CONFIG`), or set "
                f"cache.hidden_positions=all, or --hidden-dtype none (a KD-only cache). ({e})"
            ) from e
    return table


def add_batch(
    writer: CacheWriter, teacher: torch.nn.Module, batch: dict[str, torch.Tensor], spec: CacheSpec
) -> int:
    """Run the teacher on ``batch`` and append its new sequences to ``writer``; returns rows added."""
    keys = sequence_keys(batch["input_ids"], batch["attention_mask"], spec.data.seq_len)
    keep = writer.keys.new_rows(keys)
    if not keep:
        return 0
    maker = BlockMaker(teacher, spec, writer.meta["hidden_dtype"], writer.hidden_tokens)
    return writer.append(maker.block(batch, keys, keep))


def world_size(trainer: RunShape) -> int:
    """Processes of the configured run (``devices`` x ``num_nodes``; ``auto``: visible GPUs or 1)."""
    text = str(trainer.devices).strip()
    if text.isdigit():
        per_node = int(text)
    elif text.startswith("["):
        per_node = len([x for x in text.strip("[]").split(",") if x.strip()])
    else:
        gpu = trainer.accelerator != "cpu" and torch.cuda.is_available()
        per_node = torch.cuda.device_count() if gpu else 1
    return per_node * trainer.num_nodes


def train_batches_per_rank(trainer: RunShape) -> int | None:
    """Training batches each rank draws (None: ``max_epochs`` whole epochs)."""
    return trainer.max_steps * trainer.accumulate_grad_batches if trainer.max_steps > 0 else None


def run_batches(spec: CacheSpec, tokenizer, seeds: list[int]) -> Iterator[dict[str, torch.Tensor]]:
    """Every training and validation batch of the runs of ``spec`` with these seeds (all ranks)."""
    data, t = spec.data, spec.trainer
    world, need = world_size(t), train_batches_per_rank(t)
    for seed in seeds:
        # the same sequences as the run, without the sense sampling (no lexicon: it never changes them)
        teacher = (
            read_continuations(data, spec.teacher, tokenizer, seed) if data.targets == "teacher" else None
        )
        dm = DSKDDataModule(data, seed, tokenizer, continuations=teacher)
        dm.setup("fit")
        for rank in range(world):
            epochs = range(t.max_epochs) if need is None else itertools.count()
            taken = 0
            plan = itertools.chain([(False, 0, t.limit_val_batches)], ((True, e, need) for e in epochs))
            for train, epoch, limit in plan:
                stream = PackedStream(dm.spec(train), tokenizer, rank, world)
                stream.epoch = epoch
                n = 0
                for batch in DataLoader(stream, batch_size=None, num_workers=data.num_workers):
                    if limit is not None and (taken if train else n) >= limit:
                        break
                    n += 1
                    taken += train
                    yield {k: v for k, v in batch.items() if k not in META_KEYS}
                if train and (n == 0 or (need is not None and taken >= need)):
                    break


@stop_cleanly("the teacher cache build")
def build(
    cfg: ExperimentConfig,
    seeds: list[int] | None = None,
    hidden_dtype: str = "float16",
    overwrite: bool = False,
    positions_of: list[ExperimentConfig] | None = None,
    process: StageProcess | None = None,
) -> StageResult:
    """The teacher cache stage: write the teacher cache of ``cfg`` to ``cache.dir``.

    ``seeds`` (default ``[cfg.seed]``): runs whose sequences to cover. ``hidden_dtype``: float16
    (default; half the size, the sense loss then differs from online by fp16 rounding), float32
    (exact) or none (a KD-only cache). ``overwrite``: see :func:`dskd.core.outputs.check_output`.
    ``positions_of``: the configs whose sense positions the hidden states cover (default ``[cfg]``;
    hidden positions sense). With ``data.targets=teacher`` the teacher's continuations must be built
    first (the sequences hold them). ``process``: its held teacher (default: one loaded for this
    stage) and whether rank 0 shows progress; ``process.together``: every process of the default group
    calls this (`dskd cache build` and `dskd reproduce` under torchrun or srun): the batches with new
    sequences are dealt to the ranks, each runs the teacher on its own on its device, and rank 0 writes
    their rows in the one-process order (the same cache); every rank returns once it is written.
    """
    t0 = time.perf_counter()
    teachers, together, progress = process or StageProcess()
    dirs = (cfg.lexicon.output_dir, cfg.senses.output_dir) if cfg.method == "dskd" else None
    spec = CacheSpec(cfg.teacher, cfg.cache, cfg.data, cfg.loss.kd, cfg.trainer, cfg.seed, dirs)
    check_buildable(spec.cache, spec.kd)
    seeds = list(seeds) if seeds else [cfg.seed]
    tc, trainer = spec.teacher, spec.trainer
    tokenizer = load_tokenizer(tc.model, tc.revision)
    rank, world = rank_world() if together else (0, 1)
    with held(teachers) as holder:
        teacher = holder.get(tc, local_device())
        head = teacher.get_output_embeddings().weight
        meta = {
            **cache_identity(spec, tokenizer),
            "provenance": provenance("cache", {"teacher": tc.model, "revision": tc.revision}),
            "taus": cache_taus(spec.cache, spec.kd),
            "hidden_dtype": hidden_dtype,
            "hidden_positions": spec.cache.hidden_positions if hidden_dtype != "none" else "none",
            "hidden_size": int(head.shape[1]),
            "vocab_size": int(head.shape[0]),
            "seeds": seeds,
            "world_size": world_size(trainer),
            "num_workers": spec.data.num_workers,
            "train_batches": train_batches_per_rank(trainer) or f"{trainer.max_epochs} epochs",
            "val_batches": trainer.limit_val_batches,
        }
        need, val = train_batches_per_rank(trainer), trainer.limit_val_batches
        total = (
            len(seeds) * meta["world_size"] * (need + val) if need is not None and val is not None else None
        )
        inputs = [tc.model] if Path(tc.model).exists() else []
        sense_dirs = [(c.lexicon.output_dir, c.senses.output_dir) for c in positions_of or [cfg]]
        positions = writer_tokens(spec.cache, hidden_dtype, meta["vocab_size"], sense_dirs)
        writer = CacheWriter(spec.cache.dir, meta, overwrite, inputs, positions) if rank == 0 else None
        with writer or contextlib.nullcontext():
            batches = progress_bar(
                run_batches(spec, tokenizer, seeds),
                desc="teacher cache",
                unit="batch",
                total=total,
                disable=not progress or rank != 0,
            )
            tokens = write_rows(
                writer, BlockMaker(teacher, spec, hidden_dtype, positions), batches, (rank, world)
            )
            if writer is not None:
                writer.extra_stats = {"seconds": round(time.perf_counter() - t0, 2), "tokens": tokens}
    if together:
        barrier()
    return StageResult(Path(spec.cache.dir), read_json(Path(spec.cache.dir) / "stats.json"))


class BlockMaker(NamedTuple):
    """What turns a batch into :class:`RowBlock` s: the teacher, the cache's spec, the storage dtype of
    its hidden states and the target tokens whose positions store them (None: all positions)."""

    teacher: torch.nn.Module
    spec: CacheSpec
    hidden_dtype: str
    hidden_tokens: np.ndarray | None

    def block(self, batch: dict[str, torch.Tensor], keys: np.ndarray, keep: list[int]) -> RowBlock:
        """The rows ``keep`` of ``batch`` (sequence keys ``keys``) with the teacher's outputs."""
        targets, hidden = teacher_outputs(self.teacher, batch, self.spec, keys)
        sparse = None if self.hidden_tokens is None else needs_hidden(batch["labels"], self.hidden_tokens)
        return encode_rows(keys, keep, targets, hidden, sparse, self.hidden_dtype)


def write_rows(
    writer: CacheWriter | None, maker: BlockMaker, batches: Iterable[dict], shard: tuple[int, int]
) -> int:
    """Run the teacher on every batch with new sequences and append their rows to ``writer`` in batch
    order; returns the tokens of those batches. ``shard`` (rank, world): the batches with new rows are
    dealt to the ranks in turn (each rank reads every batch, for the sequence keys), a round of
    ``world`` of them is gathered to rank 0, which alone has a ``writer``. A rank's failure stops
    every rank (named)."""
    rank, world = shard
    seen = writer.keys if writer is not None else SeenKeys()
    tokens, pending = 0, []
    for batch in batches:
        keys = sequence_keys(batch["input_ids"], batch["attention_mask"], maker.spec.data.seq_len)
        keep = seen.new_rows(keys)
        if keep:
            tokens += int(batch["attention_mask"].sum())
            pending.append((batch, keys, keep))
        if len(pending) == world:
            _round(writer, maker, pending, rank)
            pending = []
    if pending:
        _round(writer, maker, pending, rank)
    return tokens


def _round(writer: CacheWriter | None, maker: BlockMaker, pending: list, rank: int) -> None:
    """Rank ``i`` makes the block of ``pending[i]``; rank 0 appends them all in order."""
    block, error = None, None
    if rank < len(pending):
        try:
            block = maker.block(*pending[rank])
        except Exception as e:  # reported to every rank below, then raised here as it was
            error = e
    blocks = gather_to_first(None if error else block)
    failed = from_first([i for i, b in enumerate(blocks or []) if b is None and i < len(pending)])
    if error is not None:
        raise error
    if failed:
        raise DSKDError(f"The teacher cache build failed on rank {failed[0]} (its error is in its log).")
    for b in blocks if writer is not None else []:
        if b is not None:
            writer.append(b)
