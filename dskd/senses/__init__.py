"""Sense dictionary: teacher hidden states per next-token key, clustered with batched k-means."""

from dskd.senses.dictionary import SenseDictionary

__all__ = ["SenseDictionary"]
