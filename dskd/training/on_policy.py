"""On-policy batches: the student's own sampled continuation replaces each sequence's text after its
prefix (docs/training.md, "On-policy distillation").

Which batches are on-policy is drawn from ``(seed, batch index)`` alone (the same on every process);
the tokens are sampled under a torch generator state seeded by ``(seed, batch index, rank)``, so a
resumed run regenerates exactly what an uninterrupted run generated. The prefix of sequence b is its
prompt (``dskd.batch.PROMPT_LEN``) when it starts with one and leaves a token to replace, else
``round(prefix_fraction * n_b)`` of its ``n_b`` tokens, clamped to ``[1, n_b - 1]`` (1 for ``n_b = 1``).
The student samples up to ``min(max_new_tokens, L - shortest prefix)`` tokens, batched with its KV
cache and left-padded prefixes; a row ends after its first stop token (any EOS id of the student's
generation config, and the tokenizer's EOS where the caller knows it: ``dskd.data.continuations.stop_tokens``;
Llama 3 Instruct ends a turn with ``<|eot_id|>``, the second of its EOS ids) or at ``L`` tokens
(``data.seq_len``, also when the data batch is padded only to its longest sequence).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from transformers import GenerationConfig

from dskd.core.batch import IGNORE_INDEX, PROMPT_LEN
from dskd.data.config import OnPolicyConfig
from dskd.data.continuations import left_padded, stop_tokens

DRAW, SAMPLE, SENSES = 1, 2, 3
"""Second element of the seed sequences: whether a batch is on-policy, its tokens, its sense sample."""

SenseSampler = Callable[[np.ndarray, Sequence[int]], Mapping[str, np.ndarray]]
"""``(labels [B, L], seed key) -> sense-loss arrays`` (``DSKDDataModule.on_policy_senses``)."""


class BatchKey(NamedTuple):
    """What a training batch's on-policy draws are seeded by."""

    seed: int
    """The run's seed."""
    index: int
    """The training batch's index, counted from 0 over the whole run (resumes included)."""
    rank: int
    """The process's rank (each samples its own tokens)."""


def is_on_policy(seed: int, index: int, fraction: float) -> bool:
    """Whether training batch ``index`` (counted from 0 over the whole run) is on-policy."""
    if fraction <= 0.0:
        return False
    return bool(np.random.default_rng([seed, DRAW, index]).random() < fraction)


def fraction_for_one(seed: int, n_batches: int) -> tuple[float, int]:
    """(fraction, index): the smallest fraction that makes exactly one of training batches
    ``0 .. n_batches - 1`` on-policy, and that batch's index (a rehearsal's one on-policy step)."""
    draws = [np.random.default_rng([seed, DRAW, i]).random() for i in range(n_batches)]
    index = int(np.argmin(draws))
    return float(np.nextafter(draws[index], 1.0)), index


def sample_seed(seed: int, index: int, rank: int) -> int:
    """The torch seed of the tokens that process ``rank`` samples for batch ``index``."""
    return int(np.random.default_rng([seed, SAMPLE, index, rank]).integers(2**62))


def prefix_lengths(
    attention_mask: torch.Tensor, prompt_len: torch.Tensor | None, prefix_fraction: float
) -> torch.Tensor:
    """``[B]`` prefix kept of each right-padded sequence (see the module doc)."""
    n = attention_mask.sum(1)
    upper = (n - 1).clamp(min=1)
    plain = torch.round(n.double() * prefix_fraction).long().clamp(min=1)
    plain = torch.minimum(plain, upper)
    if prompt_len is None:
        return plain
    prompt_len = prompt_len.to(n.device)
    return torch.where((prompt_len >= 1) & (prompt_len < n), prompt_len, plain)


class OnPolicyBatch(NamedTuple):
    """A batch whose continuations the student sampled, with what its generation cost."""

    batch: dict[str, torch.Tensor]
    """``input_ids``, ``attention_mask`` and ``labels`` (targets only where a sampled token follows)."""
    new_tokens: int
    """Sampled tokens kept in the batch (the stop token included, padding after it not)."""
    seconds: float
    """Wall time of the generation."""


class Stops(NamedTuple):
    """Where a sampled row ends: after its first token of ``eos`` (every id that ends a row) or at
    ``seq_len`` tokens (None: the batch's width); ``pad`` fills the positions after it."""

    eos: Sequence[int]
    pad: int
    seq_len: int | None = None


