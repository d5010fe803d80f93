"""Config of the teacher and the student."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from dskd.ranges import ranged

Dtype = Literal["auto", "float32", "bfloat16", "float16"]
DTYPES: tuple[str, ...] = get_args(Dtype)


@dataclass
class TeacherConfig:
    model: str = "smollm2-135m-instruct"
    """Asset name, local Hugging Face folder or hub id."""
    revision: str | None = None
    """Hub revision (ignored for assets and folders)."""
    dtype: Dtype = "auto"
    """auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16."""
    mode: Literal["online", "cached"] = "online"
    """online (forward every step) | cached (read the teacher's KD targets and hidden states from a
    teacher cache, docs/teacher_cache.md)."""
    cache_dir: str = "${artifacts_dir}/teacher_cache"
    """Where the teacher cache lives (mode=cached)."""
    cache_targets: Literal["sampled", "topk"] = "sampled"
    """KD targets of the cache: sampled (cache_samples tokens drawn from the teacher at loss.kd.tau, an
    unbiased estimate of forward-KL KD, dskd.losses.sampled) | topk (top cache_top_k logits plus a
    tail bucket, a biased lower bound that works with every divergence, dskd.losses.topk)."""
    cache_samples: int = ranged(64, ge=1, le=255)
    """Draws per position of cache_targets=sampled (the sampling error of KD shrinks as 1/sqrt)."""
    cache_seed: int = ranged(0, ge=0, le=2**63 - 1)
    """Seed of the cache's draws (each sequence's draws depend only on it and the sequence)."""
    cache_top_k: int = ranged(1024, ge=1)
    """k of the teacher cache's top-k logits (cache_targets=topk). Measured on the tiny preset at
    tau=2: k=64 gives ~20% of the exact KD value, 1024 ~50%, 4096 ~72%; tau=1 needs fewer."""
    cache_hidden_positions: Literal["sense", "all"] = "sense"
    """Positions whose teacher hidden states the cache stores: sense (only those whose target has
    senses in the sense dictionary or lexicon neighbours: all the sense loss can read) | all."""


@dataclass
class StudentConfig:
    kind: Literal["truncated", "hf"] = "truncated"
    """truncated (teacher's first `num_layers` layers, paper recipe) | hf (any causal LM in `model`)."""
    model: str | None = None
    """For kind=hf: asset name, folder or hub id."""
    num_layers: int = ranged(16, ge=1)
    """Layers kept from the teacher (kind=truncated)."""
    trainable_top_layers: int = ranged(2, ge=0)
    """Only the top layers train; embeddings, final norm and LM head are frozen (kind=truncated)."""
    projection: Literal["auto", "linear", "none"] = "auto"
    """auto (linear when hidden sizes differ) | linear | none."""
