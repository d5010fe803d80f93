"""Held-out scores of a student whose tokenizer is not the teacher's (cross-tokenizer KD).

The held-out blocks are the teacher's token ids (:func:`dskd.evaluation.lm_metrics.heldout_blocks`).
Each block is decoded to its text, and both tokenizers cut that text again
(:func:`dskd.data.alignment.align_text`, no specials, each side at most ``block_len`` tokens), so the
two models read the same characters up to where the shorter side stops. Per block:

- **NLL per token**: the mean next-token NLL of the model over its own tokens 1.. of the block (token 0
  has no prediction); ``perplexity`` is exp of the mean over blocks (as for a shared tokenizer).
- **nats per byte**: the summed next-token NLL over those tokens divided by the UTF-8 bytes they spell
  (the bytes past the first token). It does not depend on the vocabulary, so it compares a student
  with the teacher (scored the same way on its own tokens of the same text).
- **span ULD**: the ULD distance of :mod:`dskd.losses.uld` (``uld``, ``tau = 1``, ``merge = last``)
  between the student's and the teacher's distributions for each aligned span of text: the L1
  distance between the two merged span vectors each sorted in decreasing order (in [0, 2]; 0 when the
  sorted masses agree, blind to which token is which). The block's value is the mean over its spans.
  It is a distance between sorted probability masses, not a KL.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from dskd.core.batch import IGNORE_INDEX
from dskd.core.progress import progress_bar
from dskd.data.alignment import align_text, batch_of_rows
from dskd.losses.config import KDConfig
from dskd.losses.uld import SpanSide, span_losses

__all__ = ["CrossTokenizerScores", "block_texts", "nll_per_byte", "xtok_scores"]

SPAN_ULD = KDConfig(divergence="uld", tau=1.0, uld_merge="last")
"""The span distance of the held-out table: plain ULD at the models' own temperature."""


def block_texts(tokenizer: Any, blocks: torch.Tensor) -> list[str]:
    """The text of each held-out block (the teacher's ids decoded as they are, spaces untouched)."""
    return [tokenizer.decode(row.tolist(), clean_up_tokenization_spaces=False) for row in blocks]


def nll_per_byte(logits: torch.Tensor, labels: torch.Tensor, n_bytes: torch.Tensor) -> torch.Tensor:
    """``[B]`` summed next-token NLL (nats) over the labelled positions divided by ``n_bytes`` ``[B]``."""
    nll = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
    return nll.sum(-1) / n_bytes


@dataclass
class CrossTokenizerScores:
    """A model's held-out scores on its own tokenization of the blocks' text, overall and per block."""

    perplexity: float
    nats_per_byte: float
    span_uld: float | None
    n_tokens: int
    """Next-token predictions scored (the model's own tokens)."""
    block_nll: list[float]
    """Mean next-token NLL per own token of each block (nats)."""
    block_nats_per_byte: list[float]
    block_span_uld: list[float] | None
    """Mean span ULD of each block (None without a teacher)."""


def _per_row_mean(values: torch.Tensor, rows: torch.Tensor, n_rows: int) -> list[float]:
    total = values.new_zeros(n_rows).index_add(0, rows, values)
    return (total / torch.bincount(rows, minlength=n_rows).clamp(min=1)).tolist()


@torch.no_grad()
def xtok_scores(
    model: Any,
    tokenizers: tuple[Any, Any],
    texts: list[str],
    teacher: Any | None = None,
    block_len: int = 128,
    batch_size: int = 8,
) -> CrossTokenizerScores:
    """Scores of ``model`` (its tokenizer ``tokenizers[1]``) on ``texts``; with the ``teacher`` (its
    tokenizer ``tokenizers[0]``), the span ULD between them (see the module doc)."""
    t_tok, s_tok = tokenizers
    device = next(model.parameters()).device
    nll: list[float] = []
    per_byte: list[float] = []
    uld: list[float] = []
    n_tokens = 0
    for i in progress_bar(range(0, len(texts), batch_size), desc="heldout-xtok", leave=False):
        rows = [align_text(text, t_tok, s_tok, block_len) for text in texts[i : i + batch_size]]
        batch = {k: v.to(device) for k, v in batch_of_rows(rows, t_tok, s_tok).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        n_bytes = torch.tensor([float(s.spans[-1, 1] - s.spans[0, 1]) for _, s, _ in rows], device=device)
        counted = (batch["labels"] != IGNORE_INDEX).sum(-1)
        byte_nll = nll_per_byte(logits, batch["labels"], n_bytes)
        per_byte += byte_nll.tolist()
        nll += (byte_nll * n_bytes / counted).tolist()
        n_tokens += int(counted.sum())
        if teacher is not None:
            t_logits = teacher(
                input_ids=batch["teacher_input_ids"], attention_mask=batch["teacher_attention_mask"]
            )
            student = SpanSide(logits, batch["labels"], batch["student_span"])
            t_side = SpanSide(t_logits.logits.float(), batch["teacher_labels"], batch["teacher_span"])
            spans, seq = span_losses(student, t_side, SPAN_ULD)
            uld += _per_row_mean(spans, seq, len(rows))
    return CrossTokenizerScores(
        perplexity=math.exp(statistics.fmean(nll)),
        nats_per_byte=statistics.fmean(per_byte),
        span_uld=statistics.fmean(uld) if teacher is not None else None,
        n_tokens=n_tokens,
        block_nll=nll,
        block_nats_per_byte=per_byte,
        block_span_uld=uld if teacher is not None else None,
    )
