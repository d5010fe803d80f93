"""The precompute pass: run the teacher once over every sequence the runs will see and cache its outputs.

The sequences are those of the experiment's own data stream (:class:`dskd.data.stream.PackedStream`),
regenerated exactly as training and validation will draw them, for each seed in ``seeds``, each
rank of the configured world size, and as many training batches per rank as the run takes
(``trainer.max_steps x accumulate_grad_batches``, or ``max_epochs`` whole epochs) plus the first
``trainer.limit_val_batches`` validation batches. A sequence met twice (e.g. in two seeds) is stored
once. What the cache must match is in :func:`cache_identity`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dskd.config.schema import ExperimentConfig
from dskd.core.devices import local_device
from dskd.core.errors import DSKDError
from dskd.core.io import provenance, read_json
from dskd.core.outputs import StageResult
from dskd.losses.config import SAMPLED_DIVERGENCES
from dskd.losses.sampled import TeacherSamples, teacher_samples
from dskd.losses.topk import TeacherTopK, teacher_topk_at
from dskd.teacher_cache.positions import hidden_tokens, needs_hidden
from dskd.teacher_cache.store import CachedTeacher, CacheWriter, sequence_keys

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


def data_fingerprint(cfg: ExperimentConfig) -> str:
    """sha256 of the data settings that decide the sequences' content (see :data:`DATA_FIELDS`)."""
    d = dataclasses.asdict(cfg.data)
    payload = json.dumps({k: d[k] for k in DATA_FIELDS}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def cache_identity(cfg: ExperimentConfig, tokenizer) -> dict[str, Any]:
    """The fields a cache must share with a run (checked by :meth:`CachedTeacher.open`)."""
    from dskd.models.loading import tokenizer_fingerprint

    tc, cache = cfg.teacher, cfg.cache
    sampled = cache.kd_format == "sampled"
    return {
        "teacher": f"{tc.model}@{tc.revision}",
        "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
        "data_fingerprint": data_fingerprint(cfg),
        "targets": cache.kd_format,
        "top_k": None if sampled else cache.top_k,
        "samples": cache.samples if sampled else None,
        "seed": cache.seed if sampled else None,
        "seq_len": cfg.data.seq_len,
    }


def cache_taus(cfg: ExperimentConfig) -> list[float]:
    """Temperatures a cache of ``cfg`` stores: the samples' ``loss.kd.tau`` (sampled; samples at one
    tau do not serve another), or 1 and ``loss.kd.tau`` (top-k)."""
    tau = float(cfg.loss.kd.tau)
    return [tau] if cfg.cache.kd_format == "sampled" else sorted({1.0, tau})


def open_cache(cfg: ExperimentConfig, tokenizer) -> CachedTeacher:
    """The run's teacher cache (``cache.dir``), refused unless it matches ``cfg`` (for
    method=dskd: hidden states wherever the run's sense loss can read them)."""
    need = cfg.method == "dskd"
    cache = CachedTeacher.open(
        cfg.cache.dir, cfg.loss.kd.tau, need_hidden=need, **cache_identity(cfg, tokenizer)
    )
    if need and cache.meta.get("hidden_positions") == "sense":
        cache.check_hidden_tokens(hidden_tokens(cfg, cache.meta["vocab_size"]))
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
    teacher: torch.nn.Module, batch: dict[str, torch.Tensor], cfg: ExperimentConfig, keys: np.ndarray
) -> tuple[list[TeacherTopK] | TeacherSamples, torch.Tensor]:
    """(KD targets as ``cfg.cache.kd_format`` asks: top-k at each of :func:`cache_taus` or
    samples at ``loss.kd.tau``; last hidden states [B, L, d]) of the teacher on one batch whose
    sequence keys are ``keys``."""
    device = next(teacher.parameters()).device
    ids, am = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    hidden = teacher.get_decoder()(input_ids=ids, attention_mask=am).last_hidden_state
    logits = teacher.get_output_embeddings()(hidden)
    cache = cfg.cache
    if cache.kd_format == "topk":
        return teacher_topk_at(logits, cache.top_k, cache_taus(cfg)), hidden
    generators = sequence_generators(keys, cache.seed, logits.device)
    return teacher_samples(logits, cache.samples, cfg.loss.kd.tau, generators), hidden


