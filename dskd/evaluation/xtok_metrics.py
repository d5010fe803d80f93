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
- **span KL** (:func:`span_kl`): KL(teacher || student) of the two next-token distributions at the
  *first position of each aligned span*, restricted to the token strings both vocabularies share (the
  hybrid ULD loss's :class:`dskd.losses.uld.VocabMatch`) and each renormalised over them. A span starts
  at a cut both tokenizations share, so there the two models have read exactly the same text and both
  predict what comes next: the one place a next-token distribution of one vocabulary can be set
  against the other's, string by string. Every aligned span is scored this way (the span of token 0
  aside, which no position predicts); the positions inside a span of several tokens are not (the
  sides have read different text there). Unlike span ULD it sees which string carries which mass.
  What it leaves out is reported beside it: the share of the student's next-token predictions it
  scores (``scored``) and the mean probability the teacher and the student put on the shared strings
  at those positions (``teacher_mass``, ``student_mass``; the KL ignores the rest).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from dskd.core.batch import IGNORE_INDEX
from dskd.core.errors import DSKDError
from dskd.core.progress import progress_bar
from dskd.data.alignment import align_text, batch_of_rows
from dskd.losses.config import KDConfig
from dskd.losses.uld import SpanSide, VocabMatch, span_losses

__all__ = [
    "CrossTokenizerScores",
    "SpanKL",
    "SpanKLCoverage",
    "block_texts",
    "nll_per_byte",
    "span_kl",
    "xtok_scores",
]

SPAN_ULD = KDConfig(divergence="uld", tau=1.0, uld_merge="last")
"""The span distance of the held-out table: plain ULD at the models' own temperature."""


def block_texts(tokenizer: Any, blocks: torch.Tensor) -> list[str]:
    """The text of each held-out block (the teacher's ids decoded as they are, spaces untouched)."""
    return [tokenizer.decode(row.tolist(), clean_up_tokenization_spaces=False) for row in blocks]


def nll_per_byte(logits: torch.Tensor, labels: torch.Tensor, n_bytes: torch.Tensor) -> torch.Tensor:
    """``[B]`` summed next-token NLL (nats) over the labelled positions divided by ``n_bytes`` ``[B]``."""
    nll = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
    return nll.sum(-1) / n_bytes


@dataclass(frozen=True)
class SpanKL:
    """Per scored span: the restricted KL, the two models' mass on the shared strings, its sequence."""

    kl: torch.Tensor
    """``[S]`` KL(teacher || student) over the shared strings, each side renormalised over them."""
    teacher_mass: torch.Tensor
    """``[S]`` the teacher's probability on the shared strings (before renormalising)."""
    student_mass: torch.Tensor
    """``[S]`` the student's probability on the shared strings."""
    seq: torch.Tensor
    """``[S]`` int64 the sequence of each span."""


def _first_positions(span: torch.Tensor, width: int) -> torch.Tensor:
    """``[B * width]`` flat position ``b * L + p`` of the first position of span key ``b * width + k``
    (-1 where the sequence has no position in that span)."""
    b, pos = torch.nonzero(span >= 0, as_tuple=True)
    out = torch.full((span.shape[0] * width,), -1, dtype=torch.long, device=span.device)
    flat = b * span.shape[1] + pos
    return out.scatter_reduce(0, b * width + span[b, pos], flat, "amin", include_self=False)


