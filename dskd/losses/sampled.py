"""Sampled KD: an unbiased estimate of forward-KL distillation from tokens drawn from the teacher.

A teacher cache with ``cache.kd_format=sampled`` keeps, per position, ``N`` tokens drawn
(with replacement) from the teacher's distribution at the KD temperature, ``p_T = softmax(z / tau)``,
as distinct ids with their counts ``c`` (``sum c = N``), plus the teacher's exact entropy ``H(p_T)``
at ``tau``. With the student's ``q_S = softmax(s / tau)`` and the empirical target
``p_hat(v) = c_v / N``::

    KL(p_T || q_S) = -H(p_T) + E_{v ~ p_T}[-log q_S(v)]
    L_KD_N         = alpha * tau^2 * mean_p [ -H(p_T) - sum_v p_hat(v) log q_S(v) ]

``E[p_hat] = p_T``, so the loss is an unbiased estimate of the exact forward-KL KD and its gradient
with respect to the student's logits, ``tau * (q_S - p_hat)``, one of the exact ``tau * (q_S - p_T)``;
the sampling error shrinks as ``1 / sqrt(N)``. The exact entropy makes the *value* unbiased and
lower-variance (it carries no gradient). Only forward KL can be estimated this way from teacher
samples alone: reverse KL, Jensen-Shannon, skew KL and total variation need the teacher's
probability of tokens it was not sampled on (refused at config load, :mod:`dskd.config.rules`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from dskd.core.errors import DSKDError
from dskd.losses.config import SAMPLED_DIVERGENCES, KDConfig
from dskd.losses.kd import kd_mean

__all__ = ["SAMPLED_DIVERGENCES", "TeacherSamples", "sampled_kd_loss", "teacher_samples"]


class TeacherSamples(NamedTuple):
    """What a sampled teacher cache keeps per position, shapes ``[..., S]`` and ``[...]``.

    ``ids``: distinct sampled token ids (slots beyond the distinct ones hold id 0 with count 0);
    ``counts``: how often each was drawn (``sum = N`` per position); ``entropy``: the teacher's exact
    entropy at the sampling temperature; ``top1``: the teacher's most likely token (for the top-1
    agreement metric).
    """

    ids: torch.Tensor
    counts: torch.Tensor
    entropy: torch.Tensor
    top1: torch.Tensor


def _distinct(draws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(distinct ids, counts) of each row of ``draws [..., N]``, both ``[..., N]``, most drawn first."""
    s, _ = draws.sort(-1)
    new = torch.ones_like(s, dtype=torch.bool)
    new[..., 1:] = s[..., 1:] != s[..., :-1]
    slot = new.long().cumsum(-1) - 1  # slot of each draw's id
    counts = torch.zeros_like(s).scatter_add_(-1, slot, torch.ones_like(s))
    ids = torch.zeros_like(s).scatter_(-1, slot, s)
    order = counts.argsort(dim=-1, descending=True, stable=True)
    return ids.gather(-1, order), counts.gather(-1, order)


def teacher_samples(
    logits: torch.Tensor, n: int, tau: float, generators: Sequence[torch.Generator]
) -> TeacherSamples:
    """:class:`TeacherSamples` of full teacher logits ``[B, L, V]``: ``n`` draws per position from
    ``softmax(logits / tau)``, row ``b`` drawn with ``generators[b]`` (reproducible per sequence)."""
    if len(generators) != logits.shape[0]:
        raise DSKDError(f"{len(generators)} generators for {logits.shape[0]} sequences.")
    rows = []
    for row, g in zip(logits.detach(), generators, strict=True):  # one sequence at a time: [L, V] in float32
        z = row.float() / tau
        log_p = torch.log_softmax(z, -1)
        p = log_p.exp()
        entropy = -(p * log_p.clamp(min=torch.finfo(torch.float32).min)).sum(-1)
        draws = torch.multinomial(p, n, replacement=True, generator=g)
        rows.append((*_distinct(draws), entropy, z.argmax(-1)))
    return TeacherSamples(*(torch.stack(parts) for parts in zip(*rows, strict=True)))


def sampled_kd_loss(
    student_logits: torch.Tensor,
    teacher: TeacherSamples,
    mask: torch.Tensor | None = None,
    *,
    kd: KDConfig,
) -> torch.Tensor:
    """``alpha * tau^2 * mean_p [-H(p_T) - sum_v p_hat(v) log q_S(v)]`` (see the module doc).

    ``student_logits`` ``[..., V]``; ``teacher`` sampled at ``kd.tau``; ``mask`` ``[...]`` (None: all
    positions). An unbiased estimate of :func:`dskd.losses.kd.kd_loss` with forward KL. A slot with
    count 0 contributes exactly 0 to the value and the gradient, whatever the student's logit there.
    """
    if kd.divergence not in SAMPLED_DIVERGENCES:
        raise DSKDError(
            f"loss.kd.divergence={kd.divergence} cannot be estimated from teacher samples; sampled KD "
            f"supports {', '.join(SAMPLED_DIVERGENCES)} (use cache.kd_format=topk or "
            "teacher.mode=online)."
        )
    if teacher.ids.shape[:-1] != student_logits.shape[:-1]:
        raise DSKDError(
            f"Cached teacher samples {tuple(teacher.ids.shape[:-1])} and student logits "
            f"{tuple(student_logits.shape[:-1])} cover different positions."
        )
    device = student_logits.device
    counts = teacher.counts.to(device).float()
    weights = counts / counts.sum(-1, keepdim=True).clamp(min=1)
    log_q = torch.log_softmax(student_logits.float() / kd.tau, -1).gather(-1, teacher.ids.to(device).long())
    log_q = torch.where(counts > 0, log_q, 0.0)  # an unused slot adds exactly 0, even at a -inf logit
    per_pos = -teacher.entropy.to(device).float() - (weights * log_q).sum(-1)
    return kd_mean(per_pos, mask, kd=kd)
