"""Top-k KD: the distillation loss from the teacher's top-k logits plus a tail-mass bucket.

A teacher cache (``dskd.teacher_cache``) keeps, per position, the teacher's ``k`` largest logits
(their ids and values), the log-sum-exp of all its logits at temperature 1 and at ``tau``, and the
log of the probability mass outside the top-k at ``tau``. That is enough to know the teacher's
distribution at ``tau`` *exactly* on k + 1 categories: the top-k tokens, and one bucket for all the
others. The loss is the divergence between the teacher and the student on those k + 1 categories::

    p_T(v)    = exp(z_v / tau - lse(z / tau))                      v in top-k   (temperature first)
    p_T(tail) = exp(lse_{v not in top-k}(z_v / tau) - lse(z / tau))             (exact, not 1 - sum)
    q_S(v)    = softmax(s / tau)_v                                  v in top-k   (student's full softmax)
    q_S(tail) = sum_{v not in top-k} softmax(s / tau)_v                          (log-sum-exp, exact)
    L_KD_k    = alpha * tau^2 * mean_p D(p_T[p] || q_S[p])   over the k + 1 categories

By the chain rule of KL this drops only the teacher-vs-student mismatch *inside* the tail
(``p_T(tail) * KL(p_T(.|tail) || q_S(.|tail))`` for forward KL), so it is a lower bound of the full
forward KL that tightens as k grows and equals it for k = V (the tail is then empty on both sides).
Any divergence of :mod:`dskd.losses.kd` can be used; the bucket probabilities go through the same
:func:`~dskd.losses.kd.divergence_per_position` (log-probabilities are their own logits at tau = 1).
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import torch

from dskd.core.errors import DSKDError
from dskd.losses.config import KDConfig
from dskd.losses.kd import divergence_per_position, kd_mean

__all__ = ["TeacherTopK", "student_bucket_log_probs", "teacher_topk", "teacher_topk_at", "topk_kd_loss"]


class TeacherTopK(NamedTuple):
    """What a teacher cache keeps per position (shapes ``[..., k]`` and ``[...]``), at one ``tau``.

    ``log_probs``: log-probabilities at temperature 1 of the top-k tokens (``z_v - lse``; the raw
    logits are ``log_probs + lse``); ``indices``: their token ids (descending probability);
    ``lse``: ``logsumexp(z)``; ``lse_tau``: ``logsumexp(z / tau)``; ``tail_tau``: log of the teacher's
    mass outside the top-k at ``tau`` (``-inf`` when k = V).
    """

    log_probs: torch.Tensor
    indices: torch.Tensor
    lse: torch.Tensor
    lse_tau: torch.Tensor
    tail_tau: torch.Tensor

    def bucket_log_probs(self, tau: float) -> torch.Tensor:
        """Teacher log-probabilities at ``tau`` on the k + 1 categories ``[..., k + 1]`` (float32)."""
        lse = self.lse.float().unsqueeze(-1)
        top = (self.log_probs.float() + lse) / tau - self.lse_tau.float().unsqueeze(-1)
        tail = (self.tail_tau.float() - self.lse_tau.float()).unsqueeze(-1)
        return torch.cat([top, tail], dim=-1)


def _tail_logsumexp(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``logsumexp`` of ``x [..., V]`` over the entries not in ``indices [..., k]`` (lowest float if none).

    The excluded entries are set to the lowest finite float rather than ``-inf``, so that an empty
    complement (k = V) gives a finite value and a finite gradient (``-inf`` would give NaN).
    """
    low = torch.finfo(x.dtype).min
    return x.scatter(-1, indices, low).logsumexp(-1).clamp(min=low)


def teacher_topk(logits: torch.Tensor, k: int, tau: float) -> TeacherTopK:
    """The :class:`TeacherTopK` of full teacher logits ``[..., V]`` (what the cache build stores)."""
    return teacher_topk_at(logits, k, [tau])[0]


def teacher_topk_at(logits: torch.Tensor, k: int, taus: list[float]) -> list[TeacherTopK]:
    """:func:`teacher_topk` at several temperatures; the top-k and ``lse`` are computed once."""
    if not 1 <= k <= logits.shape[-1]:
        raise DSKDError(f"cache.top_k={k} must lie in [1, vocabulary size {logits.shape[-1]}].")
    z = logits.detach().float()
    lse = z.logsumexp(-1)
    values, indices = z.topk(k, dim=-1)
    log_probs, full = values - lse.unsqueeze(-1), k == z.shape[-1]
    out = []
    for tau in taus:
        scaled = z / tau
        tail = torch.full_like(lse, float("-inf")) if full else _tail_logsumexp(scaled, indices)
        out.append(TeacherTopK(log_probs, indices, lse, scaled.logsumexp(-1), tail))
    return out


NEAR_ONE = 1e-3
"""Top-k mass above ``1 - NEAR_ONE``: the tail is recomputed over the complement (no cancellation)."""


TINY_TAIL = -80.0
"""Student tail log-mass below which ``1 / q_tail`` is not formed (it would overflow float32)."""


class _StudentBuckets(torch.autograd.Function):
    """Student log-probabilities at ``tau`` on the k + 1 categories, with a hand-written backward.

    With ``q = softmax(s / tau)``, ``K`` the top-k ids, ``g`` the incoming gradient [..., k + 1]
    and ``G = sum(g)``, the gradient with respect to the logits is::

        d/ds_u = (g_j - G q_u) / tau                        u = K_j
        d/ds_u = (g_tail q_u / q_tail - G q_u) / tau        u not in K

    which is one softmax and one multiply over the vocabulary (autograd through ``logsumexp``,
    ``gather`` and the division takes several passes and allocations).
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, idx: torch.Tensor, tau: float) -> torch.Tensor:  # type: ignore[override]
        x = logits.to(torch.promote_types(logits.dtype, torch.float32)) / tau
        lse = x.logsumexp(-1, keepdim=True)
        top = x.gather(-1, idx) - lse
        mass = top.exp().sum(-1)
        near = mass > 1 - NEAR_ONE
        tail = torch.log1p(-torch.where(near, torch.zeros_like(mass), mass))
        if near.any():  # the top-k hold almost all the mass: sum the complement instead (no cancellation)
            tail[near] = _tail_logsumexp(x[near], idx[near]) - lse[near].squeeze(-1)
        ctx.save_for_backward(x, lse, idx, top, tail)
        ctx.tau, ctx.in_dtype = tau, logits.dtype
        return torch.cat([top, tail.unsqueeze(-1)], dim=-1)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        x, lse, idx, top, tail = ctx.saved_tensors
        g_top, g_tail = g[..., :-1], g[..., -1]
        total = g.sum(-1)
        safe = tail > TINY_TAIL
        coef = torch.where(safe, g_tail * torch.exp(-tail.clamp(min=TINY_TAIL)), 0.0) - total
        grad = torch.softmax(x, -1).mul_(coef.unsqueeze(-1))
        if not safe.all():  # a tiny tail: q_u / q_tail in the log domain, row by row
            r = ~safe
            ratio = torch.exp(x[r] - lse[r] - tail[r].unsqueeze(-1)).nan_to_num_(posinf=0.0)
            grad[r] += g_tail[r].unsqueeze(-1) * ratio  # top-k entries are overwritten below
        grad.scatter_(-1, idx, g_top - total.unsqueeze(-1) * top.exp())
        return grad.div_(ctx.tau).to(ctx.in_dtype), None, None


def student_bucket_log_probs(student_logits: torch.Tensor, indices: torch.Tensor, tau: float) -> torch.Tensor:
    """Student log-probabilities at ``tau`` on the k + 1 categories of ``indices`` ``[..., k + 1]``.

    One pass over the vocabulary (``logsumexp``): the tail is ``log(1 - sum of the top-k
    probabilities)``, except where the top-k hold more than ``1 - NEAR_ONE`` of the mass (e.g.
    k = V), where that difference would cancel and the tail is summed over the complement instead.
    The backward is written by hand (:class:`_StudentBuckets`).
    """
    return _StudentBuckets.apply(student_logits, indices.long(), tau)


def topk_kd_loss(
    student_logits: torch.Tensor,
    teacher: TeacherTopK,
    mask: torch.Tensor | None = None,
    *,
    kd: KDConfig,
) -> torch.Tensor:
    """``alpha * tau^2 * mean_p D(p_T[p], q_S[p])`` on the k + 1 categories (see module doc).

    ``student_logits`` ``[..., V]``; ``teacher`` a :class:`TeacherTopK` computed at ``kd.tau``;
    ``mask`` ``[...]`` (None: all positions). Equal to :func:`dskd.losses.kd.kd_loss` when k = V.
    """
    if teacher.indices.shape[:-1] != student_logits.shape[:-1]:
        raise DSKDError(
            f"Cached teacher outputs {tuple(teacher.indices.shape[:-1])} and student logits "
            f"{tuple(student_logits.shape[:-1])} cover different positions."
        )
    log_t = teacher.bucket_log_probs(kd.tau).to(student_logits.device)
    log_s = student_bucket_log_probs(student_logits, teacher.indices.to(student_logits.device), kd.tau)
    per_pos = divergence_per_position(log_s, log_t, kd=replace(kd, tau=1.0))  # already log-probabilities
    return kd_mean(per_pos, mask, kd=kd)
