"""CUDA-only checks (run by `make gpu-check`; skipped, with the reason shown, on CPU machines)."""

import pytest
import torch

from dskd.senses.dictionary import SenseDictionary
from dskd.senses.kmeans import kmeans_padded

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (make gpu-check)")


def test_kmeans_on_gpu_matches_cpu_quality():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 40, 32, generator=gen)
    mask = torch.arange(40) < torch.randint(6, 41, (64,), generator=gen)[:, None]
    x = x * mask[..., None]
    cpu = kmeans_padded(x, mask, 5, seed=0).inertia.mean()
    gpu = kmeans_padded(x.cuda(), mask.cuda(), 5, seed=0).inertia.mean().cpu()
    assert abs(gpu / cpu - 1) < 0.02


@pytest.mark.parametrize("device", ["cuda", "pinned", "auto"])
def test_lookup_from_gpu_or_pinned_storage(tmp_path, device):
    gen = torch.Generator().manual_seed(0)
    cents = torch.randn(50, 4, 8, generator=gen).to(torch.bfloat16)
    meta = {"teacher": "t", "tokenizer_fingerprint": "f", "keying": "predicted", "table_size": 60}
    SenseDictionary.from_padded(
        cents, torch.randint(0, 5, (50,), generator=gen), torch.arange(50), meta
    ).save(tmp_path)
    ref = SenseDictionary.load(tmp_path, device="cpu")
    d = SenseDictionary.load(tmp_path, device=device)
    keys = torch.randint(-1, 70, (3, 7), generator=gen)
    s, m = d.lookup(keys.cuda())
    assert s.device.type == "cuda" and m.device.type == "cuda"
    rs, rm = ref.lookup(keys)
    assert torch.equal(s.cpu(), rs) and torch.equal(m.cpu(), rm)
    if device == "pinned":
        assert d.rows.is_pinned()
