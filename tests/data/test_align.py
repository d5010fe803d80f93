"""Token -> word -> lemma -> synsets with the real SmolLM2 tokenizer and real WordNet."""

from __future__ import annotations

import numpy as np
import pytest

from dskd.data.align import Aligner, Alignment, span_tokens

pytestmark = pytest.mark.integration


def align_text(
    aligner: Aligner, tokenizer, text: str, meta: dict | None = None
) -> tuple[list[int], Alignment]:
    """Tokenize ``text`` (no special tokens) and align it; ``meta`` may carry ``synset`` and ``span``."""
    meta = meta or {}
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    span = meta.get("span")
    return enc["input_ids"], aligner.align(text, enc["offset_mapping"], meta.get("synset"), span)


@pytest.fixture(scope="module")
def aligner(wordnet):
    return Aligner(wordnet)


def words_by_token(tokenizer, alignment, ids):
    return [
        (tok, w.text if w else None)
        for tok, w in zip(tokenizer.convert_ids_to_tokens(ids), map(alignment.word_of, range(len(ids))))
    ]


def test_banks_align_to_bank(aligner, tokenizer):
    ids, al = align_text(aligner, tokenizer, "The banks were closed.")
    assert tokenizer.convert_ids_to_tokens(ids) == ["The", "Ġbanks", "Ġwere", "Ġclosed", "."]
    banks = al.word_of(1)
    assert banks.text == "banks" and (banks.start, banks.end) == (4, 9)
    assert banks.lemma == "bank" and "bank.n.01" in banks.synsets
    assert al.word_of(2).lemma == "be" and al.word_of(3).lemma == "close"
    assert al.word_of(4) is None  # punctuation
    assert banks.gold is None


def test_multi_token_words_share_one_word(aligner, tokenizer):
    ids, al = align_text(aligner, tokenizer, "Unhappiness is well-known; geese don't fly.")
    pairs = words_by_token(tokenizer, al, ids)
    assert [w for t, w in pairs if w == "Unhappiness"] and len(
        {w for t, w in pairs if w == "Unhappiness"}
    ) == 1
    unhappy = [i for i, (t, w) in enumerate(pairs) if w == "Unhappiness"]
    assert len(unhappy) >= 2 and al.word_of(unhappy[0]).lemma == "unhappiness"
    well_known = al.word_of(next(i for i, (t, w) in enumerate(pairs) if w == "well-known"))
    assert well_known.lemma == "well-known" and "well-known.s.01" in well_known.synsets
    geese = al.word_of(next(i for i, (t, w) in enumerate(pairs) if w == "geese"))
    assert geese.lemma == "goose"
    dont = al.word_of(next(i for i, (t, w) in enumerate(pairs) if w == "don't"))
    assert dont.lemma is None and dont.synsets == ()


def test_gold_synset_from_example_span(aligner, tokenizer, wordnet):
    text = "he sat on the bank of the river and watched the currents"
    start = text.index("bank")
    ids, al = align_text(aligner, tokenizer, text, {"synset": "bank.n.01", "span": (start, start + 4)})
    gold = [i for i in range(len(ids)) if al.word_of(i) and al.word_of(i).gold]
    assert [tokenizer.convert_ids_to_tokens(ids)[i] for i in gold] == ["Ġbank"]
    assert al.word_of(gold[0]).gold == "bank.n.01" and "bank.n.01" in al.word_of(gold[0]).synsets
    assert wordnet.synset("bank.n.01").definition().startswith("sloping land")


def test_span_tokens_ignores_leading_space():
    text = "a bank"
    offsets = np.array([[0, 1], [1, 6]])  # "a", " bank"
    assert span_tokens(text, offsets, (2, 6)).tolist() == [False, True]
    assert span_tokens(text, offsets, (0, 1)).tolist() == [True, False]


def test_lookups_are_cached(aligner):
    aligner.lookup.cache_clear()
    aligner.lookup("banks")
    aligner.lookup("banks")
    info = aligner.lookup.cache_info()
    assert info.hits == 1 and info.misses == 1
