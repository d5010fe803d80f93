"""Config of the sense-dictionary stage (`dskd senses build`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dskd.config.ranges import ranged
from dskd.corpora.config import SourceConfig


@dataclass
class SensesConfig:
    output_dir: str = "${artifacts_dir}/senses"
    """Where senses.safetensors, meta.json and stats.json are written."""
    sources: list[SourceConfig] = field(default_factory=lambda: [SourceConfig(kind="wordnet_corpus")])
    """Corpus the teacher's hidden states are gathered over."""
    k: int = ranged(10, ge=1)
    """Centroids per key (10 for Llama-3-8B, 5 for Mistral-7B in the released setup)."""
    keying: Literal["predicted", "observed"] = "predicted"
    """Key a hidden state by the token it predicts: predicted (teacher argmax, released code) | observed."""
    cap_per_source: int = ranged(50, ge=1)
    """Reservoir size per key and source (a source's `reservoir_cap` overrides it)."""
    max_rows_per_key: int = ranged(2000, ge=1)
    """Overall cap of gathered rows per key."""
    max_length: int = ranged(256, ge=2)
    """Tokens per sequence fed to the teacher."""
    batch_size: int = ranged(8, ge=1)
    """Teacher forward size in sequences of max_length: batches hold batch_size * max_length padded tokens
    (shorter, length-sorted sequences are packed more per batch)."""
    max_tokens: int | None = ranged(None, ge=1)
    """Stop gathering after this many tokens (None: the whole corpus)."""
    kmeans_iters: int = ranged(50, ge=1)
    """Lloyd iterations of the batched k-means."""
    device: Literal["auto", "cpu", "cuda", "pinned"] = "auto"
    """Where the dictionary lives during training: auto (GPU if it takes <= 25% of its memory, else pinned
    CPU) | cpu | cuda | pinned (pinned CPU memory, per-batch gathers to the GPU)."""
    restrict_to_lexicon: bool = False
    """When loading for training, keep only the keys the lexicon can ask for (heads, neighbours, synset
    lemmas, VIDs; Lexicon.sense_keys). Saves memory at paper scale; random (P2) positions on other
    tokens then get no sense term (docs/senses.md)."""
    compose_vids: bool = True
    """Compose senses of the lexicon's multi-token words (VIDs); needs the lexicon artifact."""
    save_rows: bool = False
    """Also write the raw reservoir rows (rows.safetensors; debug and benchmark artifact, large)."""
