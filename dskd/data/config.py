"""Config of the training data (the LightningDataModule)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SourceConfig:
    """One text source."""

    kind: str = "text"
    """text | jsonl | wordnet_corpus | shakespeare | bigbench | hf (datasets streaming) |
    arc_challenge | commonsense_qa | piqa | mmlu | squad_v2."""
    path: str | None = None
    """File glob (text, jsonl), task name (bigbench), dataset id (hf; QA kinds: overrides the default id),
    glosses | examples (wordnet_corpus; None: both)."""
    field: str = "text"
    """JSONL / dataset field holding the text."""
    max_records: int | None = None
    """Read at most this many records (None: all)."""
    shots: int | None = None
    """k-shot exemplars for QA prompts (None: the paper's default, 5 multiple choice, 1 SQuAD)."""
    split: str | None = None
    """Dataset split for hf and the hub QA kinds (None: train, auxiliary_train for MMLU)."""
    subset: str | None = None
    """Dataset config name for hf and the hub QA kinds (None: the kind's default, e.g. ARC-Challenge)."""


@dataclass
class DataConfig:
    train: list[SourceConfig] = field(default_factory=lambda: [SourceConfig(kind="wordnet_corpus")])
    """Training sources."""
    val: list[SourceConfig] = field(default_factory=list)
    """Validation sources (empty: a held-out slice of train)."""
    val_fraction: float = 0.02
    """Fraction of documents held out for validation when `val` is empty (chosen by a hash of the text)."""
    seq_len: int = 128
    """Tokens per packed training sequence."""
    batch_size: int = 4
    """Sequences per device per step."""
    num_workers: int = 0
    """DataLoader worker processes."""
    pack: bool = True
    """Pack several whole documents into one sequence (False: one document per sequence, padded)."""
    shuffle_buffer: int = 1000
    """Documents in the seeded shuffle buffer of each shard (0 or 1: stream order)."""
    targets: str = "observed"
    """observed (next token of the text) | teacher (the teacher's greedy continuation, paper recipe)."""
    teacher_new_tokens: int = 1
    """Tokens of greedy continuation per prompt when targets=teacher (10 for SQuAD)."""
    targets_cache_dir: str = "${artifacts_dir}/teacher_targets"
    """Where the teacher's greedy continuations are cached (targets=teacher)."""
    neighbours_with_senses: bool = False
    """Draw synonyms / antonyms only among neighbours that have senses in the sense dictionary (DSKD+);
    false: among all lexicon neighbours, as in the released code (many then contribute no row)."""
    sense_aligned_neighbours: bool = False
    """Restrict neighbours to the aligned synset's (beyond the paper; off in paper-faithful configs)."""
    max_sense_positions: int = 25
    """m = min(this, n) positions with neighbours per sequence (and 0.4 n when that is larger)."""
    sense_fraction: float = 0.4
    """Fraction of neighbour positions sampled when it exceeds max_sense_positions."""
    max_neighbours: int = 25
    """Synonyms / antonyms sampled per position."""
