"""Synthetic pieces for tests, benchmarks, GPU checks and dry runs: random Llama folders, senses, batches.

Nothing here needs a hub or an asset: a word-level tokenizer over ``t0 .. t{V-1}``, a random
Llama saved as a plain Hugging Face folder, a random sense dictionary that matches it, and
deterministic random batches in the training batch format of the DSKD data module.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as pl
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from torch.utils.data import DataLoader, Dataset
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from dskd.core.batch import IGNORE_INDEX, SenseBatch
from dskd.models.loading import tokenizer_fingerprint
from dskd.senses import SenseDictionary
from dskd.teacher_cache.build import CacheSpec, add_batch, cache_identity, cache_taus, writer_tokens
from dskd.teacher_cache.store import CacheWriter


def word_tokenizer(vocab: int):
    """A word-level tokenizer over the words t0..t{vocab-1} (t0 unknown, t1 padding, t2 end)."""
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0", pad_token="t1", eos_token="t2")


def llama_config(vocab: int, hidden: int, layers: int, heads: int = 4, kv_heads: int = 2, max_len: int = 64):
    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_len,
        tie_word_embeddings=True,
    )


def random_model_dir(path: Path, config, seed: int = 0) -> Path:
    """Save a random Llama of ``config`` and a matching word tokenizer as a Hugging Face folder."""
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(path)
    word_tokenizer(config.vocab_size).save_pretrained(path)
    return Path(path)


def random_senses(
    path: Path, vocab: int, hidden: int, k: int = 3, seed: int = 1, keys: torch.Tensor | None = None
) -> Path:
    """A random sense dictionary over ``keys`` (default: the even keys below ``vocab + 4``; the last 4
    are VIDs), with 1 to ``k`` senses each."""
    g = torch.Generator().manual_seed(seed)
    extra_keys = 4
    keys = torch.arange(0, vocab + extra_keys, 2) if keys is None else keys.unique()
    counts = torch.randint(1, k + 1, (len(keys),), generator=g)
    cents = torch.randn(len(keys), k, hidden, generator=g) * (torch.arange(k) < counts[:, None]).unsqueeze(-1)
    meta = {
        "teacher": "synthetic",
        "tokenizer_fingerprint": tokenizer_fingerprint(word_tokenizer(vocab)),
        "hidden_size": hidden,
        "k": k,
        "keying": "observed",
        "table_size": vocab + extra_keys,
    }
    SenseDictionary.from_padded(cents, counts, keys, meta).save(path)
    return Path(path)


def random_batch(
    g: torch.Generator, batch: int, seq: int, vocab: int, positions: int = 3, neighbours: int = 4
) -> SenseBatch:
    """One batch in the training format (random ids; the last sequence ends in 4 padding tokens)."""
    ids = torch.randint(3, vocab, (batch, seq), generator=g)
    am = torch.ones(batch, seq, dtype=torch.long)
    am[-1, seq - 4 :] = 0
    labels = torch.full((batch, seq), IGNORE_INDEX)
    labels[:, :-1] = ids[:, 1:]
    labels[am == 0] = IGNORE_INDEX
    shape, nshape = (batch, positions), (batch, positions, neighbours)
    keys = vocab + 4
    return {
        "input_ids": ids,
        "attention_mask": am,
        "labels": labels,
        "sense_pos": torch.randint(0, seq - 5, shape, generator=g),
        "sense_pos_mask": torch.rand(shape, generator=g) < 0.8,
        "syn_keys": torch.randint(0, keys, nshape, generator=g),
        "syn_mask": torch.rand(nshape, generator=g) < 0.7,
        "ant_keys": torch.randint(0, keys, nshape, generator=g),
        "ant_mask": torch.rand(nshape, generator=g) < 0.5,
        "rand_pos": torch.randint(0, seq - 5, shape, generator=g),
        "rand_pos_mask": torch.ones(shape, dtype=torch.bool),
        "n_neighbour_positions": torch.randint(1, seq // 2, (batch,), generator=g),
    }


class _Batches(Dataset):
    def __init__(self, n: int, seed: int, shape: dict[str, int]) -> None:
        self.n, self.seed, self.shape = n, seed, shape

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return random_batch(torch.Generator().manual_seed(self.seed * 100_003 + i), **self.shape)


class SyntheticBatches(pl.LightningDataModule):
    """The same ``n`` deterministic random training batches every epoch, and ``val`` validation batches;
    ``shape`` goes to :func:`random_batch` (default 2 sequences of 16 tokens)."""

    def __init__(self, vocab: int, n: int = 8, val: int = 2, seed: int = 0, **shape: int) -> None:
        super().__init__()
        self.n, self.val, self.seed = n, val, seed
        self.shape = {"batch": 2, "seq": 16, **shape, "vocab": vocab}

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Batches(self.n, self.seed, self.shape), batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(_Batches(self.val, self.seed + 1, self.shape), batch_size=None)


def write_batch_cache(directory, cfg, tokenizer, teacher, batches, hidden_dtype: str = "float16"):
    """A teacher cache of exactly ``batches`` in ``directory`` (tests, benchmarks and comparisons),
    with ``cfg.teacher``'s targets and hidden positions."""
    sense_dirs = (cfg.lexicon.output_dir, cfg.senses.output_dir)
    spec_dirs = sense_dirs if cfg.method == "dskd" else None
    spec = CacheSpec(cfg.teacher, cfg.cache, cfg.data, cfg.loss.kd, cfg.trainer, cfg.seed, spec_dirs)
    head = teacher.get_output_embeddings().weight
    meta = {
        **cache_identity(spec, tokenizer),
        "taus": cache_taus(cfg.cache, cfg.loss.kd),
        "hidden_dtype": hidden_dtype,
        "hidden_positions": cfg.cache.hidden_positions,
        "hidden_size": int(head.shape[1]),
        "vocab_size": int(head.shape[0]),
        "seeds": [cfg.seed],
    }
    with CacheWriter(
        directory,
        meta,
        hidden_tokens=writer_tokens(cfg.cache, hidden_dtype, meta["vocab_size"], [sense_dirs]),
    ) as writer:
        for batch in batches:
            add_batch(writer, teacher, batch, spec)


LAUNCH_VARIABLES = ("MASTER_", "RANK", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "PL_", "SLURM_")
"""Prefixes of the rendezvous, rank and cluster variables a launcher sets."""


def fresh_launch_env(pythonpath: Path) -> dict[str, str]:
    """This process's environment without launcher variables (a multi-process run started from it
    starts as a user's would), importing dskd from ``pythonpath``, one thread per process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCH_VARIABLES)}
    return env | {"PYTHONPATH": str(pythonpath), "OMP_NUM_THREADS": "1"}
