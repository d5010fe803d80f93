"""Config of the teacher cache (the ``cache`` section): where it lives and what it stores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dskd.config.ranges import ranged


@dataclass
class CacheConfig:
    """The teacher cache that ``teacher.mode=cached`` reads (``dskd cache build`` writes it)."""

    dir: str = "${artifacts_dir}/teacher_cache"
    """Where the teacher cache lives (teacher.mode=cached)."""
    kd_format: Literal["sampled", "topk"] = "sampled"
    """How the cache stores the teacher's KD distribution: sampled (`samples` tokens drawn from the
    teacher at loss.kd.tau, an unbiased estimate of forward-KL KD, dskd.losses.sampled) | topk (top
    `top_k` logits plus a tail bucket, a biased lower bound that works with every divergence,
    dskd.losses.topk)."""
    samples: int = ranged(64, ge=1, le=255)
    """Draws per position of kd_format=sampled (the sampling error of KD shrinks as 1/sqrt)."""
    seed: int = ranged(0, ge=0, le=2**63 - 1)
    """Seed of the cache's draws (each sequence's draws depend only on it and the sequence)."""
    top_k: int = ranged(1024, ge=1)
    """k of the teacher cache's top-k logits (kd_format=topk). Measured on the tiny preset at
    tau=2: k=64 gives ~20% of the exact KD value, 1024 ~50%, 4096 ~72%; tau=1 needs fewer."""
    hidden_positions: Literal["sense", "all"] = "sense"
    """Positions whose teacher hidden states the cache stores: sense (only those whose target has
    senses in the sense dictionary or lexicon neighbours: all the sense loss can read) | all."""
