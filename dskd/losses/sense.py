"""Sense-consistency loss (docs/method.md §3.2), vectorized over the padded positions and candidates.

For each P1 position p (target t = labels[p]): the candidates ``C+`` are the senses of the sampled
synonyms followed by ``D[t]``, ``C-`` the senses of the sampled antonyms followed by ``D[t]`` (the
latter only with ``own_senses_in_negatives``, as in the released code). The ``kappa`` rows of each
set nearest (L2) to the *teacher's* hidden state are selected without gradient; the *student's*
hidden state is pulled toward the positives and pushed (hinge) away from the negatives::

    l_p = w_pos * mean_{s in P} MSE(H_S[p], s) + w_neg * mean_{a in N} max(0, margin - MSE(H_S[p], a))

Beside the paper's (``hinge: absolute``) the push can be teacher-relative (``hinge: teacher``:
``max(0, MSE(H_T[p], a) - slack - MSE(H_S[p], a))`` per row a) or a triplet (``hinge: triplet``:
``max(0, margin + mean_P MSE(H_S[p], s) - mean_N MSE(H_S[p], a))`` per position, counted where both
``P`` and ``N`` hold rows); the pulls of P1 and P2 can stop at the teacher's distance (``pull: floor``:
``max(0, MSE(H_S[p], s) - MSE(H_T[p], s))``) or hold the student there from both sides (``pull: match``:
``(MSE(H_S[p], s) - MSE(H_T[p], s))^2``); docs/losses.md, "Teacher-relative terms".
An empty ``P`` or ``N`` drops its term (a P1 position without any candidate counts as a 0 term).
For each P2 position, ``l_p`` is the mean MSE to the ``kappa`` rows of ``D[t]`` nearest to the
teacher's state (in the ``pull`` form of the P1 pull), and 0 (still counted) when ``t`` has no senses
or no target.
Per sequence the loss is the mean of its terms (m P1 + m P2 terms, those switched off not
counted); sequences without any term are left out of the mean over sequences, and a batch without
any term gives 0 (still connected to the student's graph so that distributed training sees a
gradient for every parameter).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from dskd.core.batch import IGNORE_INDEX, SENSE_LOSS_KEYS, WORD_SENSE_KEYS, SenseBatch
from dskd.core.errors import DSKDError
from dskd.losses.config import SenseLossConfig

Lookup = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``keys LongTensor[...] -> (senses [..., k, d], mask [..., k])``; unknown keys give an all-False mask."""


def _check_inputs(h_student: torch.Tensor, h_teacher: torch.Tensor, batch: SenseBatch) -> None:
    missing = [k for k in SENSE_LOSS_KEYS if k not in batch]
    if missing:
        raise DSKDError(
            f"The batch lacks the sense-loss keys {', '.join(missing)}; build batches with the DSKD data "
            "module (method: dskd) or switch the sense loss off (method: kd)."
        )
    word_keyed = all(k in batch for k in WORD_SENSE_KEYS)
    same = h_student.shape[::2] == h_teacher.shape[::2] if word_keyed else h_student.shape == h_teacher.shape
    if not same:
        raise DSKDError(
            f"Student hidden states {tuple(h_student.shape)} and teacher hidden states "
            f"{tuple(h_teacher.shape)} differ in shape; project the student's states into the "
            "teacher's space before the sense loss."
        )


