"""Benchmark: real tokens per second of a DSKD step of the paper's shape, today's path vs the new one.

A random Llama with the paper's proportions scaled down for a CPU (``SHAPES``): a 32-layer teacher,
untied embeddings, FFN 3.5 d, 4 query heads per key/value head, V / d = 32 (Llama-3: 128,256 / 4,096),
and a 16-layer truncated student whose top 2 layers train, with the paper's loss settings (DSKD,
alpha 0.7, tau 2, chunked CE + KD, sense loss with kappa 5 on a random sense dictionary), float32.
One prompt per sequence (``data.pack: false``): prompt lengths drawn from the paper's task mix
(``TASK_MIX``: the number of training prompts of each task in experiments/paper-llama3/base.yaml and
a length range per task, the ranges assumed for 5-shot multiple choice and 1-shot SQuAD prompts, not
measured), scaled by seq_len / 2048.

- *today's path*: a student holding copies of the teacher's frozen modules (``student.share_trunk:
  false``), every batch padded to ``data.seq_len``;
- *new path*: the shared trunk, each batch padded to its longest sequence (``data.pad_to:
  longest``; here the same batch cut after its longest sequence, which is what padding to the
  longest gives with right padding).

Both paths train their own student from the same weights on the same batches, AdamW steps
alternating (the first step of each warms up and is not timed); the losses of the two paths are
checked equal (float32 rounding) on every batch, and the figure is the ratio of real (unpadded)
tokens per second, summed over the timed steps. Goal: at least 3x at batch 1 (issue 26).
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from benchmarks.harness import Figure
from dskd.config.loading import config_from_dict
from dskd.core.batch import IGNORE_INDEX
from dskd.models.loading import load_causal_lm
from dskd.models.student import build_student
from dskd.senses import SenseDictionary
from dskd.testing.fixtures import random_senses, word_tokenizer
from dskd.training.module import DistillationModule, DistillationParts
from tests.sections import settings_of

SHAPES = {  # quick: the smallest size (CI's `make bench-quick`)
    False: {"hidden": 64, "seq_len": 1024, "steps": 3},
    True: {"hidden": 32, "seq_len": 256, "steps": 1},
}
TEACHER_LAYERS, STUDENT_LAYERS, TRAINABLE = 32, 16, 2
TASK_MIX = {  # task: (training prompts in the paper preset, prompt tokens at seq_len 2048: low, high)
    "arc_challenge": (280, (350, 750)),
    "commonsense_qa": (2435, (250, 450)),
    "piqa": (4028, (200, 450)),
    "mmlu": (24960, (300, 900)),
    "squad_v2": (5000, (250, 650)),
}
BATCH_SIZES = (1, 4)
GOAL = 3.0
"""At batch 1: new-path real tokens/s over today's."""
SEED = 0


