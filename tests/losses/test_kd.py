"""KD divergences, the masked KD loss and the chunked fused CE + KD."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F

from dskd.core.errors import ConfigError, DSKDError
from dskd.losses.config import KDConfig
from dskd.losses.kd import (
    POSITION_DIVERGENCES,
    HeadInput,
    ce_and_kd_chunked,
    divergence_per_position,
    kd_loss,
    position_mask,
)

P_T = [0.5, 0.25, 0.25]
P_S = [0.25, 0.5, 0.25]
LN2 = math.log(2.0)
HAND = {  # D(p_T, p_S) for the two distributions above, by hand
    "forward_kl": 0.5 * LN2 + 0.25 * math.log(0.5),
    "reverse_kl": 0.25 * math.log(0.5) + 0.5 * LN2,
    "js": 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3),
    # mixture 0.1 p_T + 0.9 p_S = [0.275, 0.475, 0.25]
    "skew_kl": 0.5 * math.log(0.5 / 0.275) + 0.25 * math.log(0.25 / 0.475),
    "tv": 0.5 * (0.25 + 0.25),
    "gjsd": 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3),  # beta = 0.5 (the default) is JS
}


@pytest.mark.parametrize("divergence", POSITION_DIVERGENCES)
def test_hand_computed_three_classes(divergence):
    student = torch.tensor(P_S).log() + 3.0  # logits: any shift gives the same softmax
    teacher = torch.tensor(P_T).log() - 1.0
    got = divergence_per_position(student, teacher, kd=KDConfig(divergence=divergence, tau=1.0, skew=0.1))
    assert got.item() == pytest.approx(HAND[divergence], abs=1e-6)


def _reference(student, teacher, divergence, tau, skew=0.1, beta=0.5):
    """Each divergence written with torch.nn.functional.kl_div (log_target) or plainly."""
    log_s = F.log_softmax(student.double() / tau, -1)
    log_t = F.log_softmax(teacher.double() / tau, -1)

    def kl(log_p, log_q):  # KL(p || q)
        return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(-1)

    if divergence == "forward_kl":
        return kl(log_t, log_s)
    if divergence == "reverse_kl":
        return kl(log_s, log_t)
    if divergence == "js":
        log_m = ((log_t.exp() + log_s.exp()) / 2).log()
        return 0.5 * kl(log_t, log_m) + 0.5 * kl(log_s, log_m)
    if divergence == "skew_kl":
        return kl(log_t, (skew * log_t.exp() + (1 - skew) * log_s.exp()).log())
    if divergence == "gjsd":
        log_m = (beta * log_t.exp() + (1 - beta) * log_s.exp()).log()
        return beta * kl(log_t, log_m) + (1 - beta) * kl(log_s, log_m)
    return 0.5 * (log_t.exp() - log_s.exp()).abs().sum(-1)


@pytest.mark.parametrize("divergence", POSITION_DIVERGENCES)
@pytest.mark.parametrize("tau", [1.0, 2.0, 0.5])
def test_against_torch_functional(divergence, tau):
    g = torch.Generator().manual_seed(0)
    student = torch.randn(4, 5, 17, generator=g) * 3
    teacher = torch.randn(4, 5, 17, generator=g) * 3
    kd = KDConfig(divergence=divergence, tau=tau, skew=0.3, beta=0.2)
    got = divergence_per_position(student, teacher, kd=kd)
    assert got.dtype == torch.float32
    torch.testing.assert_close(
        got.double(), _reference(student, teacher, divergence, tau, 0.3, 0.2), rtol=1e-5, atol=1e-6
    )


def test_generalized_jsd_hand_computed_and_its_limits():
    student, teacher = torch.tensor(P_S).log(), torch.tensor(P_T).log()
    # beta = 0.25: m = 0.25 p_T + 0.75 p_S = [0.3125, 0.4375, 0.25]
    m = [0.3125, 0.4375, 0.25]
    want = 0.25 * sum(p * math.log(p / q) for p, q in zip(P_T, m)) + 0.75 * sum(
        p * math.log(p / q) for p, q in zip(P_S, m)
    )
    got = divergence_per_position(student, teacher, kd=KDConfig(divergence="gjsd", tau=1.0, beta=0.25))
    assert got.item() == pytest.approx(want, abs=1e-6)
    for beta, limit in ((0.0, "forward_kl"), (1.0, "reverse_kl")):
        gjsd = divergence_per_position(student, teacher, kd=KDConfig(divergence="gjsd", tau=1.0, beta=beta))
        assert gjsd.item() == pytest.approx(HAND[limit], abs=1e-6)


def _trl_gkd():
    """TRL's GKDTrainer; only a run outside CI without trl installed may skip (CI installs the dev extra)."""
    try:
        from trl.experimental.gkd import GKDTrainer
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("trl is not installed (pip install -e .[dev])")
    return GKDTrainer


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_generalized_jsd_matches_trl(beta, tau):
    """TRL's loss is the mean over the labelled positions of the divergence at temperature tau, with
    no tau^2 and no weight ("batchmean" with labels): ours is alpha * tau^2 times that mean."""
    gkd = _trl_gkd()
    g = torch.Generator().manual_seed(3)
    student = (torch.randn(3, 6, 23, generator=g) * 3).requires_grad_(True)
    teacher = torch.randn(3, 6, 23, generator=g) * 3
    labels = torch.randint(0, 23, (3, 6), generator=g)
    labels[0, 4:] = -100
    labels[2, 0] = -100
    theirs = gkd.generalized_jsd_loss(student, teacher, labels=labels, beta=beta, temperature=tau)
    kd = KDConfig(divergence="gjsd", beta=beta, tau=tau, alpha=1.0)
    ours = kd_loss(student, teacher, position_mask(labels), kd=kd) / tau**2
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    (g_ours,) = torch.autograd.grad(ours, student)
    (g_theirs,) = torch.autograd.grad(theirs, student)
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-4, atol=1e-7)


