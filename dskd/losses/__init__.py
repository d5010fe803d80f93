"""Losses of distillation, usable without Lightning.

- :mod:`dskd.losses.kd`: KD divergences, the masked KD loss and the chunked fused CE + KD computed
  from hidden states (:func:`ce_and_kd_chunked`).
- :mod:`dskd.losses.sense`: the sense-consistency loss (:func:`sense_loss`).
"""

from dskd.losses.kd import (
    CEKD,
    DIVERGENCES,
    ce_and_kd_chunked,
    divergence_per_position,
    kd_loss,
    position_mask,
)
from dskd.losses.sense import sense_loss

__all__ = [
    "CEKD",
    "DIVERGENCES",
    "ce_and_kd_chunked",
    "divergence_per_position",
    "kd_loss",
    "position_mask",
    "sense_loss",
]
