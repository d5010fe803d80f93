"""Word-keyed senses with a shared tokenizer (student = teacher = the real SmolLM2 tokenizer): on a text
of single-token words the word-keyed draws and sense loss equal the token-keyed ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dskd.core.batch import WORD_SENSE_KEYS
from dskd.data.alignment import encode
from dskd.data.sampling import NeighbourTable, SenseDraw, sample_sense_batch, sample_word_senses
from dskd.data.words import WordKeys, word_positions
from dskd.losses.config import SenseLossConfig
from dskd.losses.sense import sense_loss
from tests.losses.test_sense import TableLookup

TEXTS = [
    "The good man was happy and the bad woman was sad and the small dog was glad",
    "A big house and a little house stood near the good old tree",
]
SYN = {"good": ["fine", "nice"], "happy": ["glad"], "big": ["large"], "small": ["little"]}
ANT = {"good": ["bad"], "happy": ["sad"], "big": ["small", "little"], "small": ["big"]}


def table_of(tok) -> NeighbourTable:
    """A lexicon's CSR neighbours over SmolLM2's ids of the words above."""

    def one(word: str) -> int:
        ids = tok(" " + word, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, word
        return ids[0]

    def csr(rel: dict[str, list[str]]) -> tuple[np.ndarray, np.ndarray]:
        rows = {one(h): sorted(one(w) for w in ws) for h, ws in rel.items()}
        lens = np.array([len(rows.get(t, [])) for t in range(len(tok))])
        indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        return indptr, np.array([k for t in sorted(rows) for k in rows[t]], dtype=np.int64)

    return NeighbourTable(*csr(SYN), *csr(ANT))


@pytest.mark.parametrize("hinge", ["absolute", "teacher"])
def test_word_keys_equal_token_keys_on_single_token_words(smollm2_tokenizer, hinge):
    tok = smollm2_tokenizer
    table, keys = table_of(tok), WordKeys(tok, {})
    rows = [encode(tok, text) for text in TEXTS]
    L = max(len(r.ids) for r in rows)
    labels = np.full((len(rows), L), -100, dtype=np.int64)
    for b, r in enumerate(rows):
        labels[b, : len(r.ids) - 1] = r.ids[1:]
    draw = SenseDraw(width=8, max_positions=4, max_neighbours=2)
    rngs = lambda: [np.random.default_rng([7, b]) for b in range(len(rows))]  # noqa: E731
    token = sample_sense_batch(labels, table, rngs(), draw)
    words = [word_positions(keys, r, r) for r in rows]  # the student's tokens are the teacher's
    word = sample_word_senses(words, L, table, rngs(), draw)
    for k, v in token.items():
        np.testing.assert_array_equal(word[k], v, err_msg=k)
    assert token["sense_pos_mask"].sum() == 5 and token["syn_mask"].any() and token["ant_mask"].any()
    np.testing.assert_array_equal(word["teacher_sense_pos"], token["sense_pos"])
    np.testing.assert_array_equal(word["sense_targets"], np.take_along_axis(labels, token["sense_pos"], 1))

    g = torch.Generator().manual_seed(0)
    d = 16
    senses = {int(t): torch.randn(3, d, generator=g) for t in np.unique(labels[labels >= 0])}
    lookup = TableLookup(senses, 3, d, len(tok))
    hs, ht = torch.randn(len(rows), L, d, generator=g), torch.randn(len(rows), L, d, generator=g)
    cfg = SenseLossConfig(kappa=2, hinge=hinge, margin=1.5)
    as_tensors = lambda arrays: {k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()}  # noqa: E731
    base = {"labels": torch.from_numpy(labels)}
    by_token = sense_loss(hs, ht, base | as_tensors(token), lookup, cfg)
    by_word = sense_loss(hs, ht, base | as_tensors(word), lookup, cfg)
    assert set(WORD_SENSE_KEYS) <= set(word)
    assert by_token["total"] > 0 and by_token["neg"] > 0
    for k in ("total", "pos", "neg", "rand", "n_pos_candidates", "n_neg_candidates"):
        assert torch.equal(by_word[k], by_token[k]), k
    for k, v in by_token["diagnostics"].items():
        assert torch.equal(by_word["diagnostics"][k], v), k


def test_word_keyed_loss_reads_the_teacher_at_its_own_positions():
    """A teacher longer than the student: the teacher's states are read at ``teacher_*_pos``."""
    d, lookup = 4, TableLookup({5: torch.ones(1, 4)}, 1, 4, 8)
    batch = {
        "labels": torch.full((1, 3), -100),
        "sense_pos": torch.tensor([[1]]),
        "sense_pos_mask": torch.tensor([[False]]),
        "syn_keys": torch.zeros(1, 1, 1, dtype=torch.long),
        "syn_mask": torch.zeros(1, 1, 1, dtype=torch.bool),
        "ant_keys": torch.zeros(1, 1, 1, dtype=torch.long),
        "ant_mask": torch.zeros(1, 1, 1, dtype=torch.bool),
        "rand_pos": torch.tensor([[1]]),
        "rand_pos_mask": torch.tensor([[True]]),
        "teacher_sense_pos": torch.tensor([[0]]),
        "teacher_rand_pos": torch.tensor([[4]]),
        "sense_targets": torch.tensor([[-100]]),
        "rand_targets": torch.tensor([[5]]),
    }
    hs = torch.zeros(1, 3, d)
    hs[0, 1] = 3.0  # the student's state before the word: MSE 4 to the single sense row
    ht = torch.zeros(1, 6, d)
    out = sense_loss(hs, ht, batch, lookup, SenseLossConfig(kappa=1))
    assert out["rand"].item() == 4.0
