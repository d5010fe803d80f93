"""Synonym/antonym lexicon mapped onto a tokenizer (docs/method.md §1): build it with `dskd lexicon build`,
read it with :meth:`Lexicon.load`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dskd.lexicon.artifact import Lexicon

__all__ = ["Lexicon"]


def __getattr__(name: str):
    if name == "Lexicon":
        # deferred: importing the config schema (dskd.lexicon.config) must not import numpy or torch
        from dskd.lexicon.artifact import Lexicon

        return Lexicon
    raise AttributeError(name)
