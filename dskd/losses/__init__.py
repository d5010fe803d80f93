"""Losses of distillation, usable without Lightning.

- :mod:`dskd.losses.kd`: KD divergences, the masked KD loss and the chunked fused CE + KD computed
  from hidden states (:func:`ce_and_kd_chunked`).
- :mod:`dskd.losses.sense`: the sense-consistency loss (:func:`sense_loss`).
- :mod:`dskd.losses.uld`: cross-tokenizer KD over aligned text spans, ULD and its hybrid (GOLD's).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dskd.losses.kd import (
        CEKD,
        DIVERGENCES,
        HeadInput,
        ce_and_kd_chunked,
        divergence_per_position,
        kd_loss,
        position_mask,
    )
    from dskd.losses.sense import sense_loss

__all__ = [
    "CEKD",
    "DIVERGENCES",
    "HeadInput",
    "ce_and_kd_chunked",
    "divergence_per_position",
    "kd_loss",
    "position_mask",
    "sense_loss",
]


def __getattr__(name: str):
    # lazy, so that importing the config schema (dskd.losses.config) does not import torch
    if name in __all__:
        module = "sense" if name == "sense_loss" else "kd"
        return getattr(importlib.import_module(f"dskd.losses.{module}"), name)
    raise AttributeError(name)
