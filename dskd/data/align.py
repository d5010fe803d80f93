"""Token -> word -> lemma -> synsets alignment.

A *word* is a run of letters with inner hyphens or apostrophes (``well-known``, ``don't``). A token
belongs to the word under its first non-space character (byte-level BPE offsets include the leading
space of ``" banks"``). The lemma is WordNet's morphological base form with the most synsets over all
parts of speech (``banks`` -> ``bank``, not the rare noun ``banks``); the candidate synsets are all
synsets of the surface form. Where a document says which synset an occurrence means (WordNet example
sentences: ``meta["synset"]`` and the char ``meta["span"]`` of the target lemma), the tokens of the
words overlapping that span carry it as their gold synset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from dskd.assets import base_forms

WORD_RE = re.compile(r"[A-Za-z]+(?:['\u2019-][A-Za-z]+)*")
POS = ("n", "v", "a", "r")


@dataclass(frozen=True)
class Word:
    text: str
    start: int
    end: int
    lemma: str | None
    """WordNet base form (None: not in WordNet)."""
    synsets: tuple[str, ...]
    """Candidate synset names of the surface form."""
    gold: str | None = None
    """Synset the data says this occurrence means."""


@dataclass(frozen=True)
class Alignment:
    words: tuple[Word, ...]
    token_word: np.ndarray
    """[T] index into ``words`` per token, -1 for tokens outside words (punctuation, specials)."""

    def word_of(self, token: int) -> Word | None:
        i = int(self.token_word[token])
        return self.words[i] if i >= 0 else None


def token_starts(text: str, offsets: np.ndarray) -> np.ndarray:
    """[T] char index of each token's first non-space character (-1 for empty spans)."""
    starts = np.full(len(offsets), -1, dtype=np.int64)
    for i, (s, e) in enumerate(offsets.tolist()):
        seg = text[s:e]
        stripped = len(seg) - len(seg.lstrip())
        if stripped < len(seg):
            starts[i] = s + stripped
    return starts


def span_tokens(text: str, offsets: np.ndarray, span: tuple[int, int]) -> np.ndarray:
    """[T] bool: tokens whose non-space characters overlap the char span [start, end)."""
    starts = token_starts(text, offsets)
    ends = offsets[:, 1] if len(offsets) else np.zeros(0, dtype=np.int64)
    return (starts >= 0) & (starts < span[1]) & (ends > span[0])


class Aligner:
    """Aligns tokenized text to WordNet; word lookups are cached (``lookup`` is an lru_cache)."""

    def __init__(self, wordnet, cache_size: int = 1 << 16):
        self.wn = wordnet
        self.lookup = lru_cache(maxsize=cache_size)(self._lookup)

    def _exact_senses(self, base: str) -> int:
        """Senses of ``base`` as a lemma itself (wn.synsets would also count its own base forms)."""
        return sum(lemma.name().lower() == base for lemma in self.wn.lemmas(base))

    def _lookup(self, word: str) -> tuple[str | None, tuple[str, ...]]:
        form = word.lower()
        bases = {b for pos in POS for b in base_forms(self.wn, form, pos)}
        lemma = max(sorted(bases), key=self._exact_senses, default=None)
        return lemma, tuple(s.name() for s in self.wn.synsets(form))

    def align(
        self, text: str, offsets, gold: str | None = None, span: tuple[int, int] | None = None
    ) -> Alignment:
        """Alignment of ``text`` whose tokens have char ``offsets`` [T,2] (fast tokenizer offsets)."""
        offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
        char_word = np.full(len(text) + 1, -1, dtype=np.int64)
        words = []
        for i, m in enumerate(WORD_RE.finditer(text)):
            lemma, synsets = self.lookup(m.group())
            overlaps = span is not None and m.start() < span[1] and m.end() > span[0]
            words.append(Word(m.group(), m.start(), m.end(), lemma, synsets, gold if overlaps else None))
            char_word[m.start() : m.end()] = i
        starts = token_starts(text, offsets)
        return Alignment(tuple(words), np.where(starts >= 0, char_word[starts], -1))
