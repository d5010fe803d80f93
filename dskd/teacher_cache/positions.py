"""Which positions need the teacher's hidden state: those the sense loss can read.

The sense loss reads the teacher's state at its P1 positions (targets with lexicon neighbours) and
at P2 positions whose target has senses in the sense dictionary (a P2 target without senses is a 0
term: the state is never used). Both are decided by the target token alone, so one boolean per
token id (``hidden_tokens``) tells which positions a cache must cover for every seed and every
sampling setting (``data.max_sense_positions``, ``data.sense_fraction``, ``data.neighbours_with_senses``,
``data.sense_aligned_neighbours`` only ever pick among these).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dskd.core.batch import IGNORE_INDEX
from dskd.lexicon import Lexicon
from dskd.senses import SenseDictionary


def hidden_tokens(lexicon_dir: str, senses_dir: str, vocab_size: int) -> np.ndarray:
    """:func:`token_table` of the lexicon in ``lexicon_dir`` and the sense dictionary in ``senses_dir``
    (a run's ``lexicon.output_dir`` and ``senses.output_dir``); raises the artifacts' own errors when
    they are missing."""
    keys = SenseDictionary.load(senses_dir).key_ids.numpy()
    return token_table(Lexicon.load(lexicon_dir), keys, vocab_size)


def token_table(lexicon: Any, sense_keys: np.ndarray, vocab_size: int) -> np.ndarray:
    """bool ``[vocab_size]``: token ids with lexicon neighbours (a synonym or an antonym row of
    ``lexicon``) or senses (in ``sense_keys``; keys beyond the vocabulary, VIDs, are no targets)."""
    out = np.zeros(vocab_size, dtype=bool)
    for indptr in (lexicon.syn_indptr, lexicon.ant_indptr):
        heads = np.flatnonzero(np.diff(np.asarray(indptr)) > 0)
        out[heads[heads < vocab_size]] = True
    keys = np.asarray(sense_keys, dtype=np.int64)
    out[keys[(keys >= 0) & (keys < vocab_size)]] = True
    return out


def needs_hidden(labels: torch.Tensor, tokens: np.ndarray) -> torch.Tensor:
    """bool ``[B, L]``: positions whose target (``labels``, ``IGNORE_INDEX`` where none) is in ``tokens``."""
    table = torch.from_numpy(tokens).to(labels.device)
    valid = (labels >= 0) & (labels < len(table)) & (labels != IGNORE_INDEX)
    return valid & table[labels.clamp(0, len(table) - 1)]
