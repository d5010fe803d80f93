"""Config of the losses."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class KDConfig:
    alpha: float = 0.7
    """Weight of the distillation term."""
    tau: float = 2.0
    """Softmax temperature; the term is scaled by tau^2."""
    divergence: str = "forward_kl"
    """forward_kl | reverse_kl | js | skew_kl | tv."""
    skew: float = 0.1
    """Mixing weight of skew KL."""
    chunk_size: int | None = None
    """Positions per chunk; None computes the full [batch, length, vocab] at once."""


@dataclass
class SenseLossConfig:
    weight: float = 1.0
    """lambda: 1.0 (Llama), 1.5 (Mistral)."""
    kappa: int = 5
    """Nearest senses (to the teacher's hidden state) used as positives / negatives."""
    w_pos: float = 1.0
    """Weight of the pull toward synonyms' senses."""
    w_neg: float = 1.0
    """Weight of the hinge push away from antonyms' senses."""
    margin: float = 1.0
    """mu of the hinge max(0, mu - MSE)."""
    own_senses_in_negatives: bool = True
    """Add the target's own senses to the negative candidates (released code does)."""
    positives: bool = True
    """Use the synonym pull term."""
    negatives: bool = True
    """Use the antonym push term."""
    random_positions: bool = True
    """Add the P2 term (m random positions pulled toward their own nearest senses)."""


@dataclass
class LossConfig:
    ce_weight: float = 1.0
    """Weight of next-token cross-entropy."""
    kd: KDConfig = field(default_factory=KDConfig)
    sense: SenseLossConfig = field(default_factory=SenseLossConfig)
