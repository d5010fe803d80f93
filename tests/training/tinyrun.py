"""Tiny runs for the training tests: a random Llama teacher folder, a sense dictionary, random batches.

Importable (not only fixtures) so that the 2-process DDP script uses the same pieces.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from dskd.testing.fixtures import (
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
    from dskd.config.loading import config_from_dict

    data = {
        "name": f"tiny-{method}",
        "preset": "test",
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


def write_corpus(path: Path, docs: int = 24) -> Path:
    """A text file of ``docs`` documents of 3 to 11 words ``t3 .. t{VOCAB-1}`` (the word tokenizer's)."""
    lines = [" ".join(f"t{3 + (7 * i + 5 * j) % (VOCAB - 3)}" for j in range(3 + i % 9)) for i in range(docs)]
    path.write_text("\n\n".join(lines) + "\n")
    return path


def word_lexicon():
    """A real Lexicon for the word tokenizer: token t has the synonym t + 1 and the antonym t + 2."""
    import numpy as np

    from dskd.lexicon import Lexicon
    from dskd.models.loading import tokenizer_fingerprint

    indptr, heads = np.arange(VOCAB + 1), np.arange(VOCAB)
    empty = np.zeros(VOCAB + 1, dtype=np.int64)
    arrays = {
        "syn_indptr": indptr, "syn_indices": heads + 1, "syn_sources": np.ones(VOCAB, dtype=np.int64),
        "ant_indptr": indptr, "ant_indices": heads + 2, "ant_sources": np.ones(VOCAB, dtype=np.int64),
        "hyp_indptr": empty, "hyp_indices": empty[:0], "hyp_sources": empty[:0],
    }  # fmt: skip
    fp = tokenizer_fingerprint(make_tokenizer())
    return Lexicon(
        arrays, {"tokenizer": {"name": "words", "vocab_size": VOCAB, "fingerprint": fp}}, Path(".")
    )


def real_datamodule(cfg):
    """The real streaming DSKDDataModule over ``cfg.data`` with the word tokenizer and lexicon."""
    from dskd.data.datamodule import DSKDDataModule

    return DSKDDataModule(
        cfg.data, cfg.seed, make_tokenizer(), word_lexicon() if cfg.method == "dskd" else None
    )


def corpus_config(tmp: Path, teacher_dir: Path, corpus: Path, method: str = "dskd", over: dict | None = None):
    """:func:`tiny_config` training on the text file ``corpus`` (seq_len 16, batches of 2, 20 % held out)."""
    data = {
        "data.train": [{"kind": "text", "path": str(corpus)}],
        "data.seq_len": 16,
        "data.batch_size": 2,
        "data.val_fraction": 0.2,
        "data.shuffle_buffer": 4,
        "data.max_sense_positions": 4,
        "data.max_neighbours": 2,
    }
    return tiny_config(tmp, teacher_dir, method, {**data, **(over or {})})


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    """The rows of a run's metrics.csv."""
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def train_losses(run_dir: Path) -> dict[int, float]:
    """train/loss by step from a run's metrics.csv (a repeated step would collapse: count rows apart)."""
    return {int(r["step"]): float(r["train/loss"]) for r in metrics_rows(run_dir) if r.get("train/loss")}


def write_lexicon(directory, vocab: int) -> None:
    """A lexicon artifact by hand: 4 -> syn {8, VID vocab+0}, 10 -> ant {12}; synset lemmas {20, 22};
    two VIDs."""
    directory.mkdir(parents=True)

    def csr(rows: dict[int, list[int]], n: int) -> tuple[np.ndarray, np.ndarray]:
        lengths = [len(rows.get(i, [])) for i in range(n)]
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return indptr, np.array([j for i in range(n) for j in rows.get(i, [])], dtype=np.int64)

    arrays = {}
    for rel, rows in (("syn", {4: [8, vocab]}), ("ant", {10: [12]}), ("hyp", {})):
        indptr, indices = csr(rows, vocab)
        arrays |= {
            f"{rel}_indptr": indptr,
            f"{rel}_indices": indices,
            f"{rel}_sources": np.ones_like(indices),
        }
    arrays |= {"vid_indptr": np.array([0, 2, 4]), "vid_token_ids": np.array([30, 31, 40, 41])}
    for name, rows in (("lemma", {0: [20, 22]}), ("antonym", {})):
        arrays[f"synset_{name}_indptr"], arrays[f"synset_{name}_indices"] = csr(rows, 1)
    save_file({k: v.astype(np.int64) for k, v in arrays.items()}, str(directory / "lexicon.safetensors"))
    meta = {"format_version": 1, "tokenizer": {"name": "test", "vocab_size": vocab, "fingerprint": "x"}}
    (directory / "meta.json").write_text(json.dumps(meta))
