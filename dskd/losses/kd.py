"""Logit distillation: divergences, masked KD loss, and a chunked fused CE + KD from hidden states.

Every divergence is computed in float32 from ``log_softmax`` of the temperature-scaled logits, so
``-inf`` logits (masked vocabulary entries) and very large logits give finite, NaN-free values
wherever the divergence itself is finite. ``p_T`` is the teacher's distribution, ``p_S`` the
student's, both at temperature ``tau``:

- ``forward_kl``: KL(p_T || p_S) (default; what the released code uses)
- ``reverse_kl``: KL(p_S || p_T)
- ``js``: Jensen-Shannon, 0.5 KL(p_T || m) + 0.5 KL(p_S || m), m = (p_T + p_S) / 2
- ``skew_kl``: KL(p_T || a p_T + (1 - a) p_S) with a = ``skew`` (DistiLLM's skew forward KL)
- ``tv``: total variation, 0.5 sum |p_T - p_S|
- ``gjsd``: generalized JSD with b = ``beta`` (TRL's ``GKDTrainer.generalized_jsd_loss``),
  b KL(p_T || m) + (1 - b) KL(p_S || m), m = b p_T + (1 - b) p_S; b = 0 is forward KL and b = 1
  reverse KL (the limits, as TRL defines them; the formula itself vanishes there)

``L_KD = alpha * tau^2 * mean over valid positions of D``. Every function takes these settings as
one :class:`~dskd.losses.config.KDConfig` passed by name (``kd=cfg.loss.kd``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from dskd.core.batch import IGNORE_INDEX
from dskd.core.errors import DSKDError
from dskd.losses.config import (
    DIVERGENCES,
    POSITION_DIVERGENCES,
    ULD_DIVERGENCES,
    KDConfig,
    check_divergence,
)

__all__ = [
    "CEKD",
    "DIVERGENCES",
    "POSITION_DIVERGENCES",
    "HeadInput",
    "ce_and_kd_chunked",
    "check_divergence",
    "divergence_per_position",
    "generalized_jsd",
    "kd_loss",
    "kd_mean",
    "position_mask",
    "validation_sums_chunked",
]


def _kl_from_logs(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """sum_v p (log p - log q) over the last dim (log-probabilities finite, see :func:`_log_probs`)."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def _log_probs(logits: torch.Tensor, tau: float) -> torch.Tensor:
    """float32 ``log_softmax(logits / tau)`` with -inf raised to the lowest finite float.

    A zero probability then contributes exactly 0 to every sum below, and no ``-inf - -inf`` (NaN)
    can reach a value or a gradient; the clamp passes no gradient to those entries, as softmax would.
    """
    log_p = torch.log_softmax(logits.float() / tau, dim=-1)
    return log_p.clamp(min=torch.finfo(torch.float32).min)


def check_per_position(kd: KDConfig) -> None:
    """Raise :class:`DSKDError` for a divergence that is not per position over one shared vocabulary."""
    check_divergence(kd.divergence, kd.skew)
    if kd.divergence in ULD_DIVERGENCES:
        raise DSKDError(
            f"loss.kd.divergence={kd.divergence} compares aligned text spans of two tokenizations "
            "(dskd.losses.uld.uld_loss), not the positions of one shared vocabulary."
        )


def divergence_per_position(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, kd: KDConfig
) -> torch.Tensor:
    """``kd.divergence`` D(p_T, p_S) at temperature ``kd.tau`` for each position: ``[..., V] -> [...]``
    in float32 (``kd.alpha`` is not applied)."""
    divergence, tau, skew = kd.divergence, kd.tau, kd.skew
    check_per_position(kd)
    if student_logits.shape != teacher_logits.shape:
        raise DSKDError(
            f"Student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape; the student and teacher must share the "
            "vocabulary (slice a padded LM head to the tokenizer's vocabulary size first)."
        )
    log_s = _log_probs(student_logits, tau)
    log_t = _log_probs(teacher_logits, tau)
    if divergence == "forward_kl":
        return _kl_from_logs(log_t, log_s)
    if divergence == "reverse_kl":
        return _kl_from_logs(log_s, log_t)
    if divergence == "js":
        log_m = torch.logaddexp(log_t, log_s) - math.log(2.0)
        return 0.5 * _kl_from_logs(log_t, log_m) + 0.5 * _kl_from_logs(log_s, log_m)
    if divergence == "skew_kl":
        if skew == 0.0:
            return _kl_from_logs(log_t, log_s)
        log_mix = torch.logaddexp(log_t + math.log(skew), log_s + math.log1p(-skew))
        return _kl_from_logs(log_t, log_mix)
    if divergence == "gjsd":
        return generalized_jsd(log_t, log_s, kd.beta)
    return 0.5 * (log_t.exp() - log_s.exp()).abs().sum(-1)


