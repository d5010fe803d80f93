"""Synonym/antonym lexicon mapped onto a tokenizer (docs/method.md §1): build it with `dskd lexicon build`,
read it with :meth:`Lexicon.load`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dskd.lexicon.artifact import Lexicon

__all__ = ["Lexicon"]


def __getattr__(name: str):
    # lazy, so that importing the config schema does not import numpy
    if name == "Lexicon":
        from dskd.lexicon.artifact import Lexicon

        return Lexicon
    raise AttributeError(name)
