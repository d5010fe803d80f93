"""Held-out language-model metrics: perplexity, and agreement with the teacher (top-1, KL).

The held-out text is a slice of Shakespeare's works (training uses the WordNet corpus), cut into
``n_blocks`` blocks of ``block_len`` tokens taken from the middle of the file (past the Project
Gutenberg header).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from dskd.errors import AssetError


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
    """Token-averaged metrics over the next-token predictions of the held-out blocks."""

    perplexity: float
    top1_agreement: float | None
    kl: float | None
    n_tokens: int


@torch.no_grad()
def lm_scores(model: Any, blocks: torch.Tensor, teacher: Any | None = None, batch_size: int = 8) -> LMScores:
    """Perplexity of ``model`` on ``blocks``; with a ``teacher``, top-1 agreement and KL(teacher || model)."""
    device = next(model.parameters()).device
    nll = agree = kl = 0.0
    n = 0
    for i in tqdm(range(0, len(blocks), batch_size), desc="heldout", leave=False):
        ids = blocks[i : i + batch_size].to(device)
        logp = F.log_softmax(model(input_ids=ids).logits[:, :-1].float(), dim=-1)
        targets = ids[:, 1:]
        nll += float(-logp.gather(-1, targets[..., None]).sum())
        n += targets.numel()
        if teacher is not None:
            t_logp = F.log_softmax(teacher(input_ids=ids).logits[:, :-1].float(), dim=-1)
            agree += float((t_logp.argmax(-1) == logp.argmax(-1)).sum())
            kl += float(F.kl_div(logp, t_logp, log_target=True, reduction="sum"))
    return LMScores(
        perplexity=math.exp(nll / n),
        top1_agreement=agree / n if teacher is not None else None,
        kl=kl / n if teacher is not None else None,
        n_tokens=n,
    )
