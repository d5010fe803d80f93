"""A tiny KD experiment for `dskd train` jobs: a random Llama teacher folder, a text corpus, a YAML config."""

from __future__ import annotations

import random
from pathlib import Path

import yaml

from tests.training.tinyrun import VOCAB, make_model_dir  # the training tests' tiny teacher


def make_experiment(root: Path, max_steps: int, checkpoint_every: int, docs: int = 1500) -> Path:
    """Write ``root/{teacher/, corpus.txt, kd.yaml}``; return the config path (runs under ``root/runs``)."""
    make_model_dir(root / "teacher")
    rng = random.Random(0)
    texts = (" ".join(f"t{rng.randrange(3, VOCAB)}" for _ in range(48)) for _ in range(docs))
    (root / "corpus.txt").write_text("\n\n".join(texts))
    config = {
        "name": "slurm-kd",
        "preset": "test",
        "method": "kd",
        "runs_dir": str(root / "runs"),
        "artifacts_dir": str(root / "artifacts"),
        "teacher": {"model": str(root / "teacher")},
        "student": {"kind": "truncated", "num_layers": 2, "trainable_top_layers": 1},
        "data": {
            "train": [{"kind": "text", "path": str(root / "corpus.txt")}],
            "seq_len": 32,
            "batch_size": 2,
        },
        "trainer": {
            "max_steps": max_steps,
            "log_every_n_steps": 1,
            "checkpoint_every_n_steps": checkpoint_every,
        },
        "logging": {"wandb": False},
    }
    path = root / "kd.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