def test_temperature_scaling_and_alpha():
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(3, 9, generator=g), torch.randn(3, 9, generator=g)
    plain = divergence_per_position(student / 2.0, teacher / 2.0, kd=KDConfig(tau=1.0)).mean()
    assert kd_loss(student, teacher, kd=KDConfig(tau=2.0, alpha=0.7)).item() == pytest.approx(
        0.7 * 4.0 * plain.item(), rel=1e-6
    )


def test_identical_distributions_give_zero():
    logits = torch.randn(2, 3, 10)
    for divergence in POSITION_DIVERGENCES:
        assert kd_loss(logits, logits.clone(), kd=KDConfig(divergence=divergence)).abs().item() < 1e-6


def test_mask_excludes_positions_and_their_garbage():
    g = torch.Generator().manual_seed(2)
    student, teacher = torch.randn(2, 4, 6, generator=g), torch.randn(2, 4, 6, generator=g)
    labels = torch.tensor([[1, 2, -100, 3], [-100, 4, 5, 0]])
    attention = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    mask = position_mask(labels, attention)
    assert mask.tolist() == [[True, True, False, True], [False, True, True, False]]
    student[~mask] = float("nan")  # whatever sits at excluded positions must not leak
    teacher[~mask] = float("inf")
    got = kd_loss(student, teacher, mask, kd=KDConfig(tau=1.0, alpha=1.0))
    want = _reference(student[mask], teacher[mask], "forward_kl", 1.0).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    assert kd_loss(student, teacher, torch.zeros_like(mask), kd=KDConfig()).item() == 0.0


