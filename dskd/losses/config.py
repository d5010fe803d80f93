"""Config of the losses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from dskd.config.ranges import check_fields, ranged
from dskd.core.errors import ConfigError

Divergence = Literal["forward_kl", "reverse_kl", "js", "skew_kl", "tv", "gjsd", "uld", "uld_hybrid"]
DIVERGENCES: tuple[str, ...] = get_args(Divergence)
"""Names of the KD divergences (defined in dskd.losses.kd, the cross-tokenizer ones in dskd.losses.uld)."""
ULD_DIVERGENCES: tuple[str, ...] = ("uld", "uld_hybrid")
"""Cross-tokenizer losses (dskd.losses.uld): distances between the distributions of aligned text spans,
not per-position divergences over one shared vocabulary."""
POSITION_DIVERGENCES: tuple[str, ...] = tuple(d for d in DIVERGENCES if d not in ULD_DIVERGENCES)
"""Divergences per position over one shared vocabulary (dskd.losses.kd)."""
Hinge = Literal["absolute", "teacher", "triplet"]
"""Forms of the sense loss's push term (docs/losses.md, "Teacher-relative terms")."""
Pull = Literal["absolute", "floor", "match"]
"""Forms of the sense loss's pull terms, P1 and P2 (docs/losses.md, "Teacher-relative terms")."""
SAMPLED_DIVERGENCES: tuple[str, ...] = ("forward_kl",)
"""Divergences that tokens sampled from the teacher estimate without bias (dskd.losses.sampled)."""


def check_divergence(divergence: str, skew: float) -> None:
    """Raise :class:`ConfigError` for an unknown divergence or a skew outside [0, 1)."""
    if divergence not in DIVERGENCES:
        raise ConfigError(
            f"loss.kd.divergence={divergence!r} is not known; choose one of {', '.join(DIVERGENCES)}."
        )
    if divergence == "skew_kl" and not 0.0 <= skew < 1.0:
        raise ConfigError(f"loss.kd.skew={skew} must lie in [0, 1) (a = 1 makes skew KL identically 0).")


@dataclass
class KDConfig:
    alpha: float = ranged(0.7, ge=0)
    """Weight of the distillation term."""
    tau: float = ranged(2.0, gt=0)
    """Softmax temperature; the term is scaled by tau^2."""
    divergence: Divergence = "forward_kl"
    """forward_kl: KL(p_T||p_S) | reverse_kl: KL(p_S||p_T) | js: Jensen-Shannon | skew_kl:
    KL(p_T || a p_T + (1-a) p_S) (DistiLLM) | tv: total variation | gjsd: generalized JSD with
    beta (TRL's GKD: beta KL(p_T||m) + (1-beta) KL(p_S||m), m = beta p_T + (1-beta) p_S) | uld:
    cross-tokenizer ULD, L1 between sorted span probabilities (TRL's GOLD) | uld_hybrid: gjsd on the
    tokens both vocabularies spell alike, ULD on the rest; uld and uld_hybrid distil across tokenizers
    (a student with its own tokenizer, e.g. student.kind=scratch, student.tokenizer=wordnet-bpe), online
    teacher, method=kd, data.pack=false (docs/losses.md)."""
    skew: float = ranged(0.1, ge=0, lt=1)
    """a of skew KL, in [0, 1) (0 = forward KL)."""
    beta: float = ranged(0.5, ge=0, le=1)
    """beta of the generalized JSD (gjsd, and the matched tokens of uld_hybrid), in [0, 1]: 0 = forward
    KL, 1 = reverse KL (TRL's semantics)."""
    uld_merge: Literal["first", "last"] = "last"
    """How uld merges the distributions of a span's several tokens into one (GOLD's merging): last: the
    last token's distribution times the probabilities of the earlier tokens (the chain rule when each
    position predicts the next token; GOLD's "bayesian") | first: the first token's distribution times
    the probabilities of the later tokens (GOLD's "observed")."""
    uld_matched_weight: float | None = ranged(None, ge=0)
    """Weight of the matched-token gjsd term of uld_hybrid; null (with uld_unmatched_weight null): the
    share of the teacher's vocabulary that the student's spells alike (GOLD's adaptive weighting)."""
    uld_unmatched_weight: float | None = ranged(None, ge=0)
    """Weight of the sorted-probability term of uld_hybrid on the other tokens; null: 1 minus the
    matched weight. Set both weights or neither."""
    chunk_size: int | None = ranged(None, ge=1)
    """Positions per chunk of the fused CE + KD (logits of only this many positions exist at once);
    None projects all valid positions at once."""

    def __post_init__(self) -> None:  # also a settings object of dskd.losses.kd, built in code
        check_fields(self, "loss.kd.")
        check_divergence(self.divergence, self.skew)
        if (self.uld_matched_weight is None) != (self.uld_unmatched_weight is None):
            raise ConfigError(
                "loss.kd.uld_matched_weight and loss.kd.uld_unmatched_weight are set together (fixed "
                "weights) or both left null (adaptive weights), not one of them."
            )


