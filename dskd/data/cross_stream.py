"""The training stream of cross-tokenizer KD: one document per sequence, tokenized by both tokenizers.

:class:`CrossTokenizerStream` is :class:`dskd.data.stream.PackedStream` (the same sharding, seeded
shuffle, length bucketing, batch numbering and resume by skipped batches) with other units and batches:
each document becomes one sequence, its student tokenization truncated to ``seq_len`` (no packing, no
split into several sequences, no EOS: a sequence is the text's own tokens, GOLD's convention), and a
batch is :func:`dskd.data.alignment.cross_tokenizer_batch` of its documents' texts, a
:class:`dskd.core.batch.CrossTokenizerBatch`: the student's ids and labels, the teacher's own
tokenization of the same text (also truncated to ``seq_len`` tokens) and the aligned span ids. Sequences
are bucketed and counted by their student length. A document with no student token is skipped.
With ``method: dskd`` (``spec.table`` set) a batch also holds word-keyed sense positions
(:func:`dskd.data.sampling.sample_word_senses` of :func:`dskd.data.words.word_positions`, drawn as
:class:`~dskd.data.stream.PackedStream` draws, from the sequence's generator).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dskd.core.batch import IGNORE_INDEX
from dskd.core.errors import ConfigError
from dskd.corpora.sources import Document
from dskd.data.alignment import align_text, batch_of_rows
from dskd.data.sampling import SenseDraw, sample_word_senses
from dskd.data.stream import TOKENIZE_CHUNK, PackedStream, StreamSpec, _Unit
from dskd.data.words import word_positions

PAD_FILL = {
    "attention_mask": 0,
    "labels": IGNORE_INDEX,
    "teacher_attention_mask": 0,
    "teacher_labels": IGNORE_INDEX,
}
"""Fill of each key when a batch is padded to ``seq_len`` (span ids: -1; ids: the side's padding)."""


@dataclass
class _TextUnit(_Unit):
    text: str = ""
    """The document's text, which the batch tokenizes with both tokenizers."""


class CrossTokenizerStream(PackedStream):
    """The cross-tokenizer sequence stream of one rank (see the module doc); ``tokenizer`` is the
    teacher's, ``student_tokenizer`` the student's."""

    def __init__(self, spec: StreamSpec, tokenizer, student_tokenizer, rank: int = 0, world_size: int = 1):
        if spec.pack or spec.aligned or spec.teacher_continuations is not None:
            raise ConfigError(
                "The cross-tokenizer stream reads one observed document per sequence: data.pack=false, "
                "data.targets=observed, data.sense_aligned_neighbours=false."
            )
        super().__init__(spec, tokenizer, rank, world_size)
        self.student_tokenizer = student_tokenizer

    def units(self, docs: Iterator[Document]) -> Iterator[_Unit]:
        backend = self.student_tokenizer.backend_tokenizer
        while chunk := [d for _, d in zip(range(TOKENIZE_CHUNK), docs)]:
            self.tokenized += len(chunk)
            texts = [d.text for d in chunk]
            for text, enc in zip(texts, backend.encode_batch(texts, add_special_tokens=False)):
                ids = enc.ids[: self.spec.seq_len]
                if ids:
                    yield _TextUnit(ids, [*ids[1:], IGNORE_INDEX], text=text)

    def sequences(self, units: Iterator[_Unit]) -> Iterator[_Unit]:
        """One sequence per document (already truncated to ``seq_len``)."""
        return units

    def collate(self, seqs: list[_Unit], shard: int, index: list[int]) -> dict[str, torch.Tensor]:
        spec = self.spec
        rows = [align_text(s.text, self.tokenizer, self.student_tokenizer, spec.seq_len) for s in seqs]
        batch = dict(batch_of_rows(rows, self.tokenizer, self.student_tokenizer))
        if self.spec.pad_to == "seq_len":
            pads = {"input_ids": self.student_pad, "teacher_input_ids": self.pad}
            batch = {
                k: F.pad(v, (0, self.spec.seq_len - v.shape[1]), value=pads.get(k, PAD_FILL.get(k, -1)))
                for k, v in batch.items()
            }
        if spec.table is not None:
            if spec.word_keys is None:
                raise ConfigError("Word-keyed senses need the teacher's word keys (StreamSpec.word_keys).")
            words = [word_positions(spec.word_keys, t, s) for t, s, _ in rows]
            draw = SenseDraw(spec.width, spec.max_positions, spec.fraction, spec.max_neighbours)
            rngs = [np.random.default_rng([spec.seed, self.epoch, shard, k]) for k in index]
            sample = sample_word_senses(words, batch["input_ids"].shape[1], spec.table, rngs, draw)
            batch |= {k: torch.from_numpy(np.asarray(v)) for k, v in sample.items()}
        return batch

    @property
    def student_pad(self) -> int:
        tok = self.student_tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