def check_buildable(cfg: ExperimentConfig) -> None:
    """Refuse a cache whose targets the config's KD cannot use (sampled: forward KL only)."""
    kd = cfg.loss.kd
    if cfg.cache.kd_format == "sampled" and kd.divergence not in SAMPLED_DIVERGENCES:
        raise DSKDError(
            f"cache.kd_format=sampled estimates forward-KL KD only, but loss.kd.divergence="
            f"{kd.divergence}; build with cache.kd_format=topk, or use loss.kd.divergence=forward_kl."
        )


def writer_tokens(
    cfg: ExperimentConfig,
    hidden_dtype: str,
    vocab_size: int,
    positions_of: list[ExperimentConfig] | None = None,
) -> np.ndarray | None:
    """``hidden_tokens`` of a new cache: the union over ``positions_of`` (default ``[cfg]``) of
    :func:`hidden_tokens` (None: hidden states at all positions, or none at all)."""
    if hidden_dtype == "none" or cfg.cache.hidden_positions == "all":
        return None
    table = np.zeros(vocab_size, dtype=bool)
    for c in positions_of or [cfg]:
        try:
            table |= hidden_tokens(c, vocab_size)
        except DSKDError as e:
            raise DSKDError(
                "cache.hidden_positions=sense stores hidden states only where the target has senses "
                "or lexicon neighbours, so it needs the lexicon and the sense dictionary: build them first "
                "(`dskd lexicon build CONFIG`, `dskd senses build CONFIG`), or set "
                f"cache.hidden_positions=all, or --hidden-dtype none (a KD-only cache). ({e})"
            ) from e
    return table


def add_batch(
    writer: CacheWriter, teacher: torch.nn.Module, batch: dict[str, torch.Tensor], cfg: ExperimentConfig
) -> int:
    """Run the teacher on ``batch`` and append its new sequences to ``writer``; returns rows added."""
    keys = sequence_keys(batch["input_ids"], batch["attention_mask"])
    if all(int(key) in writer.seen for key in keys):
        writer.duplicates += len(keys)
        return 0
    targets, hidden = teacher_outputs(teacher, batch, cfg, keys)
    keep = None if writer.hidden_tokens is None else needs_hidden(batch["labels"], writer.hidden_tokens)
    return writer.add(keys, targets, hidden, keep)


def world_size(cfg: ExperimentConfig) -> int:
    """Processes of the configured run (``devices`` x ``num_nodes``; ``auto``: visible GPUs or 1)."""
    t = cfg.trainer
    text = str(t.devices).strip()
    if text.isdigit():
        per_node = int(text)
    elif text.startswith("["):
        per_node = len([x for x in text.strip("[]").split(",") if x.strip()])
    else:
        gpu = t.accelerator != "cpu" and torch.cuda.is_available()
        per_node = torch.cuda.device_count() if gpu else 1
    return per_node * t.num_nodes


def train_batches_per_rank(cfg: ExperimentConfig) -> int | None:
    """Training batches each rank draws (None: ``max_epochs`` whole epochs)."""
    t = cfg.trainer
    return t.max_steps * t.accumulate_grad_batches if t.max_steps > 0 else None


