"""Cross-tokenizer alignment: which teacher tokens and which student tokens cover the same text.

(Not to be confused with :mod:`dskd.data.align`, which maps one tokenizer's tokens to words and synsets.)

Both tokenizations of one text are placed on the text's UTF-8 bytes. A *cut* of a tokenization is a
byte position where one of its tokens ends; the cuts both tokenizations share (GOLD's "points where the
two tokenizers agree on a split") divide the common text into *spans*, numbered 0, 1, ... from the
start. Span k is the bytes between shared cut k-1 (0 for k = 0) and shared cut k; each of its bytes is
covered by a token of either side lying wholly inside it, so each span holds at least one token of
each side and the spans partition the text both sides cover up to their last shared cut. A token gets
the id of its span; a token gets -1 (unaligned) when it covers no bytes (specials such as BOS) or lies
past the last shared cut (text that only one side kept after truncation at ``seq_len``, or a tail the
other side splits differently).

Byte spans come from the byte-level pieces, not the fast tokenizer's character offsets mapping:
a byte-level BPE may split one multi-byte character (an emoji, a CJK ideograph) over two tokens,
which the character offsets can only give as overlapping spans (SmolLM2 gives ``(10, 12), (11, 12)``
for ``" 😀"``), while the pieces give each token its exact bytes. The pieces must concatenate to the
text's UTF-8 bytes (a prefix of them after truncation); a tokenizer whose pieces do not (a normalizer,
a prefix space, a non-byte-level model) is refused with :class:`AlignmentError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from dskd.core.batch import IGNORE_INDEX, CrossTokenizerBatch
from dskd.core.errors import DSKDError

__all__ = [
    "AlignmentError",
    "Encoded",
    "SpanAlignment",
    "align",
    "align_text",
    "batch_of_rows",
    "byte_spans",
    "cross_tokenizer_batch",
    "encode",
    "target_spans",
]


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the byte each printable stand-in character means."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


_BYTE_OF_CHAR = _byte_level_alphabet()


class AlignmentError(DSKDError):
    """A tokenization cannot be placed on the text's bytes."""


@dataclass(frozen=True)
class Encoded:
    """One tokenization of a text: token ids and each token's ``[start, end)`` UTF-8 byte span."""

    ids: np.ndarray
    """``[T]`` int64 token ids."""
    spans: np.ndarray
    """``[T, 2]`` int64 byte offsets into the text's UTF-8 encoding; ``start == end`` for specials."""


@dataclass(frozen=True)
class SpanAlignment:
    """The aligned spans of two tokenizations of one text (see the module doc)."""

    teacher: np.ndarray
    """``[T_teacher]`` int64 span id of each teacher token, -1 where unaligned."""
    student: np.ndarray
    """``[T_student]`` int64 span id of each student token, -1 where unaligned."""
    cuts: np.ndarray
    """``[n_spans]`` int64 byte position where each span ends (span k is ``[cuts[k-1], cuts[k])``)."""

    @property
    def n_spans(self) -> int:
        return len(self.cuts)

    def groups(self) -> list[tuple[list[int], list[int]]]:
        """(teacher token indices, student token indices) of each span, in text order."""
        return [
            (np.flatnonzero(self.teacher == k).tolist(), np.flatnonzero(self.student == k).tolist())
            for k in range(self.n_spans)
        ]


@dataclass(frozen=True)
class _Pieces:
    """The bytes each id of a vocabulary spells (specials: none); None where not a byte-level piece."""

    raw: list[bytes | None]
    lengths: np.ndarray
    """``[V]`` int64 byte length of each id (0 for specials and non-byte-level entries)."""


@lru_cache(maxsize=8)
def _pieces(tokenizer: PreTrainedTokenizerBase, size: int) -> _Pieces:
    """The table of ``tokenizer`` at ``size`` entries (a token added later makes a new table)."""
    special = set(tokenizer.all_special_ids)
    raw: list[bytes | None] = []
    for tid, piece in enumerate(tokenizer.convert_ids_to_tokens(list(range(size)))):
        if tid in special:
            raw.append(b"")
        elif piece is not None and all(ch in _BYTE_OF_CHAR for ch in piece):
            raw.append(bytes(_BYTE_OF_CHAR[ch] for ch in piece))
        else:
            raw.append(None)
    return _Pieces(raw, np.array([len(r or b"") for r in raw], dtype=np.int64))


def piece_bytes(tokenizer: PreTrainedTokenizerBase) -> list[bytes | None]:
    """The bytes each id of ``tokenizer`` spells (specials: ``b""``; None: not a byte-level piece),
    decoded once per tokenizer and size."""
    return _pieces(tokenizer, len(tokenizer)).raw


def byte_spans(tokenizer: PreTrainedTokenizerBase, ids: list[int], text: str) -> np.ndarray:
    """``[T, 2]`` byte span of each of ``ids`` (a tokenization of ``text``, possibly truncated) from
    its byte-level piece; specials are zero-width. Raises :class:`AlignmentError` when the pieces are
    not the leading bytes of ``text``. The vocabulary's pieces are decoded once per tokenizer."""
    table = _pieces(tokenizer, len(tokenizer))
    raw = [table.raw[i] for i in ids]
    if None in raw:
        piece = tokenizer.convert_ids_to_tokens(ids[raw.index(None)])
        raise AlignmentError(f"token {piece!r} of {type(tokenizer).__name__} is not a byte-level BPE piece.")
    lengths = table.lengths[np.asarray(ids, dtype=np.int64)]
    ends = np.cumsum(lengths)
    spelled, data = b"".join(raw), text.encode("utf-8")
    if data[: len(spelled)] != spelled:
        first = next((i for i, (x, y) in enumerate(zip(spelled, data)) if x != y), len(data))
        token = int(np.searchsorted(ends, first, side="right"))
        raise AlignmentError(
            f"the pieces of {type(tokenizer).__name__} do not spell the text at byte "
            f"{ends[token] - lengths[token]} (token {tokenizer.convert_ids_to_tokens(ids[token])!r}); "
            "cross-tokenizer alignment needs a lossless byte-level BPE."
        )
    return np.stack([ends - lengths, ends], axis=1)