@pytest.mark.parametrize("divergence", POSITION_DIVERGENCES)
def test_minus_inf_and_huge_logits_stay_finite(divergence):
    g = torch.Generator().manual_seed(3)
    student = torch.randn(5, 8, generator=g, requires_grad=True)
    teacher = torch.randn(5, 8, generator=g) * 1e4  # near one-hot, huge
    banned = torch.zeros(8, dtype=torch.bool)
    banned[[2, 5]] = True  # vocabulary entries both models mask out
    s = student.masked_fill(banned, float("-inf"))
    t = teacher.masked_fill(banned, float("-inf"))
    loss = kd_loss(s, t, kd=KDConfig(divergence=divergence, alpha=1.0, tau=1.0))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()
    want = _reference(student[:, ~banned].detach(), teacher[:, ~banned], divergence, 1.0).mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-6)


def test_mixed_dtypes_compute_in_float32():
    g = torch.Generator().manual_seed(4)
    student = torch.randn(3, 11, generator=g).bfloat16()
    teacher = torch.randn(3, 11, generator=g).half()
    js = KDConfig(divergence="js")
    got = kd_loss(student, teacher, kd=js)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(kd_loss(student.float(), teacher.float(), kd=js).item(), rel=1e-6)


def test_bad_names_are_config_errors():
    with pytest.raises(ConfigError, match="divergence"):
        KDConfig(divergence="kl")
    changed = KDConfig()
    changed.divergence = "kl"  # a config edited after its checks ran
    with pytest.raises(ConfigError, match="divergence"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), kd=changed)
    with pytest.raises(ConfigError, match="skew"):
        KDConfig(divergence="skew_kl", skew=1.0)
    with pytest.raises(ConfigError, match="chunk_size"):
        KDConfig(chunk_size=0)
    with pytest.raises(DSKDError, match="vocabulary"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 4), kd=KDConfig())


# ---- chunked fused CE + KD ------------------------------------------------------------------------

B, L, D_S, D_T, V = 2, 7, 5, 6, 13


def _problem(seed: int):
    g = torch.Generator().manual_seed(seed)
    h_s = torch.randn(B, L, D_S, generator=g, requires_grad=True)
    w_s = torch.randn(V, D_S, generator=g, requires_grad=True)
    b_s = torch.randn(V, generator=g, requires_grad=True)
    h_t = torch.randn(B, L, D_T, generator=g)
    w_t = torch.randn(V, D_T, generator=g)
    b_t = torch.randn(V, generator=g)
    labels = torch.randint(0, V, (B, L), generator=g)
    labels[0, [1, 4]] = -100
    labels[1, 6] = -100
    kd_mask = torch.ones(B, L, dtype=torch.bool)
    kd_mask[0, 1] = False  # no KD, no CE
    kd_mask[1, [0, 2]] = False  # CE only; position (0, 4) and (1, 6) are KD only
    return h_s, w_s, b_s, h_t, w_t, b_t, labels, kd_mask


def _settings(divergence: str, chunk_size: int | None = None) -> KDConfig:
    return KDConfig(alpha=0.7, tau=2.0, divergence=divergence, skew=0.2, chunk_size=chunk_size)


def _unchunked(h_s, w_s, b_s, h_t, w_t, b_t, labels, kd_mask, divergence, ce_weight):
    """Plain autograd on the full [B, L, V] logits of both models."""
    student_logits = h_s @ w_s.T + b_s
    teacher_logits = h_t @ w_t.T + b_t
    ce = F.cross_entropy(student_logits.reshape(-1, V), labels.reshape(-1), ignore_index=-100)
    kd = kd_loss(student_logits, teacher_logits, kd_mask, kd=_settings(divergence))
    return ce_weight * ce + kd, ce, kd


