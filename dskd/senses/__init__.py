"""Sense dictionary: teacher hidden states per next-token key, clustered with batched k-means."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dskd.senses.dictionary import SenseDictionary

__all__ = ["SenseDictionary"]


def __getattr__(name: str):
    if name == "SenseDictionary":
        # deferred: importing the config schema (dskd.senses.config) must not import torch
        from dskd.senses.dictionary import SenseDictionary

        return SenseDictionary
    raise AttributeError(name)
