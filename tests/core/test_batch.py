"""The batch contract: what the streaming data module emits is exactly what dskd.core.batch declares."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dskd.core.batch import IGNORE_INDEX, SENSE_LOSS_KEYS, SENSE_SAMPLE_KEYS, SenseBatch, TokenBatch
from dskd.core.errors import DSKDError
from dskd.corpora.config import SourceConfig
from dskd.data.sampling import NeighbourTable
from dskd.data.stream import META_KEYS, PackedStream, StreamSpec
from dskd.losses.config import SenseLossConfig
from dskd.losses.sense import sense_loss
from dskd.testing.fixtures import word_tokenizer

VOCAB = 40


def _first_batch(tmp_path, table: NeighbourTable | None) -> dict[str, torch.Tensor]:
    docs = [" ".join(f"t{3 + (7 * i + j) % (VOCAB - 3)}" for j in range(4 + i % 9)) for i in range(20)]
    (tmp_path / "c.txt").write_text("\n\n".join(docs) + "\n")
    spec = StreamSpec(
        [SourceConfig(kind="text", path=str(tmp_path / "c.txt"))],
        16,
        2,
        table=table,
        width=6,
        max_positions=6,
    )
    batch = next(iter(PackedStream(spec, word_tokenizer(VOCAB))))
    return {k: v for k, v in batch.items() if k not in META_KEYS}


def _table() -> NeighbourTable:
    """Token t has the synonym t + 1 and the antonym t + 2."""
    indptr, indices = np.arange(VOCAB + 1), np.arange(VOCAB)
    return NeighbourTable(indptr, indices + 1, indptr.copy(), indices + 2)


def _dtype(key: str) -> torch.dtype:
    return torch.bool if key.endswith("_mask") and key != "attention_mask" else torch.int64


def test_the_stream_emits_token_batches_without_a_lexicon(tmp_path):
    batch = _first_batch(tmp_path, None)
    assert list(batch) == list(TokenBatch.__annotations__)
    assert all(batch[k].dtype == _dtype(k) for k in batch)
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()


def test_the_stream_emits_sense_batches_with_a_lexicon(tmp_path):
    batch = _first_batch(tmp_path, _table())
    assert sorted(batch) == sorted(SenseBatch.__annotations__)
    assert set(SENSE_SAMPLE_KEYS) == set(SenseBatch.__annotations__) - set(TokenBatch.__annotations__)
    assert all(batch[k].dtype == _dtype(k) for k in batch), {k: v.dtype for k, v in batch.items()}
    assert batch["sense_pos_mask"].any()  # every target has neighbours here


def test_the_sense_loss_names_a_missing_key(tmp_path):
    batch = _first_batch(tmp_path, _table())
    assert set(SENSE_LOSS_KEYS) <= set(batch)
    del batch["ant_mask"]
    h = torch.zeros(2, 16, 4)
    with pytest.raises(DSKDError, match="ant_mask"):
        sense_loss(
            h,
            h,
            batch,
            lambda keys: (torch.zeros(*keys.shape, 1, 4), torch.zeros(*keys.shape, 1)),
            SenseLossConfig(),
        )
