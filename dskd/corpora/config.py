"""Config of one text source (read by the corpora readers, the training stream and the sense stage)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from dskd.config.ranges import ranged

SourceKind = Literal[
    "text",
    "jsonl",
    "wordnet_corpus",
    "shakespeare",
    "bigbench",
    "hf",
    "arc_challenge",
    "commonsense_qa",
    "piqa",
    "mmlu",
    "squad_v2",
]
SOURCE_KINDS: tuple[str, ...] = get_args(SourceKind)


@dataclass
class SourceConfig:
    """One text source."""

    kind: SourceKind = "text"
    """text | jsonl | wordnet_corpus | shakespeare | bigbench | hf (datasets streaming) |
    arc_challenge | commonsense_qa | piqa | mmlu | squad_v2."""
    path: str | None = None
    """File glob (text, jsonl), task name (bigbench), dataset id (hf; QA kinds: overrides the default id),
    glosses | examples (wordnet_corpus; None: both)."""
    field: str = "text"
    """JSONL / dataset field holding the text."""
    max_records: int | None = ranged(None, ge=1)
    """Read at most this many records (None: all): the first ones, or a random subset with `subset_seed`."""
    subset_seed: int | None = ranged(None, ge=0, le=2**32 - 1)
    """With max_records: None takes the first max_records records; a seed takes max_records records drawn
    uniformly at random from the whole source with this seed (kept in source order; the paper's "25%
    subsets"). Every pass then reads the whole source."""
    shots: int | None = ranged(None, ge=0)
    """k-shot exemplars for QA prompts (None: the paper's default, 5 multiple choice, 1 SQuAD)."""
    split: str | None = None
    """Dataset split for hf and the hub QA kinds (None: train, auxiliary_train for MMLU)."""
    subset: str | None = None
    """Dataset config name for hf and the hub QA kinds (None: the kind's default, e.g. ARC-Challenge)."""
    teacher_new_tokens: int | None = ranged(None, ge=1)
    """data.train / data.val with data.targets=teacher: tokens of the teacher's greedy continuation per prompt
    of this source (None: data.teacher_new_tokens); the paper: 1 for multiple choice, 10 for SQuAD v2."""
    reservoir_cap: int | None = ranged(None, ge=1)
    """senses.sources only: rows kept per key from this source (None: senses.cap_per_source); the paper:
    50 for general text, 100 for task data."""
