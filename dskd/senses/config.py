"""Config of the sense-dictionary stage (`dskd senses build`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from dskd.data.config import SourceConfig


@dataclass
class SensesConfig:
    output_dir: str = "${artifacts_dir}/senses"
    """Where senses.safetensors, meta.json and stats.json are written."""
    sources: list[SourceConfig] = field(default_factory=lambda: [SourceConfig(kind="wordnet_corpus")])
    """Corpus the teacher's hidden states are gathered over."""
    k: int = 10
    """Centroids per key (10 for Llama-3-8B, 5 for Mistral-7B in the released setup)."""
    keying: str = "predicted"
    """Key a hidden state by the token it predicts: predicted (teacher argmax, released code) | observed."""
    cap_per_source: int = 50
    """Reservoir size per key and source."""
    max_rows_per_key: int = 2000
    """Overall cap of gathered rows per key."""
    max_length: int = 256
    """Tokens per sequence fed to the teacher."""
    batch_size: int = 8
    """Sequences per teacher forward."""
    max_tokens: int | None = None
    """Stop gathering after this many tokens (None: the whole corpus)."""
    kmeans_iters: int = 50
    """Lloyd iterations of the batched k-means."""
    device: str = "auto"
    """Where the dictionary lives during training: auto | cpu | cuda."""
    restrict_to_lexicon: bool = False
    """Keep only keys the lexicon or corpus need (saves memory at paper scale)."""
