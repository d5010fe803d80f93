"""Tiny runs for the training tests: a random Llama teacher folder, a sense dictionary, random batches.

Importable (not only fixtures) so that the 2-process DDP script uses the same pieces.
"""

from __future__ import annotations

from pathlib import Path

from dskd.testing import (
    SyntheticBatches,
    llama_config,
    random_model_dir,
    random_senses,
    word_tokenizer,
)

VOCAB = 96
HIDDEN = 32


def make_tokenizer(vocab: int = VOCAB):
    return word_tokenizer(vocab)


def make_model_dir(
    path: Path, seed: int = 0, vocab: int = VOCAB, hidden: int = HIDDEN, layers: int = 4
) -> Path:
    return random_model_dir(path, llama_config(vocab, hidden, layers), seed)


def make_senses(path: Path, teacher_dir: Path | None = None) -> Path:
    return random_senses(path, VOCAB, HIDDEN)


def random_batches(n: int = 8, seed: int = 0, val: int = 2) -> SyntheticBatches:
    return SyntheticBatches(VOCAB, n=n, val=val, seed=seed)


def tiny_config(tmp: Path, teacher_dir: Path, method: str = "kd", over: dict | None = None):
    """An experiment config for a tiny CPU run in ``tmp`` (``over``: dotted keys -> values)."""
    from dskd.config import config_from_dict

    data = {
        "name": f"tiny-{method}",
        "family": "test",
        "method": method,
        "runs_dir": str(tmp / "runs"),
        "artifacts_dir": str(tmp / "artifacts"),
        "teacher": {"model": str(teacher_dir)},
        "student": {"kind": "truncated", "num_layers": 2, "trainable_top_layers": 1},
        "senses": {"output_dir": str(tmp / "senses"), "device": "cpu"},
        "optim": {"lr": 1e-3, "warmup_ratio": 0.25},
        "trainer": {
            "accelerator": "cpu",
            "devices": "1",
            "max_steps": 4,
            "log_every_n_steps": 1,
            "checkpoint_every_n_steps": 2,
        },
        "logging": {"wandb": False},
    }
    for key, value in (over or {}).items():
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return config_from_dict(data)
