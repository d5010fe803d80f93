"""Sampled KD: a hand-computed value, unbiasedness of the value and the gradient against
torch.nn.functional.kl_div, and a sampling error that halves at 4x the samples."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dskd.core.errors import DSKDError
from dskd.losses.config import KDConfig
from dskd.losses.sampled import TeacherSamples, sampled_kd_loss, teacher_samples

TAU, ALPHA = 2.0, 0.7
KD = KDConfig(tau=TAU, alpha=ALPHA)


def _exact(s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """alpha * tau^2 * mean over positions of KL(softmax(z/tau) || softmax(s/tau)), by torch's kl_div."""
    log_q = F.log_softmax(s / TAU, -1).flatten(0, -2)
    log_p = F.log_softmax(z / TAU, -1).flatten(0, -2)
    return ALPHA * TAU**2 * F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")


def _generators(n: int, seed: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed * 100_003 + i) for i in range(n)]


def test_hand_computed_value():
    # one position, V = 3, student uniform; samples: token 0 twice, token 2 once (N = 3)
    s = torch.zeros(1, 3)
    samples = TeacherSamples(
        ids=torch.tensor([[0, 2, 0]]),
        counts=torch.tensor([[2, 1, 0]]),
        entropy=torch.tensor([0.5]),
        top1=torch.tensor([0]),
    )
    # -H - sum p_hat log q = -0.5 + log 3 (q uniform), scaled by alpha * tau^2
    want = ALPHA * TAU**2 * (-0.5 + math.log(3))
    assert sampled_kd_loss(s, samples, kd=KD).item() == pytest.approx(want, rel=1e-6)


def test_an_unused_slot_adds_exactly_0_even_at_a_minus_inf_logit():
    """Unused slots hold id 0 with count 0; a student logit of -inf there gave 0 * -inf = NaN."""
    s = torch.tensor([[-math.inf, 0.3, -0.2, 1.0]])
    padded = TeacherSamples(
        ids=torch.tensor([[2, 1, 0, 0]]), counts=torch.tensor([[2, 1, 0, 0]]), entropy=torch.tensor([0.5]),
        top1=torch.tensor([2]),
    )  # fmt: skip
    used = TeacherSamples(padded.ids[:, :2], padded.counts[:, :2], padded.entropy, padded.top1)
    values, grads = [], []
    for samples in (padded, used):
        x = s.clone().requires_grad_(True)
        loss = sampled_kd_loss(x, samples, kd=KD)
        values.append(loss.item())
        grads.append(torch.autograd.grad(loss, x)[0])
    log_q = F.log_softmax(s / TAU, -1)[0]
    want = ALPHA * TAU**2 * (-0.5 - (2 / 3 * log_q[2] + 1 / 3 * log_q[1]).item())  # the used slots alone
    assert values[0] == values[1] == pytest.approx(want, rel=1e-6)
    assert torch.isfinite(grads[0]).all() and torch.equal(grads[0], grads[1])


def test_samples_are_distinct_counted_reproducible_and_entropy_exact():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 5, 40, generator=g) * 3
    a = teacher_samples(z, 32, TAU, _generators(2))
    b = teacher_samples(z, 32, TAU, _generators(2))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))  # seeded: reproducible
    assert torch.equal(a.counts.sum(-1), torch.full((2, 5), 32))
    used = a.counts > 0
    for row_ids, row_used in zip(a.ids.flatten(0, 1), used.flatten(0, 1), strict=True):
        ids = row_ids[row_used]
        assert len(set(ids.tolist())) == len(ids)  # each drawn id once, with its count
    assert (a.counts[..., :-1] >= a.counts[..., 1:]).all()  # most drawn first
    p = torch.softmax(z / TAU, -1)
    torch.testing.assert_close(a.entropy, -(p * p.log()).sum(-1))
    assert torch.equal(a.top1, z.argmax(-1))


def _estimates(s: torch.Tensor, z: torch.Tensor, n: int, replicates: int, seed: int):
    """(loss values [R], gradients w.r.t. s [R, P, V]) of ``replicates`` independent sample sets."""
    zz = z.expand(replicates, *z.shape)
    samples = teacher_samples(zz, n, TAU, _generators(replicates, seed))
    values, grads = [], []
    for r in range(replicates):
        x = s.clone().requires_grad_(True)
        one = TeacherSamples(*(t[r] for t in samples))
        loss = sampled_kd_loss(x, one, kd=KD)
        (g,) = torch.autograd.grad(loss, x)
        values.append(loss.detach())
        grads.append(g)
    return torch.stack(values), torch.stack(grads)


def test_value_and_gradient_are_unbiased_and_the_error_halves_at_4x_samples():
    g = torch.Generator().manual_seed(0)
    P, V, R = 6, 50, 400
    z = torch.randn(P, V, generator=g) * 2.5
    s = torch.randn(P, V, generator=g) * 1.5
    x = s.clone().requires_grad_(True)
    exact = _exact(x, z)
    (exact_grad,) = torch.autograd.grad(exact, x)
    err = {}
    for n in (16, 64):
        values, grads = _estimates(s, z, n, R, seed=n)
        # unbiased: the mean over R replicates lies within 4 standard errors of the exact value
        se = values.std() / math.sqrt(R)
        assert abs(values.mean() - exact.detach()) < 4 * se + 1e-6
        mean_grad = grads.mean(0)
        se_grad = grads.std(0) / math.sqrt(R)
        assert ((mean_grad - exact_grad).abs() <= 5 * se_grad + 1e-7).all()
        err[n] = {
            "value": (values - exact.detach()).pow(2).mean().sqrt().item(),
            "grad": (grads - exact_grad).pow(2).sum((1, 2)).mean().sqrt().item(),
        }
    for part in ("value", "grad"):  # sampling error ~ 1 / sqrt(N): 4x the samples, about half the error
        assert 0.4 < err[64][part] / err[16][part] < 0.6, err


def test_many_samples_converge_to_the_exact_loss():
    g = torch.Generator().manual_seed(3)
    z, s = torch.randn(1, 4, 30, generator=g) * 2, torch.randn(1, 4, 30, generator=g)
    got = sampled_kd_loss(s, teacher_samples(z, 100_000, TAU, _generators(1)), kd=KD)
    assert got.item() == pytest.approx(_exact(s, z).item(), rel=2e-2)


def test_a_divergence_samples_cannot_estimate_is_refused():
    s = torch.zeros(1, 3)
    samples = teacher_samples(torch.zeros(1, 1, 3), 4, TAU, _generators(1))
    with pytest.raises(DSKDError, match="reverse_kl cannot be estimated from teacher samples"):
        sampled_kd_loss(s.unsqueeze(0), samples, kd=KDConfig(divergence="reverse_kl"))
