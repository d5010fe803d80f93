"""CUDA-only checks of the accelerator paths of evaluation and teacher continuations (skipped, with the reason
shown, on CPU machines): eval.device=auto is this process's GPU, and the batched paper-protocol scoring,
greedy generation and teacher continuations give on the GPU what they give on the CPU (float32)."""

import pytest
import torch

from dskd.core.devices import local_device, resolve_device
from dskd.data.continuations import greedy_continuations
from dskd.evaluation import paper_protocol as pp

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (make gpu-check)")

PROMPTS = [" ".join(f"t{3 + (7 * i + j) % 44}" for j in range(1 + (5 * i) % 13)) for i in range(11)]


def test_eval_device_auto_is_this_process_gpu():
    device = resolve_device("auto", "eval.device")
    assert device == local_device() and device.type == "cuda" and device.index is not None


def test_batched_paper_protocol_on_the_gpu_equals_the_cpu(tiny):
    model, tok = tiny
    cands = [[3, 4, 5]] * len(PROMPTS)
    cpu_greedy, cpu_scores = pp.next_token_scores(model, tok, PROMPTS, cands, batch_size=4)
    cpu_texts = pp.greedy_texts(model, tok, PROMPTS, 5, batch_size=4)
    cpu_targets = greedy_continuations(model, tok, PROMPTS, 5, batch_size=4)
    gpu = model.to(local_device())
    try:
        greedy, scores = pp.next_token_scores(gpu, tok, PROMPTS, cands, batch_size=4)
        assert greedy == cpu_greedy
        torch.testing.assert_close(torch.tensor(scores), torch.tensor(cpu_scores), rtol=0, atol=1e-4)
        assert pp.greedy_texts(gpu, tok, PROMPTS, 5, batch_size=4) == cpu_texts
        assert greedy_continuations(gpu, tok, PROMPTS, 5, batch_size=4) == cpu_targets
    finally:
        model.to("cpu")