@torch.no_grad()
def sample_batch(
    student: nn.Module, batch: dict[str, torch.Tensor], cfg: OnPolicyConfig, *, stops: Stops, seed: int
) -> OnPolicyBatch:
    """Replace each sequence of ``batch`` after its prefix by ``student``'s sampled continuation, which
    ends where ``stops`` says. The new batch is as wide as the batch or its longest new row, if longer."""
    eos, pad = stops.eos, stops.pad
    ids, am = batch["input_ids"], batch["attention_mask"]
    L = max(ids.shape[1], stops.seq_len or 0)
    prefix = prefix_lengths(am, batch.get(PROMPT_LEN), cfg.prefix_fraction)
    budget = min(cfg.max_new_tokens, L - int(prefix.min()))
    prompt, prompt_mask = left_padded(
        [row[:p] for row, p in zip(ids.tolist(), prefix.tolist())], pad, ids.device
    )
    sampling = cfg.temperature > 0
    generation = GenerationConfig(
        do_sample=sampling,
        temperature=cfg.temperature if sampling else None,
        top_p=cfg.top_p if sampling else None,
        top_k=0 if sampling else None,
        max_new_tokens=budget,
        eos_token_id=list(eos) or None,
        pad_token_id=pad,
        use_cache=True,
    )
    was_training = student.training
    student.eval()
    device = ids.device
    start = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            out = student.generate(input_ids=prompt, attention_mask=prompt_mask, generation_config=generation)
    finally:
        student.train(was_training)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    new = out[:, prompt.shape[1] :]
    stop = torch.isin(new, torch.tensor(list(eos), dtype=new.dtype, device=device)).long()
    kept = (stop.cumsum(1) - stop) == 0  # up to and including the first stop token
    ends = torch.clamp(prefix + kept.sum(1), max=L)
    width = max(ids.shape[1], int(ends.max()))
    ids = torch.nn.functional.pad(ids, (0, width - ids.shape[1]), value=pad)
    pos = torch.arange(width, device=device)[None, :]
    from_new = new.gather(1, (pos - prefix[:, None]).clamp(0, max(new.shape[1] - 1, 0)))
    in_prefix, inside = pos < prefix[:, None], pos < ends[:, None]
    input_ids = torch.where(in_prefix, ids, torch.where(inside, from_new, torch.full_like(ids, pad)))
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, :-1] = input_ids[:, 1:]
    targets = (pos >= prefix[:, None] - 1) & (pos < ends[:, None] - 1)  # the sampled tokens
    labels = labels.masked_fill(~targets, IGNORE_INDEX)
    fresh = {"input_ids": input_ids, "attention_mask": inside.long(), "labels": labels}
    return OnPolicyBatch(fresh, int((ends - prefix).sum()), seconds)


class DataEnds(NamedTuple):
    """What the data says about where a row ends: its tokenizer's EOS (a chat template's end of turn;
    None: unknown) and ``data.seq_len`` (None: the batch's width)."""

    eos: int | None = None
    seq_len: int | None = None


def generation_logs(tokens: int, seconds: float) -> dict[str, float]:
    """What a step's generation cost; an on-policy run logs these on every step (Lightning would
    repeat a key's last value on steps that do not log it): 0 tokens and NaN tokens/s off-policy."""
    return {
        "train/gen_tokens": float(tokens),
        "train/gen_time_s": seconds,
        "train/gen_tokens_per_s": tokens / seconds if seconds > 0 else math.nan,
    }


def training_batch(
    student: nn.Module,
    batch: dict[str, torch.Tensor],
    cfg: OnPolicyConfig,
    key: BatchKey,
    senses: SenseSampler | None = None,
    ends: DataEnds | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(the batch to train on, values to log) for the training batch ``key``: the data batch (without
    ``prompt_len``), or, when the batch is drawn on-policy, the student's own continuations with the
    sense arrays ``senses`` draws for them (None: no sense loss), each ending at its first stop token
    (the model's and ``ends.eos``; see the module doc) or at ``ends.seq_len`` tokens (``ends`` None:
    neither known). The logs hold ``train/on_policy`` (1 or 0) and :func:`generation_logs` whenever
    ``cfg.fraction > 0``."""
    seed, index, rank = key
    data = {k: v for k, v in batch.items() if k != PROMPT_LEN}
    if not is_on_policy(seed, index, cfg.fraction):
        return data, ({"train/on_policy": 0.0, **generation_logs(0, 0.0)} if cfg.fraction > 0 else {})
    gen = student.generation_config
    ends = ends or DataEnds()
    eos = stop_tokens(student, ends.eos)
    pad = eos[0] if gen.pad_token_id is None else gen.pad_token_id
    out = sample_batch(
        student, batch, cfg, stops=Stops(eos, pad, ends.seq_len), seed=sample_seed(seed, index, rank)
    )
    new = out.batch
    if senses is not None:
        arrays = senses(new["labels"].cpu().numpy(), [seed, SENSES, index, rank])
        new |= {k: torch.from_numpy(np.asarray(v)).to(new["labels"].device) for k, v in arrays.items()}
    return new, {"train/on_policy": 1.0, **generation_logs(out.new_tokens, out.seconds)}
