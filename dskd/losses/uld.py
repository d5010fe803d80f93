"""Cross-tokenizer KD: Universal Logit Distillation over aligned text spans, and its hybrid (GOLD).

The student and the teacher tokenize one text differently; ``dskd.data.alignment`` numbers the spans
of text that a run of teacher tokens and a run of student tokens both cover exactly. This module
compares, span by span, the two models' distributions for that text (Boizard et al. 2024, "Towards
Cross-Tokenizer Distillation: the Universal Logit Distillation Loss"; TRL's GOLD trainer extends it to
multi-token spans and the hybrid). Each side is a :class:`SpanSide`: logits ``[B, L, V]``, and for each
position the token its distribution scores (``targets``) and the span that token belongs to
(``span``, -1: none).

1. **Span distributions.** ``p = softmax(logits / tau)`` at every position of a span; a span of one
   position keeps its ``p``. A span of several is merged into one unnormalised vector, GOLD's way:
   ``merge=last`` takes the last position's ``p`` times the probabilities ``p_j(target_j)`` of the
   earlier positions (with next-token rows: the joint probability of the span's earlier tokens and
   each candidate last token, the chain rule; GOLD's ``"bayesian"``); ``merge=first`` takes the first
   position's ``p`` times those of the later positions (GOLD's ``"observed"``). Each factor is clamped
   at 1e-8 from below, as in GOLD.
2. **ULD** (``uld``): per span, the L1 distance between the two span vectors each sorted in
   decreasing order, the shorter padded with zeros to the larger vocabulary: the Wasserstein-1 distance
   between the sorted probability masses, blind to which token is which.
3. **Hybrid** (``uld_hybrid``): the tokens whose strings are the same in both vocabularies
   (:class:`VocabMatch`) are compared token by token with the generalized JSD of ``beta``
   (:func:`dskd.losses.kd.generalized_jsd` on ``log(max(p, 1e-8))`` of the unnormalised span vectors
   restricted to those tokens, as GOLD does); the other tokens of each side by the sorted L1 of 2.
   The two terms are weighted by ``uld_matched_weight`` and ``uld_unmatched_weight``, or, both null,
   by the share ``K / V_teacher`` of matched tokens and its complement (GOLD's adaptive weights).
4. **Reduction** (GOLD's): the mean over the spans of each sequence, then the mean over the ``B``
   sequences (one without a span counts as 0). A span counts when both sides have a position in it.

No ``tau^2`` factor and no ``alpha`` are applied (GOLD applies neither to ULD); the teacher's logits
are constants. Agreement with ``trl.experimental.gold.gold_trainer.ULDLoss``, values and gradients,
plain and hybrid, both merges, is tested in tests/losses/test_uld.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dskd.core.errors import DSKDError
from dskd.losses.config import ULD_DIVERGENCES, KDConfig
from dskd.losses.kd import generalized_jsd

__all__ = ["EPS", "SpanSide", "VocabMatch", "span_losses", "uld_loss"]

EPS = 1e-8
"""GOLD's floor of a merged factor and of a probability before its log."""


@dataclass(frozen=True)
class SpanSide:
    """One model's side of a cross-tokenizer batch."""

    logits: torch.Tensor
    """``[B, L, V]`` logits."""
    targets: torch.Tensor
    """``[B, L]`` int64 token whose probability each position contributes when its span is merged; read
    only where ``span >= 0`` (a batch's ``labels``, ``IGNORE_INDEX`` elsewhere, will do)."""
    span: torch.Tensor
    """``[B, L]`` int64 span id of each position within its sequence (0, 1, ...), -1: none."""


@dataclass(frozen=True)
class VocabMatch:
    """The tokens whose strings are the same in both vocabularies, as pairs of ids."""

    teacher: torch.Tensor
    """``[K]`` int64 teacher ids, increasing."""
    student: torch.Tensor
    """``[K]`` int64 the student id of the same string."""

    @classmethod
    def of(cls, teacher_tokenizer, student_tokenizer) -> VocabMatch:
        """From the tokenizers' ``get_vocab()`` (added tokens included)."""
        student = student_tokenizer.get_vocab()
        pairs = sorted((tid, student[s]) for s, tid in teacher_tokenizer.get_vocab().items() if s in student)
        ids = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)
        return cls(ids[:, 0], ids[:, 1])

    def on(self, teacher: torch.Tensor, student: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher and student ids on the devices of ``teacher`` and ``student`` (``[..., V]``
        vectors of each model); :class:`DSKDError` when an id lies past a vector's last entry."""
        t_ids, s_ids = self.teacher.to(teacher.device), self.student.to(student.device)
        if len(t_ids) and (t_ids.max() >= teacher.shape[-1] or s_ids.max() >= student.shape[-1]):
            raise DSKDError(
                f"The matched tokens reach ids {int(t_ids.max())} (teacher) and {int(s_ids.max())} "
                f"(student), past the logits' {teacher.shape[-1]} and {student.shape[-1]} entries: build "
                "VocabMatch from the tokenizers of these models."
            )
        return t_ids, s_ids


def _merge(side: SpanSide, keys: torch.Tensor, width: int, kd: KDConfig) -> torch.Tensor:
    """``[len(keys), V]`` merged span vectors of ``side`` for the flat span keys ``b * width + span``."""
    b, pos = torch.nonzero(side.span >= 0, as_tuple=True)
    key = b * width + side.span[b, pos]
    logits = side.logits[b, pos]
    probs = torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)) / kd.tau, dim=-1)
    row = torch.arange(len(key), device=key.device)
    base = torch.full((width * side.span.shape[0],), -1, dtype=torch.long, device=key.device)
    base = base.scatter_reduce(0, key, row, "amax" if kd.uld_merge == "last" else "amin", include_self=False)
    scalar = probs[row, side.targets[b, pos]].clamp_min(EPS).log()
    log_factor = torch.zeros(len(base), dtype=probs.dtype, device=probs.device)
    log_factor = log_factor.index_add(0, key, torch.where(base[key] == row, 0.0, scalar))
    return probs[base[keys]] * log_factor[keys].exp().unsqueeze(-1)