def run_batches(cfg: ExperimentConfig, tokenizer, seeds: list[int]) -> Iterator[dict[str, torch.Tensor]]:
    """Every training and validation batch of the runs of ``cfg`` with these seeds (all ranks)."""
    from torch.utils.data import DataLoader

    from dskd.data.datamodule import DSKDDataModule
    from dskd.data.stream import META_KEYS, PackedStream

    world, t = world_size(cfg), cfg.trainer
    need = train_batches_per_rank(cfg)
    for seed in seeds:
        # method=kd: the same sequences without the sense sampling (and without loading the lexicon)
        dm = DSKDDataModule(dataclasses.replace(cfg, seed=seed, method="kd"), tokenizer)
        dm.setup("fit")
        for rank in range(world):
            epochs = range(t.max_epochs) if need is None else itertools.count()
            taken = 0
            plan = itertools.chain([(False, 0, t.limit_val_batches)], ((True, e, need) for e in epochs))
            for train, epoch, limit in plan:
                stream = PackedStream(dm.spec(train), tokenizer, rank, world)
                stream.epoch = epoch
                n = 0
                for batch in DataLoader(stream, batch_size=None, num_workers=cfg.data.num_workers):
                    if limit is not None and (taken if train else n) >= limit:
                        break
                    n += 1
                    taken += train
                    yield {k: v for k, v in batch.items() if k not in META_KEYS}
                if train and (n == 0 or (need is not None and taken >= need)):
                    break


def build(
    cfg: ExperimentConfig,
    seeds: list[int] | None = None,
    hidden_dtype: str = "float16",
    teacher: torch.nn.Module | None = None,
    tokenizer=None,
    progress: bool = True,
    overwrite: bool = False,
    positions_of: list[ExperimentConfig] | None = None,
) -> StageResult:
    """The teacher cache stage: write the teacher cache of ``cfg`` to ``cache.dir``.

    ``seeds`` (default ``[cfg.seed]``): runs whose sequences to cover. ``hidden_dtype``: float16
    (default; half the size, the sense loss then differs from online by fp16 rounding), float32
    (exact) or none (a KD-only cache). ``teacher``/``tokenizer`` default to those of ``cfg.teacher``.
    ``overwrite``: see :func:`dskd.outputs.check_output`. ``positions_of``: the configs whose sense
    positions the hidden states cover (default ``[cfg]``; hidden positions sense).
    """
    from tqdm.auto import tqdm

    from dskd.models.loading import load_causal_lm, load_tokenizer

    t0 = time.perf_counter()
    check_buildable(cfg)
    seeds = list(seeds) if seeds else [cfg.seed]
    tc = cfg.teacher
    tokenizer = tokenizer or load_tokenizer(tc.model, tc.revision)
    if teacher is None:
        teacher = load_causal_lm(tc.model, tc.dtype, tc.revision)
        teacher.to(local_device())
    teacher.eval()
    head = teacher.get_output_embeddings().weight
    meta = {
        **cache_identity(cfg, tokenizer),
        "provenance": provenance("cache", {"teacher": tc.model, "revision": tc.revision}),
        "taus": cache_taus(cfg),
        "hidden_dtype": hidden_dtype,
        "hidden_positions": cfg.cache.hidden_positions if hidden_dtype != "none" else "none",
        "hidden_size": int(head.shape[1]),
        "vocab_size": int(head.shape[0]),
        "seeds": seeds,
        "world_size": world_size(cfg),
        "num_workers": cfg.data.num_workers,
        "train_batches": train_batches_per_rank(cfg) or f"{cfg.trainer.max_epochs} epochs",
        "val_batches": cfg.trainer.limit_val_batches,
    }
    need, val = train_batches_per_rank(cfg), cfg.trainer.limit_val_batches
    total = len(seeds) * meta["world_size"] * (need + val) if need is not None and val is not None else None
    tokens = 0
    inputs = [tc.model] if Path(tc.model).exists() else []
    positions = writer_tokens(cfg, hidden_dtype, meta["vocab_size"], positions_of)
    with CacheWriter(cfg.cache.dir, meta, overwrite, inputs, positions) as writer:
        for batch in tqdm(
            run_batches(cfg, tokenizer, seeds),
            desc="teacher cache",
            unit="batch",
            total=total,
            disable=not progress,
        ):
            if add_batch(writer, teacher, batch, cfg):
                tokens += int(batch["attention_mask"].sum())
        writer.extra_stats = {"seconds": round(time.perf_counter() - t0, 2), "tokens": tokens}
    return StageResult(Path(cfg.cache.dir), read_json(Path(cfg.cache.dir) / "stats.json"))