@pytest.mark.parametrize("divergence", POSITION_DIVERGENCES)
@pytest.mark.parametrize("chunk_size", [1, 3, 4, 7, 100, None])
def test_chunked_matches_unchunked_values_and_gradients(divergence, chunk_size):
    h_s, w_s, b_s, h_t, w_t, b_t, labels, kd_mask = _problem(5)
    total, ce, kd = _unchunked(h_s, w_s, b_s, h_t, w_t, b_t, labels, kd_mask, divergence, ce_weight=0.5)
    want_grads = torch.autograd.grad(total, [h_s, w_s, b_s])
    out = ce_and_kd_chunked(
        HeadInput(h_s, w_s, b_s), HeadInput(h_t, w_t, b_t), labels,
        kd=_settings(divergence, chunk_size), kd_mask=kd_mask, ce_weight=0.5,
    )  # fmt: skip
    torch.testing.assert_close(out.total, total.detach())
    torch.testing.assert_close(out.ce, ce.detach())
    torch.testing.assert_close(out.kd, kd.detach())
    for got, want in zip(torch.autograd.grad(out.total, [h_s, w_s, b_s]), want_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_chunked_with_teacher_logits_frozen_head_and_scaled_backward():
    h_s, w_s, _, h_t, w_t, _, labels, _ = _problem(6)
    w_s = w_s.detach()  # frozen student head, as in the paper's recipe
    teacher_logits = h_t @ w_t.T
    ref = kd_loss(h_s @ w_s.T, teacher_logits, labels != -100, kd=KDConfig(divergence="reverse_kl"))
    ref = ref + F.cross_entropy((h_s @ w_s.T).reshape(-1, V), labels.reshape(-1), ignore_index=-100)
    (want,) = torch.autograd.grad(3.0 * ref, [h_s])
    kd = KDConfig(divergence="reverse_kl", chunk_size=2)
    out = ce_and_kd_chunked(HeadInput(h_s, w_s), HeadInput(teacher_logits, None), labels, kd=kd)
    (got,) = torch.autograd.grad(3.0 * out.total, [h_s])  # an outer scale (grad accumulation, AMP)
    torch.testing.assert_close(out.total, ref.detach())
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_chunked_without_grad_and_in_bfloat16():
    h_s, w_s, b_s, h_t, w_t, b_t, labels, kd_mask = _problem(7)
    with torch.no_grad():
        total, _, _ = _unchunked(h_s, w_s, b_s, h_t, w_t, b_t, labels, kd_mask, "js", ce_weight=1.0)
        out = ce_and_kd_chunked(
            HeadInput(h_s, w_s, b_s), HeadInput(h_t, w_t, b_t), labels,
            kd=KDConfig(divergence="js", chunk_size=3), kd_mask=kd_mask,
        )  # fmt: skip
    torch.testing.assert_close(out.total, total)
    h16 = h_s.detach().bfloat16().requires_grad_(True)
    student16 = HeadInput(h16, w_s.detach().bfloat16())
    out16 = ce_and_kd_chunked(student16, HeadInput(h_t, w_t), labels, kd=KDConfig(chunk_size=4))
    out16.total.backward()
    assert out16.total.dtype == torch.float32 and h16.grad.dtype == torch.bfloat16
    assert torch.isfinite(h16.grad.float()).all()


def test_chunked_without_valid_positions_is_zero_with_zero_gradient():
    h_s, w_s, _, h_t, w_t, _, labels, _ = _problem(8)
    no_labels = torch.full_like(labels, -100)
    out = ce_and_kd_chunked(HeadInput(h_s, w_s), HeadInput(h_t, w_t), no_labels, kd=KDConfig(chunk_size=3))
    out.total.backward()
    assert out.total.item() == 0.0 and out.ce.item() == 0.0 and out.kd.item() == 0.0
    assert h_s.grad.abs().sum().item() == 0.0


def test_chunked_rejects_vocabulary_mismatch():
    h_s, w_s, _, h_t, w_t, _, labels, _ = _problem(9)
    with pytest.raises(DSKDError, match="vocabulary"):
        ce_and_kd_chunked(HeadInput(h_s, w_s), HeadInput(h_t, w_t[:-1]), labels, kd=KDConfig())