def _sorted_l1(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``[S]`` L1 distance between the rows of ``p`` and ``q``, each sorted decreasingly, zero-padded."""
    if p.shape[-1] == 0 or q.shape[-1] == 0:
        return p.new_zeros(p.shape[0])
    p, q = p.sort(dim=-1, descending=True).values, q.sort(dim=-1, descending=True).values
    width = max(p.shape[-1], q.shape[-1])
    p = torch.nn.functional.pad(p, (0, width - p.shape[-1]))
    q = torch.nn.functional.pad(q, (0, width - q.shape[-1]))
    return (p - q).abs().sum(-1)


def _hybrid(student: torch.Tensor, teacher: torch.Tensor, match: VocabMatch, kd: KDConfig) -> torch.Tensor:
    """``[S]`` GOLD's hybrid: generalized JSD on the matched tokens, sorted L1 on the others."""
    t_ids, s_ids = match.on(teacher, student)
    log_t = teacher[:, t_ids].clamp_min(EPS).log()
    log_s = student[:, s_ids].clamp_min(EPS).log()
    matched = generalized_jsd(log_t, log_s, kd.beta)
    t_rest = torch.ones(teacher.shape[-1], dtype=torch.bool, device=teacher.device).index_fill(
        0, t_ids, False
    )
    s_rest = torch.ones(student.shape[-1], dtype=torch.bool, device=student.device).index_fill(
        0, s_ids, False
    )
    unmatched = _sorted_l1(student[:, s_rest], teacher[:, t_rest])
    if kd.uld_matched_weight is None:
        w_matched = len(t_ids) / max(1, teacher.shape[-1])
        return w_matched * matched + (1.0 - w_matched) * unmatched
    return kd.uld_matched_weight * matched + kd.uld_unmatched_weight * unmatched


def span_losses(
    student: SpanSide, teacher: SpanSide, kd: KDConfig, match: VocabMatch | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``([S], [S])``: the loss of every span both sides have, and the sequence it belongs to."""
    if kd.divergence not in ULD_DIVERGENCES:
        raise DSKDError(f"uld_loss computes {' or '.join(ULD_DIVERGENCES)}, not {kd.divergence}.")
    if kd.divergence == "uld_hybrid" and match is None:
        raise DSKDError(
            "loss.kd.divergence=uld_hybrid needs the matched tokens (VocabMatch.of(teacher, student))."
        )
    width = int(max(student.span.max(), teacher.span.max(), 0)) + 1
    both = _present(student.span, width) & _present(teacher.span, width)
    keys = torch.nonzero(both).squeeze(-1)
    s = _merge(student, keys, width, kd)
    t = _merge(SpanSide(teacher.logits.detach(), teacher.targets, teacher.span), keys, width, kd)
    per_span = _sorted_l1(s, t) if kd.divergence == "uld" else _hybrid(s, t, match, kd)
    return per_span, torch.div(keys, width, rounding_mode="floor")


def _present(span: torch.Tensor, width: int) -> torch.Tensor:
    """``[B * width]`` bool: whether flat span key ``b * width + k`` has a position in ``span``."""
    b, pos = torch.nonzero(span >= 0, as_tuple=True)
    out = torch.zeros(span.shape[0] * width, dtype=torch.bool, device=span.device)
    return out.index_fill(0, b * width + span[b, pos], True)


def uld_loss(
    student: SpanSide, teacher: SpanSide, kd: KDConfig, match: VocabMatch | None = None
) -> torch.Tensor:
    """The mean over sequences of the mean span loss of each (see the module doc); 0 without spans."""
    per_span, seq = span_losses(student, teacher, kd, match)
    n_seq = student.span.shape[0]
    total = per_span.new_zeros(n_seq).index_add(0, seq, per_span)
    count = torch.bincount(seq, minlength=n_seq).clamp(min=1)
    return (total / count).mean()