def span_kl(student: SpanSide, teacher: SpanSide, match: VocabMatch) -> SpanKL:
    """KL(teacher || student) at the first position of every span both sides have (see the module doc),
    over the strings of ``match``, each side's softmax renormalised over them; ``targets`` are not read."""
    width = int(max(student.span.max(), teacher.span.max(), 0)) + 1
    s_first, t_first = _first_positions(student.span, width), _first_positions(teacher.span, width)
    keys = torch.nonzero((s_first >= 0) & (t_first >= 0)).squeeze(-1)
    s_logits = student.logits.float().flatten(0, 1)[s_first[keys]]
    t_logits = teacher.logits.detach().float().flatten(0, 1)[t_first[keys]]
    t_ids, s_ids = match.on(t_logits, s_logits)
    if len(t_ids) == 0:
        raise DSKDError("span_kl needs token strings both vocabularies share; these share none.")
    log_t, log_s = t_logits[:, t_ids].log_softmax(-1), s_logits[:, s_ids].log_softmax(-1)
    return SpanKL(
        kl=(log_t.exp() * (log_t - log_s)).sum(-1),
        teacher_mass=(t_logits[:, t_ids].logsumexp(-1) - t_logits.logsumexp(-1)).exp(),
        student_mass=(s_logits[:, s_ids].logsumexp(-1) - s_logits.logsumexp(-1)).exp(),
        seq=torch.div(keys, width, rounding_mode="floor"),
    )


@dataclass(frozen=True)
class SpanKLCoverage:
    """What span KL scores and what it leaves out, pooled over all blocks."""

    scored: float
    """Span starts scored per next-token prediction of the student (its other positions are not)."""
    teacher_mass: float
    """Mean teacher probability on the shared strings at the scored positions."""
    student_mass: float
    """Mean student probability on the shared strings at the scored positions."""


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
    span_kl: float | None = None
    block_span_kl: list[float] | None = None
    """Mean span KL of each block (None without a teacher)."""
    span_kl_coverage: SpanKLCoverage | None = None


def _per_row_mean(values: torch.Tensor, rows: torch.Tensor, n_rows: int) -> list[float]:
    total = values.new_zeros(n_rows).index_add(0, rows, values)
    return (total / torch.bincount(rows, minlength=n_rows).clamp(min=1)).tolist()


@dataclass
class _TeacherTerms:
    """The per-block span ULD and span KL, and the pooled sums behind span KL's coverage."""

    match: VocabMatch
    uld: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    n_spans: int = 0
    teacher_mass: float = 0.0
    student_mass: float = 0.0

    def add(self, student: SpanSide, teacher: SpanSide) -> None:
        """Score one batch of blocks."""
        n_rows = student.span.shape[0]
        spans, seq = span_losses(student, teacher, SPAN_ULD)
        self.uld += _per_row_mean(spans, seq, n_rows)
        kl = span_kl(student, teacher, self.match)
        self.kl += _per_row_mean(kl.kl, kl.seq, n_rows)
        self.n_spans += len(kl.seq)
        self.teacher_mass += float(kl.teacher_mass.sum())
        self.student_mass += float(kl.student_mass.sum())

    def coverage(self, n_predictions: int) -> SpanKLCoverage:
        spans = max(1, self.n_spans)
        return SpanKLCoverage(
            self.n_spans / max(1, n_predictions), self.teacher_mass / spans, self.student_mass / spans
        )


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
    tokenizer ``tokenizers[0]``), the span ULD and span KL between them (see the module doc)."""
    t_tok, s_tok = tokenizers
    device = next(model.parameters()).device
    nll: list[float] = []
    per_byte: list[float] = []
    terms = _TeacherTerms(VocabMatch.of(t_tok, s_tok)) if teacher is not None else None
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
        if terms is not None:
            t_logits = teacher(
                input_ids=batch["teacher_input_ids"], attention_mask=batch["teacher_attention_mask"]
            ).logits.float()
            student = SpanSide(logits, batch["labels"], batch["student_span"])
            terms.add(student, SpanSide(t_logits, batch["teacher_labels"], batch["teacher_span"]))
    return CrossTokenizerScores(
        perplexity=math.exp(statistics.fmean(nll)),
        nats_per_byte=statistics.fmean(per_byte),
        span_uld=statistics.fmean(terms.uld) if terms else None,
        n_tokens=n_tokens,
        block_nll=nll,
        block_nats_per_byte=per_byte,
        block_span_uld=terms.uld if terms else None,
        span_kl=statistics.fmean(terms.kl) if terms else None,
        block_span_kl=terms.kl if terms else None,
        span_kl_coverage=terms.coverage(n_tokens) if terms else None,
    )
