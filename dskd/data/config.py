"""Config of the training data (the LightningDataModule)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dskd.config.ranges import ranged
from dskd.corpora.config import SourceConfig

Targets = Literal["observed", "teacher"]
PadTo = Literal["longest", "seq_len"]


@dataclass
class OnPolicyConfig:
    """On-policy distillation (docs/training.md): batches whose continuation the student samples itself."""

    fraction: float = ranged(0.0, ge=0, le=1)
    """lambda: probability that a training batch is on-policy (TRL's lmbda), drawn per batch from
    (seed, batch index), the same on every process; 0 trains on the data only."""
    temperature: float = ranged(1.0, ge=0)
    """Sampling temperature of the student's continuation (0: greedy)."""
    top_p: float = ranged(1.0, gt=0, le=1)
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p (1: all)."""
    max_new_tokens: int = ranged(64, ge=1)
    """Most tokens sampled per sequence (fewer where the prefix leaves less room in data.seq_len)."""
    prefix_fraction: float = ranged(0.5, gt=0, lt=1)
    """Prefix kept of a sequence without a prompt, as a fraction of its tokens (at least 1, and at least
    one token left to replace); a sequence that starts with a QA or teacher-target prompt keeps it."""


@dataclass
class DataConfig:
    train: list[SourceConfig] = field(default_factory=lambda: [SourceConfig(kind="wordnet_corpus")])
    """Training sources."""
    val: list[SourceConfig] = field(default_factory=list)
    """Validation sources (empty: a held-out slice of train)."""
    val_fraction: float = ranged(0.02, ge=0, lt=1)
    """Fraction of documents held out for validation when `val` is empty (chosen by a hash of the text)."""
    seq_len: int = ranged(128, ge=2)
    """Tokens per packed training sequence."""
    batch_size: int = ranged(4, ge=1)
    """Sequences per device per step."""
    num_workers: int = ranged(0, ge=0)
    """DataLoader worker processes."""
    pack: bool = True
    """Pack several whole documents into one sequence, which attend to each other (False: one document per
    sequence, padded; the paper presets)."""
    pad_to: PadTo = "longest"
    """longest: each batch is right-padded to its longest sequence, and with pack off and batch_size > 1
    its sequences are bucketed by length (no compute on padding; docs/data.md) | seq_len: every batch is
    seq_len wide (the same per-token losses, more compute)."""
    shuffle_buffer: int = ranged(1000, ge=0)
    """Documents in the seeded shuffle buffer of each shard (0 or 1: stream order)."""
    targets: Targets = "observed"
    """observed (next token of the text) | teacher (the teacher's greedy continuation, paper recipe)."""
    teacher_new_tokens: int = ranged(1, ge=1)
    """Tokens of greedy continuation per prompt when targets=teacher, for sources that do not set their own
    `teacher_new_tokens` (the paper: 1 for multiple choice, 10 for SQuAD v2)."""
    continuations_dir: str = "${artifacts_dir}/teacher_continuations"
    """Where the teacher's greedy continuations are cached (targets=teacher)."""
    continuations_batch_size: int = ranged(8, ge=1)
    """Prompts per batched greedy generation of the teacher's continuations, on each rank's own device."""
    neighbours_with_senses: bool = False
    """Draw synonyms / antonyms only among neighbours that have senses in the sense dictionary (DSKD+);
    false: among all lexicon neighbours, as in the released code (many then contribute no row). A
    target none of whose neighbours has senses is then no P1 candidate: m, the number of P1 and of P2
    positions, shrinks (docs/losses.md, DSKD+)."""
    sense_aligned_neighbours: bool = False
    """Restrict neighbours to the aligned synset's (beyond the paper; off in paper-faithful configs)."""
    max_sense_positions: int = ranged(25, ge=0)
    """m = min(this, n) positions with neighbours per sequence (and 0.4 n when that is larger)."""
    sense_fraction: float = ranged(0.4, ge=0, le=1)
    """Fraction of neighbour positions sampled when it exceeds max_sense_positions."""
    max_neighbours: int = ranged(25, ge=1)
    """Synonyms / antonyms sampled per position."""
    on_policy: OnPolicyConfig = field(default_factory=OnPolicyConfig)