@dataclass
class SenseLossConfig:
    weight: float = ranged(1.0, ge=0)
    """lambda: 1.0 (Llama), 1.5 (Mistral)."""
    kappa: int = ranged(5, ge=1)
    """Nearest senses (to the teacher's hidden state) used as positives / negatives."""
    w_pos: float = ranged(1.0, ge=0)
    """Weight of the pull toward synonyms' senses."""
    w_neg: float = ranged(1.0, ge=0)
    """Weight of the hinge push away from antonyms' senses."""
    hinge: Hinge = "absolute"
    """Form of the push term, per selected antonym row a (docs/losses.md): absolute: max(0, mu -
    MSE_S(a)) (the paper) | teacher: max(0, MSE_T(a) - teacher_slack - MSE_S(a)), the student kept at
    least as far from a as the teacher (0 at the teacher's state) | triplet: per position max(0, mu +
    mean_P MSE_S(p) - mean_N MSE_S(a)) (not 0 at the teacher's state in general)."""
    teacher_slack: float = ranged(0.0, ge=0)
    """delta of hinge=teacher, in MSE units: how much closer to an antonym row than the teacher the
    student may come before the hinge acts."""
    pull: Pull = "absolute"
    """Form of the pulls, per selected row s (P1: positives, P2: the target's own senses; docs/losses.md):
    absolute: MSE_S(s) (the paper) | floor: max(0, MSE_S(s) - MSE_T(s)), the pull stops where the
    teacher stands | match: (MSE_S(s) - MSE_T(s))^2, the student held at the teacher's distance from
    both sides (floor and match are 0, with zero gradient, at the teacher's state)."""
    margin: float = ranged(1.0, ge=0)
    """mu of the absolute and triplet hinges, in MSE units (ignored when margin_quantile is set)."""
    margin_quantile: float | None = ranged(None, ge=0, le=1)
    """When set (0..1), mu is this quantile of the MSE between a teacher state and the nearest sense
    of an unrelated (random other) key, measured when the sense dictionary was built: antonym senses
    are pushed at least as far as a q-typical unrelated word, on the teacher's hidden-state scale
    (the first DSKD+; null: the absolute margin, as in the paper)."""
    own_senses_in_negatives: bool = True
    """Add the target's own senses to the negative candidates (released code does)."""
    positives: bool = True
    """Use the synonym pull term."""
    negatives: bool = True
    """Use the antonym push term."""
    random_positions: bool = True
    """Add the P2 term (m random positions pulled toward their own nearest senses)."""

    def __post_init__(self) -> None:  # also built in code for dskd.losses.sense
        check_fields(self, "loss.sense.")


@dataclass
class LossConfig:
    ce_weight: float = ranged(1.0, ge=0)
    """Weight of next-token cross-entropy."""
    kd: KDConfig = field(default_factory=KDConfig)
    sense: SenseLossConfig = field(default_factory=SenseLossConfig)