def generalized_jsd(log_t: torch.Tensor, log_s: torch.Tensor, beta: float) -> torch.Tensor:
    """beta KL(p_T || m) + (1 - beta) KL(p_S || m), m = beta p_T + (1 - beta) p_S; forward KL at
    beta = 0 and reverse KL at beta = 1."""
    if beta == 0.0:
        return _kl_from_logs(log_t, log_s)
    if beta == 1.0:
        return _kl_from_logs(log_s, log_t)
    log_m = torch.logaddexp(log_t + math.log(beta), log_s + math.log1p(-beta))
    return beta * _kl_from_logs(log_t, log_m) + (1.0 - beta) * _kl_from_logs(log_s, log_m)


def position_mask(labels: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Positions that count: ``labels != IGNORE_INDEX`` and (if given) ``attention_mask != 0``."""
    mask = labels != IGNORE_INDEX
    if attention_mask is not None:
        mask = mask & attention_mask.bool()
    return mask


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    kd: KDConfig,
) -> torch.Tensor:
    """``alpha * tau^2 * mean_p D(p_T[p], p_S[p])`` over positions where ``mask`` is true.

    Logits are ``[..., V]``; ``mask`` is ``[...]`` (None: all positions). The teacher logits are
    treated as constants. No valid position gives 0 (still connected to the student's graph).
    """
    per_pos = divergence_per_position(student_logits, teacher_logits.detach(), kd=kd)
    return kd_mean(per_pos, mask, kd=kd)


def kd_mean(per_pos: torch.Tensor, mask: torch.Tensor | None, *, kd: KDConfig) -> torch.Tensor:
    """``kd.alpha * kd.tau^2 *`` the mean of ``per_pos`` over the positions where ``mask`` (None: all)
    is true; 0 without any (still connected to the graph)."""
    if mask is None:
        mask = torch.ones_like(per_pos, dtype=torch.bool)
    zero = torch.zeros((), dtype=per_pos.dtype, device=per_pos.device)
    return kd.alpha * kd.tau**2 * torch.where(mask, per_pos, zero).sum() / mask.sum().clamp(min=1)


class CEKD(NamedTuple):
    """Result of :func:`ce_and_kd_chunked`.

    ``total = ce_weight * ce + kd`` carries the gradient; ``ce`` (mean next-token cross-entropy)
    and ``kd`` (``alpha * tau^2 * mean D``) are detached values for logging.
    """

    total: torch.Tensor
    ce: torch.Tensor
    kd: torch.Tensor


class HeadInput(NamedTuple):
    """One model's LM head and what it projects: hidden states ``[..., d]``, weight ``[V, d]`` and
    bias ``[V]`` (or None); a weight of None means ``hidden`` already holds the logits ``[..., V]``."""

    hidden: torch.Tensor
    weight: torch.Tensor | None
    bias: torch.Tensor | None = None

    def flat(self, n: int) -> HeadInput:
        """The same head over the hidden states flattened to ``[n, d]``."""
        return self._replace(hidden=self.hidden.reshape(n, -1))

    def logits(self, index: torch.Tensor) -> torch.Tensor:
        """Logits of the (flat) positions ``index``."""
        return self.project(self.hidden.index_select(0, index))

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """Apply the LM head (in the promoted dtype of ``h`` and the weight) to hidden states ``h``."""
        if self.weight is None:
            return h
        dtype = torch.promote_types(h.dtype, self.weight.dtype)
        bias = None if self.bias is None else self.bias.to(dtype)
        return F.linear(h.to(dtype), self.weight.to(dtype), bias)


class _Spec(NamedTuple):
    """Everything a chunk needs besides the student's differentiable tensors."""

    teacher: HeadInput  # flat [N, d] (or [N, V] logits), a constant
    labels: torch.Tensor  # [N], IGNORE_INDEX where CE ignores the position
    kd_valid: torch.Tensor  # [N] bool
    index: torch.Tensor  # [n] positions where CE or KD counts
    chunk_size: int
    ce_scale: float  # ce_weight / number of CE positions
    kd_scale: float  # alpha * tau^2 / number of KD positions
    kd: KDConfig


def _chunk_sums(
    student_logits: torch.Tensor, spec: _Spec, idx: torch.Tensor, teacher_logits: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of CE, sum of D) over one chunk of positions ``idx`` (the teacher's logits of the chunk are
    computed unless given)."""
    if teacher_logits is None:
        with torch.no_grad():
            teacher_logits = spec.teacher.logits(idx)
    ce = F.cross_entropy(
        student_logits.float(), spec.labels.index_select(0, idx), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    per_pos = divergence_per_position(student_logits, teacher_logits, kd=spec.kd)
    zero = torch.zeros((), dtype=per_pos.dtype, device=per_pos.device)
    kd = torch.where(spec.kd_valid.index_select(0, idx), per_pos, zero).sum()
    return ce, kd


def _chunks(spec: _Spec) -> list[torch.Tensor]:
    return list(spec.index.split(spec.chunk_size))


class _FusedCEKD(torch.autograd.Function):
    """Chunked CE + KD whose gradients are computed chunk by chunk during the forward pass.

    Each chunk's student logits are built, differentiated w.r.t. the chunk's hidden states (and the
    LM head weight and bias if they require grad) and freed at once, so neither model's full
    ``[N, V]`` logits ever exist and the backward only scales the stored gradients (no
    recomputation, unlike activation checkpointing).
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, spec: _Spec):  # type: ignore[override]
        need_w = weight.requires_grad
        need_b = bias is not None and bias.requires_grad
        grad_h = torch.zeros_like(hidden, dtype=torch.float32)
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if need_b else None
        ce_sum = hidden.new_zeros((), dtype=torch.float32)
        kd_sum = hidden.new_zeros((), dtype=torch.float32)
        w = weight.detach().requires_grad_(need_w)
        b = None if bias is None else bias.detach().requires_grad_(need_b)
        for idx in _chunks(spec):
            with torch.enable_grad():
                h = hidden.index_select(0, idx).detach().requires_grad_(True)
                logits = HeadInput(hidden, w, b).project(h)
                ce, kd = _chunk_sums(logits, spec, idx)
                leaves = [h] + ([w] if need_w else []) + ([b] if need_b else [])
                grads = torch.autograd.grad(spec.ce_scale * ce + spec.kd_scale * kd, leaves)
            grad_h.index_copy_(0, idx, grads[0].float())
            if need_w:
                grad_w += grads[1].float()
            if need_b:
                grad_b += grads[-1].float()
            ce_sum += ce.detach()
            kd_sum += kd.detach()
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        return spec.ce_scale * ce_sum + spec.kd_scale * kd_sum, ce_sum, kd_sum

    @staticmethod
    def backward(ctx, g_total, _g_ce, _g_kd):  # type: ignore[override]
        grad_h, grad_w, grad_b = ctx.saved_tensors
        dh, dw, db = ctx.dtypes
        return (
            (g_total * grad_h).to(dh),
            None if grad_w is None else (g_total * grad_w).to(dw),
            None if grad_b is None else (g_total * grad_b).to(db),
            None,
        )


def _spec(
    student_weight: torch.Tensor,
    teacher: HeadInput,
    labels: torch.Tensor,
    kd: KDConfig,
    kd_mask: torch.Tensor | None,
    ce_weight: float,
) -> tuple[_Spec, int]:
    """The chunking spec of :func:`ce_and_kd_chunked` and the number of CE positions (arguments checked)."""
    check_per_position(kd)
    vocab = student_weight.shape[0]
    teacher_vocab = teacher.hidden.shape[-1] if teacher.weight is None else teacher.weight.shape[0]
    if vocab != teacher_vocab:
        raise DSKDError(
            f"The student's LM head has {vocab} rows but the teacher's vocabulary has {teacher_vocab}; "
            "KD needs one shared vocabulary (slice a padded LM head to the tokenizer's size first)."
        )
    n = labels.numel()
    flat_labels = labels.reshape(n)
    ce_valid = flat_labels != IGNORE_INDEX
    kd_valid = ce_valid if kd_mask is None else kd_mask.reshape(n).bool()
    n_ce = int(ce_valid.sum())
    n_kd = int(kd_valid.sum())
    index = (ce_valid | kd_valid).nonzero().squeeze(1)
    spec = _Spec(
        teacher=teacher._replace(hidden=teacher.hidden.detach()).flat(n),
        labels=flat_labels,
        kd_valid=kd_valid,
        index=index,
        chunk_size=kd.chunk_size or max(1, len(index)),
        ce_scale=ce_weight / max(n_ce, 1),
        kd_scale=kd.alpha * kd.tau**2 / max(n_kd, 1),
        kd=kd,
    )
    return spec, n_ce


def ce_and_kd_chunked(
    student: HeadInput,
    teacher: HeadInput,
    labels: torch.Tensor,
    *,
    kd: KDConfig,
    kd_mask: torch.Tensor | None = None,
    ce_weight: float = 1.0,
) -> CEKD:
    """Next-token CE and KD computed from hidden states, ``kd.chunk_size`` positions at a time.

    Args:
        student: the student's LM-head input ``[B, L, d_S]`` and head ``[V, d_S]`` (and bias ``[V]``);
            the weight and bias get gradients if they require grad (a frozen head costs nothing extra).
        teacher: the teacher's LM-head input ``[B, L, d_T]`` and head ``[V, d_T]``, or (weight None)
            the teacher's logits ``[B, L, V]``. Always a constant.
        labels: ``[B, L]`` target of each position (already shifted), ``IGNORE_INDEX`` where CE
            ignores it.
        kd: the KD settings; ``kd.chunk_size`` positions per chunk (None: all valid positions in
            one chunk).
        kd_mask: ``[B, L]`` bool, positions where KD counts (default: ``labels != IGNORE_INDEX``);
            build it with :func:`position_mask` to also drop padding.
        ce_weight: weight of CE inside ``total``.

    Returns :class:`CEKD`: ``total = ce_weight * ce + kd`` (differentiable) and the detached parts.
    CE is the mean over CE positions, KD ``alpha * tau^2 *`` the mean divergence over KD positions;
    a part without any valid position is 0. Only the valid positions are ever projected to logits.
    With grad enabled the gradients are computed during this call (see :class:`_FusedCEKD`), so
    ``total`` must be backpropagated at most once.
    """
    spec, n_ce = _spec(student.weight, teacher, labels, kd, kd_mask, ce_weight)
    head = student.flat(labels.numel())
    hidden, weight, bias = head
    needs_grad = torch.is_grad_enabled() and (
        hidden.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    )
    if needs_grad:
        total, ce_sum, kd_sum = _FusedCEKD.apply(hidden, weight, bias, spec)
    else:
        ce_sum = hidden.new_zeros((), dtype=torch.float32)
        kd_sum = hidden.new_zeros((), dtype=torch.float32)
        for idx in _chunks(spec):
            ce, d = _chunk_sums(head.logits(idx), spec, idx)
            ce_sum, kd_sum = ce_sum + ce, kd_sum + d
        total = spec.ce_scale * ce_sum + spec.kd_scale * kd_sum
    return CEKD(total, (ce_sum / max(n_ce, 1)).detach(), (spec.kd_scale * kd_sum).detach())


def validation_sums_chunked(
    student: HeadInput, teacher: HeadInput, labels: torch.Tensor, mask: torch.Tensor, *, kd: KDConfig
) -> torch.Tensor:
    """[sum of CE, sum of ``alpha * tau^2 * D``, top-1 agreements, positions] over the positions of
    ``mask`` (``labels`` -100 elsewhere), ``kd.chunk_size`` positions at a time and without gradient:
    the validation metrics of the training loss without either model's full ``[B, L, V]`` logits.
    ``student`` and ``teacher`` as in :func:`ce_and_kd_chunked` (the teacher with its head weight)."""
    spec, _ = _spec(student.weight, teacher, labels, kd, mask, 1.0)
    head = student._replace(hidden=student.hidden.detach()).flat(labels.numel())
    sums = torch.zeros(4, dtype=torch.float32, device=student.hidden.device)
    with torch.no_grad():
        for idx in _chunks(spec):
            s_logits, t_logits = head.logits(idx), spec.teacher.logits(idx)
            ce, d = _chunk_sums(s_logits, spec, idx, t_logits)
            agree = ((s_logits.argmax(-1) == t_logits.argmax(-1)) & spec.kd_valid.index_select(0, idx)).sum()
            sums += torch.stack(
                [ce.float(), d.float() * kd.alpha * kd.tau**2, agree.float(), ce.new_zeros(())]
            )
    sums[3] = spec.kd_valid.sum()
    return sums
