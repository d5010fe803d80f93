"""The project's second tokenizer: a byte-level BPE trained on the real wordnet-corpus asset."""

from __future__ import annotations

import itertools
import json

import pytest

from dskd.assets import asset_path
from dskd.data.bpe import EOS, PAD, corpus_texts, train_bpe

pytestmark = pytest.mark.integration

TEXTS = [
    "the banks  of   the river",
    "naïve café 😀 日本語\n\n tab\there",
    "  leading and trailing spaces  ",
    "a\u00a0non-breaking space, ‘quotes’ — and an ellipsis…",
]


def test_training_twice_gives_the_same_tokenizer_as_the_cached_one(wordnet_bpe):
    corpus = asset_path("wordnet-corpus")
    first = train_bpe(corpus_texts(corpus), 8000).to_str()
    second = train_bpe(corpus_texts(corpus), 8000).to_str()
    assert first == second
    cached = json.loads(wordnet_bpe.backend_tokenizer.to_str())
    for part in ("model", "added_tokens", "pre_tokenizer", "normalizer"):
        assert cached[part] == json.loads(first)[part]


def test_it_has_8000_entries_and_its_specials(wordnet_bpe):
    assert len(wordnet_bpe) == 8000
    assert (wordnet_bpe.eos_token, wordnet_bpe.eos_token_id) == (EOS, 0)
    assert (wordnet_bpe.pad_token, wordnet_bpe.pad_token_id) == (PAD, 1)


def test_it_round_trips_text(wordnet_bpe):
    corpus = list(itertools.islice(corpus_texts(asset_path("wordnet-corpus")), 0, 200_000, 997))
    for text in TEXTS + corpus:
        ids = wordnet_bpe(text, add_special_tokens=False)["input_ids"]
        assert wordnet_bpe.decode(ids) == text


def test_it_splits_text_differently_from_the_teacher(wordnet_bpe, smollm2_tokenizer):
    text = "Photosynthesis converts light energy into chemical energy."
    ours = wordnet_bpe.tokenize(text)
    theirs = smollm2_tokenizer.tokenize(text)
    assert ours != theirs
    assert "".join(ours) == "".join(theirs)  # the same bytes, cut elsewhere
