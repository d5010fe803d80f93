"""Word keys: the sense-dictionary key of each word of a text, for senses across tokenizers.

The sense dictionary and the lexicon are keyed by the teacher's tokens: a word the lexicon lists is
keyed by its single teacher token id, or by its VID when the teacher spells it with several tokens
(docs/lexicon.md). :class:`WordKeys` maps a word to that same key, so a student with another tokenizer
reads the dictionary built from the teacher, unchanged.

How a word is cut from a text: on the teacher's byte-level tokenization (:mod:`dskd.data.alignment`),
a word starts at a token whose piece is the word-start marker (a space byte) followed by a letter,
and runs on over the following tokens whose pieces are letters only (no space, digit or punctuation);
``" dog."`` is the word ``dog`` then ``.``. The word's key is that of its token tuple: the token id
for one token, its VID for several (-1 when the lexicon has no VID for them). This is how the lexicon
normalises a word: it tokenizes ``" " + word`` (``dskd.lexicon.mapping.tokenize_words``), which the
teacher's pre-tokenizer cuts exactly as it cuts a space-led run of letters inside a text. A word at
the text's start (no space before it) is not a word here.

The *position before* a word on one side is the index of the token just before the word's first
token of that side (a position predicts the next token); a side has one only when one of its tokens
starts at the word's first byte and is not the first token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from transformers import PreTrainedTokenizerBase

from dskd.data.alignment import Encoded, piece_bytes

__all__ = ["WordKeys", "WordPositions", "word_positions", "words_of"]


def _is_letters(piece: bytes) -> bool:
    try:
        return piece.decode("utf-8").isalpha()
    except UnicodeDecodeError:
        return False


@dataclass(frozen=True)
class WordKeys:
    """The key of a word (see the module doc) for the teacher ``tokenizer`` and a lexicon's VIDs."""

    tokenizer: PreTrainedTokenizerBase
    vids: dict[tuple[int, ...], int]
    """Teacher token tuple -> its VID (``Lexicon.vid_tokens`` reversed)."""

    @classmethod
    def from_lexicon(cls, tokenizer: PreTrainedTokenizerBase, lexicon) -> WordKeys:
        return cls(tokenizer, {tokens: vid for vid, tokens in lexicon.vid_tokens.items()})

    def key_of_tokens(self, tokens: tuple[int, ...]) -> int:
        """The key of a word the teacher spells ``tokens``: its token id, its VID, or -1."""
        if len(tokens) == 1:
            return int(tokens[0])
        return self.vids.get(tuple(int(t) for t in tokens), -1)

    def key(self, word: str) -> int:
        """The key of ``word`` (tokenized as ``" " + word``, as the lexicon does)."""
        return self.key_of_tokens(tuple(self.tokenizer(" " + word, add_special_tokens=False)["input_ids"]))


def words_of(tokenizer: PreTrainedTokenizerBase, ids: np.ndarray) -> list[tuple[int, int]]:
    """``(first token, number of tokens)`` of each word of the teacher's ``ids`` (module doc)."""
    raw = piece_bytes(tokenizer)
    pieces = [raw[int(i)] or b"" for i in ids]
    out: list[tuple[int, int]] = []
    for i, piece in enumerate(pieces):
        if piece[:1] == b" " and _is_letters(piece[1:]):
            n = 1
            while i + n < len(pieces) and pieces[i + n] and _is_letters(pieces[i + n]):
                n += 1
            out.append((i, n))
    return out


@dataclass(frozen=True)
class WordPositions:
    """The words of one text that both sides can predict: ``[W]`` int64 arrays."""

    student: np.ndarray
    """The student's position before each word."""
    teacher: np.ndarray
    """The teacher's position before each word."""
    key: np.ndarray
    """The word's key (:class:`WordKeys`; -1: not in the lexicon's keys)."""


def word_positions(keys: WordKeys, teacher: Encoded, student: Encoded) -> WordPositions:
    """The words of the teacher's tokenization ``teacher`` with their positions on both sides."""
    starts = {int(s): j for j, s in enumerate(student.spans[:, 0]) if student.spans[j, 1] > s}
    rows = []
    for i, n in words_of(keys.tokenizer, teacher.ids):
        j = starts.get(int(teacher.spans[i, 0]))
        if i >= 1 and j is not None and j >= 1:
            rows.append((j - 1, i - 1, keys.key_of_tokens(tuple(teacher.ids[i : i + n].tolist()))))
    arr = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
    return WordPositions(arr[:, 0], arr[:, 1], arr[:, 2])
