"""Word keys (dskd.data.words): the real SmolLM2 tokenizer (teacher) against the WordNet BPE (student)."""

from __future__ import annotations

import numpy as np

from dskd.data.alignment import encode
from dskd.data.words import WordKeys, word_positions, words_of

TEXT = "The happy dog, unhappily, sat on the riverbank. 3 cats"


def keys_for(tokenizer) -> WordKeys:
    """The teacher's keys with one VID: that of " unhappily" (three SmolLM2 tokens)."""
    vid = len(tokenizer)
    return WordKeys(tokenizer, {tuple(tokenizer(" unhappily", add_special_tokens=False)["input_ids"]): vid})


def test_words_are_cut_at_the_word_start_marker(smollm2_tokenizer):
    t = encode(smollm2_tokenizer, TEXT)
    words = [
        smollm2_tokenizer.decode(t.ids[i : i + n].tolist()) for i, n in words_of(smollm2_tokenizer, t.ids)
    ]
    # "The" opens the text (no marker), punctuation and the digit are no words, "riverbank" is 2 tokens
    assert words == [" happy", " dog", " unhappily", " sat", " on", " the", " riverbank", " cats"]


def test_word_key_in_text_is_the_key_of_the_word_string(smollm2_tokenizer, wordnet_bpe):
    keys = keys_for(smollm2_tokenizer)
    t, s = encode(smollm2_tokenizer, TEXT), encode(wordnet_bpe, TEXT)
    wp = word_positions(keys, t, s)
    words = ["happy", "dog", "unhappily", "sat", "on", "the", "riverbank", "cats"]
    assert wp.key.tolist() == [keys.key(w) for w in words]
    assert keys.key("unhappily") == len(smollm2_tokenizer)  # the VID, not a token id
    assert keys.key("riverbank") == -1  # two tokens without a VID
    assert keys.key("happy") == smollm2_tokenizer.convert_tokens_to_ids("Ġhappy")
    # the token after each position starts at the word's first byte on both sides
    np.testing.assert_array_equal(s.spans[wp.student + 1, 0], t.spans[wp.teacher + 1, 0])
    # the BPE cuts this text otherwise (" 3" one token, " cats" two)
    assert len(s.ids) != len(t.ids)
