"""This machine's matrix-multiply peak and the FLOPs of one distillation training step.

``matmul_peak_gflops`` times a large float32 matmul (the best of several repeats: the attainable
peak of the BLAS on this machine right now, under its current load). ``training_step_flops`` counts
the matmul FLOPs of one training step of a Llama-style teacher and truncated student, so that
``flops / step_time / peak`` is the fraction of the peak a step achieves.

FLOP formula (multiply-add = 2 FLOPs; N = B * L tokens, d hidden size, h/h_kv attention/KV heads of
size d_h, f MLP size, V vocabulary)::

    layer(N, L) = 2 N (d h d_h + 2 d h_kv d_h + h d_h d)    q, k, v, o projections
                + 4 N L h d_h                                  scores Q K^T and weights x V (full L x L)
                + 6 N d f                                      SwiGLU MLP (gate, up, down)
    head(N)     = 2 N d V                                      LM head
    teacher forward  = n_T layer + head                        (online mode only)
    student forward  = n_S layer + head
    student backward = 2 n_train layer + head                  trainable layers: grads of inputs and
                                                               weights; frozen LM head: input grad only
    step = [teacher forward] + student forward + student backward

Element-wise work (norms, softmax, losses, the optimizer) is not counted: the achieved fraction is
an upper bound on how well the step uses the matmul units.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch


@dataclass
class DecoderShape:
    """What the FLOP count needs of a Llama-style decoder (read from a Hugging Face config)."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    mlp: int
    vocab: int

    @classmethod
    def from_config(cls, config) -> DecoderShape:
        heads = config.num_attention_heads
        return cls(
            layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            mlp=config.intermediate_size,
            vocab=config.vocab_size,
        )

    def layer_flops(self, tokens: int, seq_len: int) -> float:
        d, h, kv, hd = self.hidden, self.heads, self.kv_heads, self.head_dim
        proj = 2 * tokens * (d * h * hd + 2 * d * kv * hd + h * hd * d)
        attn = 4 * tokens * seq_len * h * hd
        return float(proj + attn + 6 * tokens * d * self.mlp)

    def head_flops(self, tokens: int) -> float:
        return float(2 * tokens * self.hidden * self.vocab)


def training_step_flops(
    teacher: DecoderShape,
    student: DecoderShape,
    trainable_layers: int,
    batch: int,
    seq_len: int,
    teacher_forward: bool = True,
) -> float:
    """Matmul FLOPs of one training step (see the module doc for the formula)."""
    n = batch * seq_len
    fwd = student.layers * student.layer_flops(n, seq_len) + student.head_flops(n)
    bwd = 2 * trainable_layers * student.layer_flops(n, seq_len) + student.head_flops(n)
    t = teacher.layers * teacher.layer_flops(n, seq_len) + teacher.head_flops(n) if teacher_forward else 0.0
    return fwd + bwd + t


def matmul_peak_gflops(size: int = 2048, seconds: float = 2.0) -> float:
    """Best GFLOP/s of ``size x size`` float32 matmuls on the CPU over about ``seconds``."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(size, size, generator=g), torch.randn(size, size, generator=g)
    torch.mm(a, b)  # warm-up
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * size**3 / (time.perf_counter() - t0) / 1e9)
    return best