def _at(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """``x[b, pos[b, m]]`` for ``x [B, L, d]`` and ``pos [B, M]`` -> ``[B, M, d]``."""
    return x.gather(1, pos.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def _teacher_pos(batch: SenseBatch, name: str) -> torch.Tensor:
    """The teacher's positions of the ``name`` (sense: P1, rand: P2) slots: word-keyed batches give
    them (``teacher_sense_pos``), token-keyed ones share the student's (``sense_pos``)."""
    return batch.get(f"teacher_{name}_pos", batch[f"{name}_pos"]).long()


def _targets(batch: SenseBatch, name: str) -> torch.Tensor:
    """The sense-dictionary key of each ``name`` slot: the word's key (word-keyed batches) or the
    position's target token ``labels[p]``."""
    if f"{name}_targets" in batch:
        return batch[f"{name}_targets"].long()
    return batch["labels"].gather(1, batch[f"{name}_pos"].long())


class Nearest(NamedTuple):
    """The ``kappa`` candidate rows nearest to the teacher's state, per position."""

    mse: torch.Tensor
    """``[B, M, kappa']`` MSE of the student's state to each selected row (with gradient)."""
    selected: torch.Tensor
    """``[B, M, kappa']`` which slots hold a row."""
    teacher_mse: torch.Tensor
    """``[B, M, kappa']`` MSE of the teacher's state to each selected row (constant; computed as
    ``mse`` is, so a student state equal to the teacher's gives exactly ``mse``; 0 where unselected)."""
    column: torch.Tensor
    """``[B, M, kappa']`` the candidate column (index into ``C``) each selected row comes from."""
    rows_per_column: torch.Tensor
    """``[B, M, C]`` sense rows of each candidate key."""


def _nearest_mse(
    h_s: torch.Tensor,
    h_t: torch.Tensor,
    lookup: Lookup,
    keys: torch.Tensor,
    valid: torch.Tensor,
    kappa: int,
) -> Nearest:
    """MSE of ``h_s [B, M, d]`` to the ``kappa`` sense rows nearest to ``h_t`` among the senses of
    ``keys [B, M, C]`` where ``valid``, with ``kappa' = min(kappa, C * k)``. Only valid keys are
    looked up (padding costs nothing).
    """
    B, M, C = keys.shape
    b, m, c = valid.nonzero(as_tuple=True)
    with torch.no_grad():
        senses, smask = lookup(keys[b, m, c])  # [n, k, d], [n, k]
        n, k, d = senses.shape
        if d != h_s.shape[-1]:
            raise DSKDError(
                f"The sense dictionary has hidden size {d} but the hidden states have {h_s.shape[-1]}; "
                "use the sense dictionary built for this teacher (and project the student's states)."
            )
        senses, smask = senses.detach().float(), smask.bool()
        ht = h_t[b, m].float()  # [n, d]: the teacher state at each key's position
        dist = (
            torch.linalg.vector_norm(senses, dim=-1).square()
            - 2 * (senses @ ht.unsqueeze(-1)).squeeze(-1)
            + ht.square().sum(-1, keepdim=True)
        ).masked_fill(~smask, float("inf"))  # [n, k]
        at = (b.unsqueeze(1), m.unsqueeze(1), (c * k).unsqueeze(1) + torch.arange(k, device=keys.device))
        full = torch.full((B, M, C * k), float("inf"), dtype=dist.dtype, device=h_s.device)
        full[at] = dist
        row_of = torch.zeros((B, M, C * k), dtype=torch.long, device=h_s.device)
        row_of[at] = torch.arange(n * k, device=h_s.device).view(n, k)
        nearest_dist, nearest = full.topk(min(kappa, C * k), dim=2, largest=False)
        selected = torch.isfinite(nearest_dist)
        flat = torch.cat([senses.reshape(n * k, d), senses.new_zeros(1, d)])  # last row: none selected
        rows = flat[torch.where(selected, row_of.gather(2, nearest), n * k)]  # [B, M, kappa', d]
        rows_per_column = torch.isfinite(full).view(B, M, C, k).sum(-1)
        teacher_mse = (h_t.float().unsqueeze(2) - rows).square().mean(-1)
        teacher_mse = torch.where(selected, teacher_mse, torch.zeros_like(teacher_mse))
    mse = (h_s.unsqueeze(2) - rows).square().mean(-1)
    return Nearest(mse, selected, teacher_mse, nearest // k, rows_per_column)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the last dim where ``mask``; 0 where nothing is selected."""
    return torch.where(mask, x, torch.zeros_like(x)).sum(-1) / mask.sum(-1).clamp(min=1)


def _fraction(hit: torch.Tensor, over: torch.Tensor) -> torch.Tensor:
    """Share of the ``over`` entries where ``hit`` holds (0 when ``over`` is empty)."""
    return (hit & over).sum().float() / over.sum().clamp(min=1)


def _mean_over(x: torch.Tensor, over: torch.Tensor) -> torch.Tensor:
    return torch.where(over, x, torch.zeros_like(x)).sum() / over.sum().clamp(min=1)


class Push(NamedTuple):
    """The push term of each P1 position and where its hinge acts."""

    term: torch.Tensor
    """``[B, M]`` the position's push term (before ``w_neg``)."""
    active: torch.Tensor
    """Where a hinge is active: ``[B, M, kappa']`` per negative row, or ``[B, M]`` for the triplet."""
    over: torch.Tensor
    """Which entries of ``active`` are hinge terms (selected rows; triplet: positions with P and N)."""


def _push(pos: Nearest, neg: Nearest, cfg: SenseLossConfig, margin: float, at_teacher: bool = False) -> Push:
    """The ``cfg.hinge`` push of each position, at the student's states (or, ``at_teacher``, at the
    teacher's, for the diagnostics)."""
    pos_mse, neg_mse = (pos.teacher_mse, neg.teacher_mse) if at_teacher else (pos.mse, neg.mse)
    if cfg.hinge == "triplet":
        both = pos.selected.any(-1) & neg.selected.any(-1)
        gap = margin + _masked_mean(pos_mse, pos.selected) - _masked_mean(neg_mse, neg.selected)
        return Push(torch.where(both, torch.relu(gap), torch.zeros_like(gap)), gap > 0, both)
    floor = neg.teacher_mse - cfg.teacher_slack if cfg.hinge == "teacher" else margin
    gap = floor - neg_mse
    return Push(_masked_mean(torch.relu(gap), neg.selected), gap > 0, neg.selected)


def _pull(near: Nearest, cfg: SenseLossConfig) -> torch.Tensor:
    """The pull of each position toward its selected rows (P1: positives, before ``w_pos``; P2: the
    target's own senses): the mean over the rows of the MSE (``cfg.pull: absolute``), of its excess over
    the teacher's (``floor``) or of its squared difference to the teacher's (``match``)."""
    if cfg.pull == "absolute":
        rows = near.mse
    else:
        gap = near.mse - near.teacher_mse
        rows = torch.relu(gap) if cfg.pull == "floor" else gap.square()
    return _masked_mean(rows, near.selected)


def _ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a / b``, 0 where ``b`` is 0 (nothing selected)."""
    return torch.where(b > 0, a / b.clamp_min(torch.finfo(b.dtype).tiny), torch.zeros_like(a))


def _diagnostics(
    pos: Nearest,
    neg: Nearest,
    on1: torch.Tensor,
    widths: tuple[int, int],
    cfg: SenseLossConfig,
    margin: float,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """What the P1 terms did in this batch (docs/losses.md, "Reading the diagnostics"), and of how
    many entries each value is the mean (the ratios aside: pooled over batches, they are recomputed
    from the pooled distances); ``widths``: the synonym and antonym columns, which the target's own
    senses follow in each candidate set."""
    syn_width, ant_width = widths
    own_in_neg = cfg.own_senses_in_negatives
    with torch.no_grad():
        pos_sel, neg_sel = pos.selected & on1.unsqueeze(-1), neg.selected & on1.unsqueeze(-1)
        pos_own = pos.column == syn_width
        neg_own = (neg.column == ant_width) if own_in_neg else torch.zeros_like(neg_sel)
        only_own = (
            pos_sel.any(-1) & neg_sel.any(-1) & (pos_own | ~pos_sel).all(-1) & (neg_own | ~neg_sel).all(-1)
        )
        student, teacher = _push(pos, neg, cfg, margin), _push(pos, neg, cfg, margin, at_teacher=True)
        on = on1 if cfg.hinge == "triplet" else on1.unsqueeze(-1)
        means = {
            "student_mse_pos": _mean_over(pos.mse.detach(), pos_sel),
            "teacher_mse_pos": _mean_over(pos.teacher_mse, pos_sel),
            "student_mse_neg": _mean_over(neg.mse.detach(), neg_sel),
            "teacher_mse_neg": _mean_over(neg.teacher_mse, neg_sel),
        }
        counts = {
            "hinge_active": (student.over & on).sum(),
            "hinge_active_teacher": (teacher.over & on).sum(),
            **dict.fromkeys(
                ("pull_active", "own_in_positives", "student_mse_pos", "teacher_mse_pos"), pos_sel.sum()
            ),
            **dict.fromkeys(("own_in_negatives", "student_mse_neg", "teacher_mse_neg"), neg_sel.sum()),
            **dict.fromkeys(("syn_row_fraction", "ant_row_fraction", "selections_coincide"), on1.sum()),
            "margin": on1.new_ones((), dtype=torch.long),
        }
        values = {
            "hinge_active": _fraction(student.active, student.over & on),
            "hinge_active_teacher": _fraction(teacher.active, teacher.over & on),
            "pull_active": _fraction(pos.mse.detach() > pos.teacher_mse, pos_sel),
            "syn_row_fraction": _fraction(pos.rows_per_column[..., :syn_width].sum(-1) > 0, on1),
            "ant_row_fraction": _fraction(neg.rows_per_column[..., :ant_width].sum(-1) > 0, on1),
            "own_in_positives": _fraction(pos_own, pos_sel),
            "own_in_negatives": _fraction(neg_own, neg_sel),
            "selections_coincide": _fraction(only_own, on1)
            if own_in_neg
            else on1.new_zeros((), dtype=torch.float),
            **means,
            "pos_distance_ratio": _ratio(means["student_mse_pos"], means["teacher_mse_pos"]),
            "neg_distance_ratio": _ratio(means["student_mse_neg"], means["teacher_mse_neg"]),
            "margin": torch.tensor(_hinge_constant(cfg, margin), dtype=torch.float32, device=on1.device),
        }
        return values, {k: n.float() for k, n in counts.items()}


def _hinge_constant(cfg: SenseLossConfig, margin: float) -> float:
    """The constant the hinge measures against: teacher_slack for hinge=teacher, else the margin."""
    return float(cfg.teacher_slack if cfg.hinge == "teacher" else margin)


def sense_loss(
    h_student: torch.Tensor,
    h_teacher: torch.Tensor,
    batch: SenseBatch,
    lookup: Lookup,
    cfg: SenseLossConfig,
    margin: float | None = None,
) -> dict[str, torch.Tensor]:
    """The sense-consistency loss of a batch.

    Args:
        h_student: student LM-head inputs ``[B, L, d]``, already projected into the teacher's space.
        h_teacher: teacher LM-head inputs ``[B, L, d]`` (constants); ``[B, Lt, d]`` of the teacher's
            own tokenization when the batch is word-keyed (``dskd.core.batch.WordSenseSample``: the
            teacher's states are then read at the teacher's positions, the keys from the batch).
        batch: a :class:`~dskd.batch.SenseBatch`; read are ``labels`` and the
            :class:`~dskd.batch.SenseSample` keys (P1 and P2 positions, synonym and antonym keys).
        lookup: the sense dictionary's lookup (e.g. ``SenseDictionary.lookup``).
        cfg: switches and weights; ``cfg.weight`` (lambda) is *not* applied here.
        margin: the margin mu of the absolute and triplet hinges in MSE units (default
            ``cfg.margin``; a calibrated margin is resolved by the caller, see
            :func:`dskd.training.module.sense_margin`).

    Returns ``total`` (= ``pos + neg + rand``, each the mean over sequences of that part's terms
    divided by the sequence's number of terms), for logging ``n_pos_candidates`` /
    ``n_neg_candidates`` (mean number of candidate rows per P1 position), ``diagnostics``: a
    dict of detached scalars saying how much each P1 term acted (see ``_diagnostics``), and
    ``diagnostic_counts``: of how many entries each of them is the mean (to pool them over batches).
    """
    _check_inputs(h_student, h_teacher, batch)
    margin = cfg.margin if margin is None else margin
    hs = h_student.float()
    ht = h_teacher.detach().float()

    pos1 = batch["sense_pos"].long()
    on1 = batch["sense_pos_mask"].bool()
    hs1, ht1 = _at(hs, pos1), _at(ht, _teacher_pos(batch, "sense"))
    t1 = _targets(batch, "sense").unsqueeze(-1)
    own1 = ((t1 != IGNORE_INDEX) & on1.unsqueeze(-1), t1)
    syn = (batch["syn_mask"].bool() & on1.unsqueeze(-1), batch["syn_keys"].long())
    ant = (batch["ant_mask"].bool() & on1.unsqueeze(-1), batch["ant_keys"].long())
    neg_groups = [ant, own1] if cfg.own_senses_in_negatives else [ant]
    pos_valid, pos_keys = (torch.cat(g, dim=2) for g in zip(syn, own1, strict=True))
    neg_valid, neg_keys = (torch.cat(g, dim=2) for g in zip(*neg_groups, strict=True))

    zeros1 = hs1.sum(-1) * 0.0  # [B, M], keeps every part connected to the student's graph
    pos_term, neg_term = zeros1, zeros1
    pos = _nearest_mse(hs1, ht1, lookup, pos_keys, pos_valid, cfg.kappa)
    if cfg.positives:
        pos_term = cfg.w_pos * _pull(pos, cfg)
    neg = _nearest_mse(hs1, ht1, lookup, neg_keys, neg_valid, cfg.kappa)
    if cfg.negatives:
        neg_term = cfg.w_neg * _push(pos, neg, cfg, margin).term
    counted1 = on1 & (cfg.positives or cfg.negatives)

    pos2 = batch["rand_pos"].long()
    counted2 = batch["rand_pos_mask"].bool() & cfg.random_positions
    hs2 = _at(hs, pos2)
    rand_term = hs2.sum(-1) * 0.0
    if cfg.random_positions:
        t2 = _targets(batch, "rand").unsqueeze(-1)
        own2 = counted2.unsqueeze(-1) & (t2 != IGNORE_INDEX)
        near = _nearest_mse(hs2, _at(ht, _teacher_pos(batch, "rand")), lookup, t2, own2, cfg.kappa)
        rand_term = _pull(near, cfg)

    n_terms = counted1.sum(1) + counted2.sum(1)  # [B]
    has_terms = n_terms > 0
    n_seqs = has_terms.sum().clamp(min=1)

    def part(term: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
        per_seq = torch.where(counted, term, torch.zeros_like(term)).sum(1) / n_terms.clamp(min=1)
        return per_seq.sum() / n_seqs

    out = {
        "pos": part(pos_term, counted1),
        "neg": part(neg_term, counted1),
        "rand": part(rand_term, counted2),
    }
    out["total"] = out["pos"] + out["neg"] + out["rand"]
    n_p1 = on1.sum().clamp(min=1)
    out["n_pos_candidates"] = (pos.rows_per_column.sum(-1) * on1).sum().float() / n_p1
    out["n_neg_candidates"] = (neg.rows_per_column.sum(-1) * on1).sum().float() / n_p1
    widths = (batch["syn_keys"].shape[-1], batch["ant_keys"].shape[-1])
    out["diagnostics"], out["diagnostic_counts"] = _diagnostics(pos, neg, on1, widths, cfg, margin)
    return out