def _model_dir(path: Path, hidden: int, seq_len: int) -> Path:
    config = LlamaConfig(
        vocab_size=32 * hidden,
        hidden_size=hidden,
        intermediate_size=7 * hidden // 2,
        num_hidden_layers=TEACHER_LAYERS,
        num_attention_heads=hidden // 32,
        num_key_value_heads=max(1, hidden // 128),
        max_position_embeddings=seq_len,
        tie_word_embeddings=False,
    )
    torch.manual_seed(SEED)
    LlamaForCausalLM(config).save_pretrained(path)
    word_tokenizer(config.vocab_size).save_pretrained(path)
    return path


def prompt_lengths(n: int, seq_len: int, g: torch.Generator) -> list[int]:
    """``n`` prompt lengths from :data:`TASK_MIX` (a task by its share of prompts, then a length
    uniform in its range), scaled by ``seq_len / 2048``."""
    weights = torch.tensor([float(count) for count, _ in TASK_MIX.values()])
    ranges = [r for _, r in TASK_MIX.values()]
    tasks = torch.multinomial(weights, n, replacement=True, generator=g).tolist()
    scale = seq_len / 2048
    lengths = []
    for t in tasks:
        low, high = ranges[t]
        drawn = int(torch.randint(low, high + 1, (1,), generator=g))
        lengths.append(max(8, min(seq_len, round(drawn * scale))))
    return lengths


def padded_batch(lengths: list[int], seq_len: int, vocab: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """One DSKD batch of prompts of ``lengths`` right-padded to ``seq_len`` (random ids; sense and
    random positions inside each prompt)."""
    b, positions, neighbours = len(lengths), 8, 4
    ids = torch.randint(3, vocab, (b, seq_len), generator=g)
    am = torch.zeros(b, seq_len, dtype=torch.long)
    for i, n in enumerate(lengths):
        am[i, :n] = 1
    ids[am == 0] = 1
    labels = torch.full((b, seq_len), IGNORE_INDEX)
    labels[:, :-1] = ids[:, 1:]
    labels[am == 0] = IGNORE_INDEX
    labels[torch.arange(b), torch.tensor(lengths) - 1] = IGNORE_INDEX
    top = torch.tensor(lengths).unsqueeze(1) - 1
    pos = (torch.rand(b, positions, generator=g) * top).long()
    keys = vocab + 4
    shape = (b, positions, neighbours)
    return {
        "input_ids": ids,
        "attention_mask": am,
        "labels": labels,
        "sense_pos": pos,
        "sense_pos_mask": torch.ones(b, positions, dtype=torch.bool),
        "syn_keys": torch.randint(0, keys, shape, generator=g),
        "syn_mask": torch.rand(shape, generator=g) < 0.7,
        "ant_keys": torch.randint(0, keys, shape, generator=g),
        "ant_mask": torch.rand(shape, generator=g) < 0.5,
        "rand_pos": (torch.rand(b, positions, generator=g) * top).long(),
        "rand_pos_mask": torch.ones(b, positions, dtype=torch.bool),
        "n_neighbour_positions": torch.tensor(lengths) // 4,
    }


def to_longest(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``batch`` padded to its longest sequence instead (right padding: cut after it)."""
    n = int(batch["attention_mask"].sum(1).max())
    seq = ("input_ids", "attention_mask", "labels")
    return {k: v[:, :n] if k in seq else v for k, v in batch.items()}


def _config(tmp: Path, teacher: Path, seq_len: int, batch: int, share: bool):
    return config_from_dict(
        {
            "name": "paper-shape",
            "preset": "bench",
            "method": "dskd",
            "runs_dir": str(tmp / "runs"),
            "artifacts_dir": str(tmp / "artifacts"),
            "teacher": {"model": str(teacher), "dtype": "float32"},
            "student": {
                "kind": "truncated",
                "num_layers": STUDENT_LAYERS,
                "trainable_top_layers": TRAINABLE,
                "share_trunk": share,
            },
            "senses": {"output_dir": str(tmp / "senses"), "device": "cpu"},
            "data": {"seq_len": seq_len, "batch_size": batch, "pack": False},
            "loss": {
                "kd": {"alpha": 0.7, "tau": 2.0, "chunk_size": 512},
                "sense": {"weight": 1.0, "kappa": 5},
            },
            "trainer": {"accelerator": "cpu", "devices": "1"},
            "logging": {"wandb": False},
        }
    )


class _Path:
    """One path's module and optimizer, and what it measured."""

    def __init__(self, module: DistillationModule, longest: bool, lr: float) -> None:
        self.module, self.longest = module, longest
        params = [p for p in module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=lr)
        self.seconds, self.tokens = 0.0, 0
        self.losses: list[dict[str, float]] = []

    def step(self, batch: dict[str, torch.Tensor], timed: bool) -> None:
        batch = to_longest(batch) if self.longest else batch
        t0 = time.perf_counter()
        loss, parts, _ = self.module.losses(batch)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if timed:
            self.seconds += time.perf_counter() - t0
            self.tokens += int(batch["attention_mask"].sum())
        self.losses.append({k: float(v) for k, v in parts.items()})


def _paths(tmp: Path, teacher_dir: Path, seq_len: int, batch: int) -> dict[str, _Path]:
    teacher = load_causal_lm(teacher_dir, dtype="float32")
    senses = SenseDictionary.load(str(tmp / "senses"))
    paths = {}
    for name, share in (("today", False), ("new", True)):
        cfg = _config(tmp, teacher_dir, seq_len, batch, share)
        parts = DistillationParts(build_student(cfg.student, teacher, share), teacher, senses)
        module = DistillationModule(settings_of(cfg), parts)
        module.signals.data.to(torch.device("cpu"))
        paths[name] = _Path(module, longest=share, lr=cfg.optim.lr)
    return paths


def _max_relative_difference(a: list[dict[str, float]], b: list[dict[str, float]]) -> float:
    return max(abs(x[k] - y[k]) / max(abs(x[k]), 1e-12) for x, y in zip(a, b, strict=True) for k in x)


def _measure(tmp: Path, teacher_dir: Path, shape: dict[str, int], batch: int) -> dict[str, Any]:
    seq_len, steps = shape["seq_len"], shape["steps"]
    g = torch.Generator().manual_seed(SEED + batch)
    vocab = 32 * shape["hidden"]
    batches = [padded_batch(prompt_lengths(batch, seq_len, g), seq_len, vocab, g) for _ in range(steps + 1)]
    paths = _paths(tmp, teacher_dir, seq_len, batch)
    for i, b in enumerate(batches):
        for name in ("today", "new") if i % 2 == 0 else ("new", "today"):
            paths[name].step(b, timed=i > 0)
    today, new = paths["today"], paths["new"]
    real = sum(int(b["attention_mask"].sum()) for b in batches[1:])
    return {
        "today": today.tokens / today.seconds,
        "new": new.tokens / new.seconds,
        "loss_difference": _max_relative_difference(today.losses, new.losses),
        "real_fraction": real / (steps * batch * seq_len),
    }


def bench_paper_shape(quick: bool) -> list[Figure]:
    shape = SHAPES[quick]
    figures = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        teacher_dir = _model_dir(tmp / "teacher", shape["hidden"], shape["seq_len"])
        random_senses(tmp / "senses", 32 * shape["hidden"], shape["hidden"])
        for batch in BATCH_SIZES:
            m = _measure(tmp, teacher_dir, shape, batch)
            equal = m["loss_difference"] <= 1e-4
            ratio = m["new"] / m["today"]
            figures.append(
                Figure(
                    name=f"train/paper_shape_real_tokens_per_s (batch {batch})",
                    value=m["new"],
                    unit="real tokens/s",
                    baseline=m["today"],
                    baseline_name="today's path: copies of the frozen trunk, padded to seq_len",
                    goal=f">= {GOAL:g}x, losses equal" if batch == 1 else "losses equal",
                    met=equal and (ratio >= GOAL if batch == 1 else True),
                    note=(
                        f"{TEACHER_LAYERS}-layer teacher, {STUDENT_LAYERS}-layer student ({TRAINABLE} "
                        f"trainable), d={shape['hidden']}, V={32 * shape['hidden']}, seq_len "
                        f"{shape['seq_len']}, {m['real_fraction']:.0%} real tokens, {shape['steps']} timed "
                        f"steps each, interleaved, float32, CPU; largest relative loss difference "
                        f"{m['loss_difference']:.1e}"
                    ),
                )
            )
    return figures


if __name__ == "__main__":  # a quick look: python -m benchmarks.paper_shape
    for f in bench_paper_shape(quick=True):
        print(f, f"ratio {f.ratio:.2f}", math.isfinite(f.value))
