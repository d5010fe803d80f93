"""The cross-tokenizer stream: SmolLM2 and the WordNet BPE tokenize each document, the batches follow the
CrossTokenizerBatch contract, the stream is seeded, and a resumed data module sees exactly the rest."""

from __future__ import annotations

import pytest
import torch

from dskd.core.batch import CROSS_TOKENIZER_KEYS, IGNORE_INDEX, TokenBatch
from dskd.data.alignment import cross_tokenizer_batch
from dskd.data.datamodule import CrossTokenizerDataModule

from .test_datamodule import config, equal, sections, take


def _module(cfg, tokenizer, wordnet_bpe):
    dm = CrossTokenizerDataModule(*sections(cfg), tokenizer, wordnet_bpe)
    dm.setup("fit")
    return dm


def _config(tmp_path, **data):
    return config(tmp_path, n_docs=60, pack=False, shuffle_buffer=16, **data)


def test_batches_are_cross_tokenizer_batches_of_one_document_each(tmp_path, tokenizer, wordnet_bpe):
    dm = _module(_config(tmp_path, num_workers=0, seq_len=12), tokenizer, wordnet_bpe)
    batches = take(dm, dm.train_dataloader())
    assert batches and set(batches[0]) == {*TokenBatch.__annotations__, *CROSS_TOKENIZER_KEYS}
    for b in batches:
        assert b["input_ids"].shape[1] <= 12 and b["teacher_input_ids"].shape[1] <= 12
        for row in range(len(b["input_ids"])):
            s_spans = set(b["student_span"][row].tolist()) - {-1}
            assert s_spans and s_spans == set(b["teacher_span"][row].tolist()) - {-1}
            n = int(b["attention_mask"][row].sum())  # the labels are the next student token
            assert torch.equal(b["labels"][row, : n - 1], b["input_ids"][row, 1:n])
            assert b["labels"][row, n - 1] == IGNORE_INDEX
    # a whole document (shorter than a sequence) comes back as the alignment of its text
    dm = _module(_config(tmp_path, num_workers=0, seq_len=64), tokenizer, wordnet_bpe)
    b = next(iter(dm.train_dataloader()))
    texts = [wordnet_bpe.decode(row[m.bool()]) for row, m in zip(b["input_ids"], b["attention_mask"])]
    assert all(t.startswith("Paragraph ") and t.endswith("and calm.") for t in texts)
    again = cross_tokenizer_batch(texts, tokenizer, wordnet_bpe, 64)
    assert all(torch.equal(again[k], b[k]) for k in again)


@pytest.mark.parametrize("pad_to", ["seq_len"])
def test_pad_to_seq_len_pads_both_sides(tmp_path, tokenizer, wordnet_bpe, pad_to):
    dm = _module(_config(tmp_path, num_workers=0, pad_to=pad_to), tokenizer, wordnet_bpe)
    b = next(iter(dm.train_dataloader()))
    assert {v.shape[1] for k, v in b.items() if v.dim() == 2} == {32}
    pad = ~b["attention_mask"].bool()
    assert (b["labels"][pad] == IGNORE_INDEX).all() and (b["student_span"][pad] == -1).all()
    assert (b["input_ids"][pad] == wordnet_bpe.pad_token_id).all()
    t_pad = ~b["teacher_attention_mask"].bool()
    assert (b["teacher_labels"][t_pad] == IGNORE_INDEX).all() and (b["teacher_span"][t_pad] == -1).all()


def _epoch(cfg, tokenizer, wordnet_bpe):
    dm = _module(cfg, tokenizer, wordnet_bpe)
    return take(dm, dm.train_dataloader())


def test_the_stream_is_seeded(tmp_path, tokenizer, wordnet_bpe):
    cfg = _config(tmp_path)
    a, b = _epoch(cfg, tokenizer, wordnet_bpe), _epoch(cfg, tokenizer, wordnet_bpe)
    assert equal(a, b)
    cfg.seed = 1
    assert not equal(a, _epoch(cfg, tokenizer, wordnet_bpe))


def test_resume_with_workers_sees_exactly_the_same_batches(tmp_path, tokenizer, wordnet_bpe):
    cfg = _config(tmp_path)  # two workers
    ref = _module(cfg, tokenizer, wordnet_bpe)
    full = take(ref, ref.train_dataloader())
    first = _module(cfg, tokenizer, wordnet_bpe)
    it = iter(first.train_dataloader())
    head = [first.on_before_batch_transfer(next(it), 0) for _ in range(5)]  # odd: the second worker next
    next(it)  # prefetched by the loop but never trained on
    second = _module(cfg, tokenizer, wordnet_bpe)
    second.load_state_dict(first.state_dict())
    rest = take(second, second.train_dataloader())
    assert len(full) > 6 and equal(head + rest, full)
