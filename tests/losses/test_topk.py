"""Top-k KD with a tail bucket: hand-computed values, equality with full KD at k = V, convergence in k."""

from __future__ import annotations

import math

import pytest
import torch

from dskd.core.errors import DSKDError
from dskd.losses.config import KDConfig
from dskd.losses.kd import POSITION_DIVERGENCES, kd_loss
from dskd.losses.topk import teacher_topk, topk_kd_loss


def test_hand_computed_value_k1():
    # teacher z = [2, 1, 0] at tau = 1, top-1 = token 0; student uniform over 3 tokens
    z = torch.tensor([[2.0, 1.0, 0.0]])
    s = torch.zeros(1, 3)
    den = math.e**2 + math.e + 1
    p0, pt = math.e**2 / den, (math.e + 1) / den
    expected = p0 * math.log(p0 / (1 / 3)) + pt * math.log(pt / (2 / 3))
    got = topk_kd_loss(s, teacher_topk(z, 1, 1.0), kd=KDConfig(tau=1.0, alpha=1.0))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_temperature_is_applied_before_the_top_k_softmax():
    # tau = 2: p_T(v) = softmax(z / 2)_v over the FULL vocabulary, tail = the rest
    z = torch.tensor([[3.0, 1.0, -1.0, -2.0]])
    s = torch.tensor([[0.5, 0.0, 0.2, -0.3]])
    p = torch.softmax(z / 2, -1)[0].tolist()
    q = torch.softmax(s / 2, -1)[0].tolist()
    pt, qt = p[2] + p[3], q[2] + q[3]
    kl = p[0] * math.log(p[0] / q[0]) + p[1] * math.log(p[1] / q[1]) + pt * math.log(pt / qt)
    got = topk_kd_loss(s, teacher_topk(z, 2, 2.0), kd=KDConfig(tau=2.0, alpha=0.7))
    assert got.item() == pytest.approx(0.7 * 4 * kl, rel=1e-6)


@pytest.mark.parametrize("divergence", POSITION_DIVERGENCES)
def test_k_equal_vocab_matches_full_kd(divergence):
    g = torch.Generator().manual_seed(0)
    s = (torch.randn(2, 5, 40, generator=g) * 3).requires_grad_(True)
    z = torch.randn(2, 5, 40, generator=g) * 3
    mask = torch.rand(2, 5, generator=g) < 0.7
    kd = KDConfig(tau=2.0, divergence=divergence, alpha=0.7, skew=0.1)
    full = kd_loss(s, z, mask, kd=kd)
    approx = topk_kd_loss(s, teacher_topk(z, 40, 2.0), mask, kd=kd)
    torch.testing.assert_close(approx, full, rtol=1e-5, atol=1e-6)
    (g_full,) = torch.autograd.grad(full, s)
    (g_approx,) = torch.autograd.grad(approx, s)
    assert torch.isfinite(g_approx).all()
    torch.testing.assert_close(g_approx, g_full, rtol=1e-4, atol=1e-7)


def test_forward_kl_is_a_lower_bound_converging_as_k_grows():
    g = torch.Generator().manual_seed(1)
    V = 512
    z = torch.randn(64, V, generator=g) * 2.5  # a peaked teacher, as LMs are
    s = z + torch.randn(64, V, generator=g)
    kd = KDConfig(tau=2.0, divergence="forward_kl", alpha=1.0)
    full = kd_loss(s, z, None, kd=kd).item()
    errors = []
    for k in (4, 16, 64, 256, V):
        approx = topk_kd_loss(s, teacher_topk(z, k, 2.0), None, kd=kd).item()
        assert approx <= full + 1e-6
        errors.append(full - approx)
    assert all(a > b for a, b in zip(errors, errors[1:]))
    assert errors[-1] == pytest.approx(0.0, abs=1e-5)


def test_bucket_probabilities_sum_to_one_and_tail_is_exact():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(3, 100, generator=g) * 4
    t = teacher_topk(z, 10, 2.0)
    p = t.bucket_log_probs(2.0).exp()
    torch.testing.assert_close(p.sum(-1), torch.ones(3))
    ref = torch.softmax(z / 2, -1).sort(-1, descending=True).values
    torch.testing.assert_close(p[:, :10], ref[:, :10])
    torch.testing.assert_close(p[:, 10], ref[:, 10:].sum(-1))
    torch.testing.assert_close(t.log_probs + t.lse.unsqueeze(-1), z.topk(10).values)  # raw logits


def test_bad_k_and_mismatched_positions_are_refused():
    z = torch.randn(2, 8)
    with pytest.raises(DSKDError, match="cache.top_k"):
        teacher_topk(z, 9, 1.0)
    with pytest.raises(DSKDError, match="different positions"):
        topk_kd_loss(torch.randn(3, 8), teacher_topk(z, 2, 1.0), kd=KDConfig(tau=1.0))


def test_student_tail_is_accurate_whether_or_not_the_top_k_hold_almost_all_mass():
    from dskd.losses.topk import student_bucket_log_probs

    s = torch.tensor([[30.0, 0.0, 0.0, 0.0], [1.0, 0.5, 0.0, -0.5]], dtype=torch.float64).requires_grad_(True)
    idx = torch.tensor([[0], [0]])
    got = student_bucket_log_probs(s, idx, 1.0)  # row 0: top-1 mass > 0.999 (exact path); row 1: cheap path
    q = torch.softmax(s.detach(), -1)
    want = torch.stack([q[:, 0], q[:, 1:].sum(-1)], -1).log()  # float64 in, float64 out
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    (grad,) = torch.autograd.grad(got[:, 1].sum(), s)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("case", ["spread", "top_k_hold_almost_all", "tail_below_e-80", "k_equals_vocab"])
def test_student_bucket_backward_matches_finite_differences(case):
    """The hand-written backward of the student's bucket log-probabilities, checked numerically."""
    from dskd.losses.topk import student_bucket_log_probs

    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 12, generator=g, dtype=torch.float64)
    k = 12 if case == "k_equals_vocab" else 4
    if case == "top_k_hold_almost_all":
        s[:, :k] += 20.0  # tail mass ~ e^-10 at tau = 2: the exact (complement) path
    if case == "tail_below_e-80":
        s[:, :k] += 200.0  # tail log-mass ~ -100 at tau = 2
    idx = s.topk(k, dim=-1).indices
    weights = torch.randn(3, k + 1, generator=g, dtype=torch.float64)
    if case == "k_equals_vocab":
        weights[:, -1] = 0.0  # the empty tail is the lowest float, a constant

    def f(logits):
        return (student_bucket_log_probs(logits, idx, 2.0) * weights).sum()

    assert torch.autograd.gradcheck(f, (s.requires_grad_(True),))
