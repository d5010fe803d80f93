"""A tiny random teacher (word tokenizer), a text corpus in its words, and a config streaming it."""

from __future__ import annotations

import random

import pytest

from dskd.testing.fixtures import llama_config, random_model_dir

VOCAB, HIDDEN = 64, 32


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory):
    return random_model_dir(tmp_path_factory.mktemp("teacher"), llama_config(VOCAB, HIDDEN, 3, max_len=32))


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """60 documents of 3..12 random words t3..t63, one paragraph each."""
    rng = random.Random(0)
    docs = [" ".join(f"t{rng.randrange(3, VOCAB)}" for _ in range(rng.randint(3, 12))) for _ in range(60)]
    path = tmp_path_factory.mktemp("corpus") / "docs.txt"
    path.write_text("\n\n".join(docs) + "\n")
    return path


@pytest.fixture
def make_cfg(tmp_path, teacher_dir, corpus):
    """Factory of experiment configs over ``corpus`` (``over``: dotted keys -> values)."""
    from dskd.config.loading import config_from_dict

    def make(**over):
        data = {
            "name": "cache-test",
            "preset": "test",
            "method": "kd",
            "runs_dir": str(tmp_path / "runs"),
            "artifacts_dir": str(tmp_path / "artifacts"),
            "teacher": {"model": str(teacher_dir)},
            "cache": {
                "kd_format": "topk",
                "top_k": 8,
                "hidden_positions": "all",
                "dir": str(tmp_path / "cache"),
            },
            "student": {"kind": "truncated", "num_layers": 2, "trainable_top_layers": 1},
            "senses": {"output_dir": str(tmp_path / "senses"), "device": "cpu"},
            "data": {
                "train": [{"kind": "text", "path": str(corpus)}],
                "seq_len": 16,
                "batch_size": 2,
                "shuffle_buffer": 8,
                "val_fraction": 0.2,
            },
            "optim": {"lr": 1e-3, "warmup_ratio": 0.25},
            "trainer": {
                "accelerator": "cpu",
                "devices": "1",
                "max_steps": 4,
                "limit_val_batches": 2,
                "log_every_n_steps": 1,
                "checkpoint_every_n_steps": 100,
            },
            "logging": {"wandb": False},
        }
        for key, value in over.items():
            node = data
            *parents, last = key.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[last] = value
        return config_from_dict(data)

    return make
