"""A small real word-level fast tokenizer: one token per whitespace-separated word of its vocabulary."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"

WORDS = (
    "good bad fine big large small hot cold happy glad sad unhappy quick fast rapid speedy slow "
    "ice cream gelato dessert lonely ok Good Big"
).split()


def make_word_tokenizer(words: list[str]):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(dict.fromkeys(words))}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


@pytest.fixture(scope="session")
def word_tokenizer():
    """Word-level tokenizer over WORDS: id = 1 + position in WORDS; other words are [UNK] (id 0)."""
    return make_word_tokenizer(WORDS)


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES
