"""Held-out language-model metrics: perplexity, and agreement with the teacher (top-1, KL).

The held-out text is a slice of Shakespeare's works (training uses the WordNet corpus), cut into
``n_blocks`` blocks of ``block_len`` tokens taken from the middle of the file (past the Project
Gutenberg header).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dskd.core.errors import AssetError
from dskd.core.progress import progress_bar


def heldout_blocks(path: Path, tokenizer: Any, n_blocks: int, block_len: int) -> torch.Tensor:
    """``[n_blocks, block_len]`` token ids from the middle of the text file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise AssetError(f"Cannot read held-out text '{path}': {e}. Re-fetch with `dskd assets`.") from e
    middle = len(text) // 2
    need_chars = n_blocks * block_len * 8
    ids = tokenizer(text[middle : middle + need_chars])["input_ids"]
    if len(ids) < n_blocks * block_len:
        raise AssetError(f"Held-out text '{path}' is too short for {n_blocks} blocks of {block_len} tokens.")
    return torch.tensor(ids[: n_blocks * block_len]).view(n_blocks, block_len)


@dataclass
class LMScores:
    """Metrics over the next-token predictions of the held-out blocks, overall and per block.

    All blocks have the same length, so a token average is the mean of the per-block averages
    (perplexity: the exponential of the mean per-block NLL).
    """

    perplexity: float
    top1_agreement: float | None
    kl: float | None
    n_tokens: int
    block_nll: list[float]
    """Mean next-token NLL of each block (nats)."""
    block_top1: list[float] | None
    """Top-1 agreement with the teacher in each block (None without a teacher)."""
    block_kl: list[float] | None
    """Mean KL(teacher || model) of each block (None without a teacher)."""


@torch.no_grad()
def lm_scores(model: Any, blocks: torch.Tensor, teacher: Any | None = None, batch_size: int = 8) -> LMScores:
    """Perplexity of ``model`` on ``blocks``; with a ``teacher``, top-1 agreement and KL(teacher || model)."""
    device = next(model.parameters()).device
    nll: list[float] = []
    agree: list[float] = []
    kl: list[float] = []
    for i in progress_bar(range(0, len(blocks), batch_size), desc="heldout", leave=False):
        ids = blocks[i : i + batch_size].to(device)
        logp = F.log_softmax(model(input_ids=ids).logits[:, :-1].float(), dim=-1)
        targets = ids[:, 1:]
        nll += (-logp.gather(-1, targets[..., None])).squeeze(-1).mean(-1).tolist()
        if teacher is not None:
            t_logp = F.log_softmax(teacher(input_ids=ids).logits[:, :-1].float(), dim=-1)
            agree += (t_logp.argmax(-1) == logp.argmax(-1)).float().mean(-1).tolist()
            kl += F.kl_div(logp, t_logp, log_target=True, reduction="none").sum(-1).mean(-1).tolist()
    with_teacher = teacher is not None
    return LMScores(
        perplexity=math.exp(statistics.fmean(nll)),
        top1_agreement=statistics.fmean(agree) if with_teacher else None,
        kl=statistics.fmean(kl) if with_teacher else None,
        n_tokens=blocks.shape[0] * (blocks.shape[1] - 1),
        block_nll=nll,
        block_top1=agree if with_teacher else None,
        block_kl=kl if with_teacher else None,
    )
