"""The batch contract between the data module (``dskd.data``) and the losses (``dskd.losses``).

A training batch is a dict of tensors: always :class:`TokenBatch`; in cross-tokenizer KD
(``loss.kd.divergence`` uld or uld_hybrid) a :class:`CrossTokenizerBatch`; with ``method: dskd`` also the
sense-loss positions and candidates of :class:`SenseSample` drawn by ``dskd.data.sampling``, which
together make a :class:`SenseBatch`. ``B`` is the batch size, ``L`` the sequence length, ``M`` the
padded number of sense positions and ``S`` the padded number of neighbours per position; every
shape is static across batches of one run.
"""

from __future__ import annotations

from typing import TypedDict

import torch

__all__ = [
    "CROSS_TOKENIZER_KEYS",
    "CrossTokenizerBatch",
    "IGNORE_INDEX",
    "PROMPT_LEN",
    "SENSE_LOSS_KEYS",
    "SENSE_SAMPLE_KEYS",
    "SenseBatch",
    "SenseSample",
    "TokenBatch",
    "WORD_SENSE_KEYS",
    "WordSenseSample",
]

IGNORE_INDEX = -100
"""Label of a position without a next-token target (padding, the EOS closing a document); the
default ``ignore_index`` of ``torch.nn.functional.cross_entropy``."""

PROMPT_LEN = "prompt_len"
"""Optional ``[B]`` int64 key of a training batch when on-policy distillation is on
(``data.on_policy.fraction > 0``): the leading prompt tokens of each sequence (0: no prompt), the
prefix the student's own continuation follows (docs/training.md)."""


class TokenBatch(TypedDict):
    """What every training and validation batch holds."""

    input_ids: torch.Tensor
    """``[B, L]`` int64 token ids, right padded."""
    attention_mask: torch.Tensor
    """``[B, L]`` int64, 1 on tokens and 0 on padding."""
    labels: torch.Tensor
    """``[B, L]`` int64 next-token target of each position (already shifted), ``IGNORE_INDEX`` where none."""


class SenseSample(TypedDict):
    """The positions and neighbour candidates that the sense loss (``dskd.losses.sense``) reads."""

    sense_pos: torch.Tensor
    """``[B, M]`` int64 P1 positions (targets with lexicon neighbours)."""
    sense_pos_mask: torch.Tensor
    """``[B, M]`` bool, true on the drawn P1 slots."""
    syn_keys: torch.Tensor
    """``[B, M, S]`` int64 sense-dictionary keys of the synonyms sampled for each P1 target."""
    syn_mask: torch.Tensor
    """``[B, M, S]`` bool, true on the drawn synonym slots."""
    ant_keys: torch.Tensor
    """``[B, M, S]`` int64 sense-dictionary keys of the antonyms sampled for each P1 target."""
    ant_mask: torch.Tensor
    """``[B, M, S]`` bool, true on the drawn antonym slots."""
    rand_pos: torch.Tensor
    """``[B, M]`` int64 P2 positions (any position with a target)."""
    rand_pos_mask: torch.Tensor
    """``[B, M]`` bool, true on the drawn P2 slots."""


class SenseBatch(TokenBatch, SenseSample):
    """A training batch of ``method: dskd``: tokens, the sense sample, and a count for logging."""

    n_neighbour_positions: torch.Tensor
    """``[B]`` int64 positions per sequence whose target has lexicon neighbours (before sampling)."""


class CrossTokenizerBatch(TokenBatch):
    """A training batch of cross-tokenizer KD (``loss.kd.divergence`` ``uld`` or ``uld_hybrid``): the
    student's tokens, the teacher's own tokenization of the same text, and the aligned spans
    (``dskd.data.alignment``: ``align_text`` then ``target_spans`` per side). ``Lt`` is the teacher's
    sequence length. Span ids are per sequence (0, 1, ... in text order) and equal on both sides for
    the same text; they sit on the positions whose *target* (``labels``) lies in the span, the
    convention of ``dskd.losses.uld.SpanSide`` with ``loss.kd.uld_merge=last``.

    Produced by ``dskd.data.cross_stream.CrossTokenizerStream`` (one document per sequence), read by
    ``dskd.training.teacher_signals.CrossTokenizerTeacher``.
    """

    teacher_input_ids: torch.Tensor
    """``[B, Lt]`` int64 the teacher tokenizer's ids of the same text, right padded."""
    teacher_attention_mask: torch.Tensor
    """``[B, Lt]`` int64, 1 on tokens and 0 on padding."""
    teacher_labels: torch.Tensor
    """``[B, Lt]`` int64 next teacher token of each position, ``IGNORE_INDEX`` where none."""
    teacher_span: torch.Tensor
    """``[B, Lt]`` int64 span id of each teacher position's target, -1 where none."""
    student_span: torch.Tensor
    """``[B, L]`` int64 span id of each student position's target (``labels``), -1 where none."""


class WordSenseSample(TypedDict):
    """What a cross-tokenizer batch of ``method: dskd`` adds to a :class:`SenseSample` (word-keyed senses,
    ``dskd.data.words``): ``sense_pos`` and ``rand_pos`` are then the *student's* positions before a word
    (the words' keys placed there, ``dskd.data.sampling.sample_word_senses``), and these keys give the
    teacher's position before the same word and the word's key, which ``labels`` no longer is."""

    teacher_sense_pos: torch.Tensor
    """``[B, M]`` int64 the teacher's position before the word of each P1 slot (``sense_pos``)."""
    teacher_rand_pos: torch.Tensor
    """``[B, M]`` int64 the teacher's position before the word of each P2 slot (``rand_pos``)."""
    sense_targets: torch.Tensor
    """``[B, M]`` int64 the sense-dictionary key of each P1 slot's word (its teacher token id or VID)."""
    rand_targets: torch.Tensor
    """``[B, M]`` int64 the key of each P2 slot's word, ``IGNORE_INDEX`` for a word without a key."""


CROSS_TOKENIZER_KEYS = tuple(
    k for k in CrossTokenizerBatch.__annotations__ if k not in TokenBatch.__annotations__
)
"""Keys a cross-tokenizer batch adds to a :class:`TokenBatch`."""

SENSE_SAMPLE_KEYS = (*SenseSample.__annotations__, "n_neighbour_positions")
"""Keys that ``dskd.data.sampling.sample_sense_batch`` adds to a :class:`TokenBatch`."""

WORD_SENSE_KEYS = tuple(WordSenseSample.__annotations__)
"""Keys that word-keyed sampling adds beside ``SENSE_SAMPLE_KEYS``; with them ``sense_loss`` reads
the teacher's states at the teacher's positions and the keys from them, not from ``labels``."""

SENSE_LOSS_KEYS = ("labels", *SenseSample.__annotations__)
"""Keys of a batch that ``dskd.losses.sense.sense_loss`` reads."""
