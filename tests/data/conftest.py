"""Helpers of the data tests: a small random lexicon table."""

from __future__ import annotations

import numpy as np
import pytest

from dskd.data.sampling import NeighbourTable


def random_table(vocab: int, seed: int = 0, p: float = 0.3, max_deg: int = 40) -> NeighbourTable:
    """CSR rows of random degree (some above 25 to exercise the sub-sampling) with distinct keys per row."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(2):  # synonyms, antonyms
        deg = rng.integers(1, max_deg, vocab) * (rng.random(vocab) < p)
        indptr = np.concatenate([[0], np.cumsum(deg)]).astype(np.int64)
        steps = np.cumsum(rng.integers(1, 20, indptr[-1]))  # increasing inside a row: distinct keys
        within = steps - np.repeat(steps[indptr[:-1][deg > 0]], deg[deg > 0])
        base = np.repeat(rng.integers(0, vocab + 500, vocab), deg)
        rows += [indptr, base + within]
    return NeighbourTable(*rows)


@pytest.fixture
def tokenizer(smollm2_tokenizer):
    return smollm2_tokenizer
