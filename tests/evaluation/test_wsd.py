"""Gloss-selection WSD items from the real WordNet examples."""

from __future__ import annotations

import pytest

from dskd.evaluation.wsd import build_wsd

pytestmark = pytest.mark.integration


def test_wsd_items_hold_the_gold_gloss_among_same_lemma_glosses(wordnet):
    from dskd.assets import asset_path
    from dskd.evaluation.wic import read_examples

    examples = read_examples(asset_path("wordnet-corpus") / "examples.jsonl")
    by_query = {f'{e.text}\nIn this sentence, "{e.text[e.start : e.end]}" means:': e for e in examples}
    items = build_wsd(examples, wordnet, max_items=30, n_choices=4, seed=0)
    assert len(items) == 30
    assert items == build_wsd(examples, wordnet, max_items=30, n_choices=4, seed=0)
    for item in items:
        ex = by_query[item.query]
        assert item.choices[item.gold] == wordnet.synset(ex.synset).definition()
        assert 2 <= len(item.choices) <= 4 and len(set(item.choices)) == len(item.choices)
        pos = "a" if ex.key[1] == "s" else ex.key[1]
        lemma_glosses = {s.definition() for s in wordnet.synsets(ex.lemma.replace(" ", "_"), pos=pos)}
        assert set(item.choices) <= lemma_glosses