def encode(tokenizer: PreTrainedTokenizerBase, text: str, max_tokens: int | None = None) -> Encoded:
    """``text`` tokenized without specials (truncated to ``max_tokens``), with byte spans."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
    return Encoded(np.asarray(ids, dtype=np.int64), byte_spans(tokenizer, ids, text))


def _span_ids(spans: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Span id per token: the first shared cut at or after its end; -1 past the last one or if empty."""
    ends = spans[:, 1]
    ids = np.searchsorted(cuts, ends, side="left").astype(np.int64)
    ids[(ids >= len(cuts)) | (spans[:, 0] == ends)] = -1
    return ids


def align(teacher_spans: np.ndarray, student_spans: np.ndarray) -> SpanAlignment:
    """The aligned spans of two tokenizations of one text given as ``[T, 2]`` byte spans."""
    t_cuts = teacher_spans[teacher_spans[:, 1] > teacher_spans[:, 0], 1]
    s_cuts = student_spans[student_spans[:, 1] > student_spans[:, 0], 1]
    cuts = np.intersect1d(t_cuts, s_cuts).astype(np.int64)
    return SpanAlignment(_span_ids(teacher_spans, cuts), _span_ids(student_spans, cuts), cuts)


def align_text(
    text: str,
    teacher: PreTrainedTokenizerBase,
    student: PreTrainedTokenizerBase,
    max_tokens: int | None = None,
) -> tuple[Encoded, Encoded, SpanAlignment]:
    """Tokenize ``text`` with both tokenizers (each truncated to ``max_tokens``) and align them."""
    t, s = encode(teacher, text, max_tokens), encode(student, text, max_tokens)
    return t, s, align(t.spans, s.spans)


def target_spans(token_span: np.ndarray) -> np.ndarray:
    """Span ids moved from tokens to the positions that predict them (``labels[p]`` is token ``p + 1``).

    ``[T] -> [T]``: position p gets the span of token p + 1, the last position -1. The span of token 0
    is dropped (-1): no position predicts its first token, so its distribution cannot be merged. The
    other side drops the same span (token 0 of both tokenizations starts at byte 0), and the loss
    skips a span that only one side has (:func:`dskd.losses.uld.span_losses`).
    """
    out = np.full_like(token_span, -1)
    out[:-1] = token_span[1:]
    if len(token_span) and token_span[0] >= 0:
        out[out == token_span[0]] = -1
    return out


def _padded(rows: list[np.ndarray], fill: int) -> torch.Tensor:
    out = torch.full((len(rows), max(1, *map(len, rows))), fill, dtype=torch.long)
    for b, row in enumerate(rows):
        out[b, : len(row)] = torch.from_numpy(np.asarray(row, dtype=np.int64))
    return out


def _side(rows: list[Encoded], spans: list[np.ndarray], pad: int) -> tuple[torch.Tensor, ...]:
    """ids, attention mask, next-token labels and target span ids of one side, right padded."""
    return (
        _padded([e.ids for e in rows], pad),
        _padded([np.ones(len(e.ids)) for e in rows], 0),
        _padded([np.append(e.ids[1:], IGNORE_INDEX) for e in rows], IGNORE_INDEX),
        _padded([target_spans(s) for s in spans], -1),
    )


def cross_tokenizer_batch(
    texts: list[str],
    teacher: PreTrainedTokenizerBase,
    student: PreTrainedTokenizerBase,
    seq_len: int | None = None,
) -> CrossTokenizerBatch:
    """One document per sequence (no specials, each side truncated to ``seq_len`` tokens), both
    tokenizations and their aligned target spans, as :class:`dskd.core.batch.CrossTokenizerBatch`."""
    return batch_of_rows([align_text(text, teacher, student, seq_len) for text in texts], teacher, student)


def batch_of_rows(
    rows: list[tuple[Encoded, Encoded, SpanAlignment]],
    teacher: PreTrainedTokenizerBase,
    student: PreTrainedTokenizerBase,
) -> CrossTokenizerBatch:
    """:func:`cross_tokenizer_batch` of texts already aligned (``align_text`` of each)."""
    s_ids, s_mask, s_labels, s_span = _side(
        [s for _, s, _ in rows], [a.student for *_, a in rows], _pad(student)
    )
    t_ids, t_mask, t_labels, t_span = _side(
        [t for t, _, _ in rows], [a.teacher for *_, a in rows], _pad(teacher)
    )
    return CrossTokenizerBatch(
        input_ids=s_ids,
        attention_mask=s_mask,
        labels=s_labels,
        teacher_input_ids=t_ids,
        teacher_attention_mask=t_mask,
        teacher_labels=t_labels,
        teacher_span=t_span,
        student_span=s_span,
    )


def _pad(tokenizer: PreTrainedTokenizerBase) -> int:
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return tid
    return 0
