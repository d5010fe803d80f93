"""A second, real tokenizer made offline: a byte-level BPE trained on the WordNet corpus asset.

Cross-tokenizer distillation needs a student tokenizer that differs from the teacher's. This one is
trained by the project itself with the ``tokenizers`` library on the WordNet glosses and example
sentences (``wordnet-corpus`` asset), so no hub is needed. BPE training has no randomness: the same
corpus, vocabulary size and ``tokenizers`` version give the same merges (tokenizers 0.23.3: the same
file with 1 and 2 threads, ``RAYON_NUM_THREADS``).
The result is cached as ``$DSKD_HOME/cache/bpe/<key>/tokenizer.json``, keyed by those inputs.

Like SmolLM2's, the pre-tokenizer is GPT-2's ByteLevel without a prefix space, so every text
round-trips and the byte-level pieces of a tokenization concatenate to the text's UTF-8 bytes
(``dskd.data.alignment`` relies on that).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import tokenizers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from dskd.assets import asset_path, dskd_home
from dskd.core.io import write_text_atomic

__all__ = ["EOS", "PAD", "bpe_tokenizer", "train_bpe"]

EOS = "<|endoftext|>"
"""End of document (id 0), also the BOS a chat would need."""
PAD = "<|pad|>"
"""Padding (id 1)."""
PARTS = ("glosses", "examples")


def corpus_texts(root: Path) -> Iterator[str]:
    """The ``text`` of every record of the wordnet-corpus asset at ``root``, glosses then examples."""
    for part in PARTS:
        with open(root / f"{part}.jsonl", encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)["text"]


def train_bpe(texts: Iterator[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE of ``vocab_size`` entries (the 256 bytes and the two specials included)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def _cache_key(corpus: Path, vocab_size: int) -> str:
    """Digest of what the merges depend on: the corpus manifest, the size and the library version."""
    manifest = (corpus / "dskd-asset.json").read_bytes()
    inputs = f"{hashlib.sha256(manifest).hexdigest()}|{vocab_size}|{tokenizers.__version__}"
    return f"wordnet-{vocab_size}-{hashlib.sha256(inputs.encode()).hexdigest()[:12]}"


def bpe_tokenizer(vocab_size: int = 8000) -> PreTrainedTokenizerFast:
    """The WordNet byte-level BPE as a Hugging Face fast tokenizer, trained on first use and cached."""
    corpus = asset_path("wordnet-corpus")
    path = dskd_home() / "cache" / "bpe" / _cache_key(corpus, vocab_size) / "tokenizer.json"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, train_bpe(corpus_texts(corpus), vocab_size).to_str())
    return PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token=EOS, pad_token=PAD)
