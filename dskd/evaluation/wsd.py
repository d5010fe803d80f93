"""Gloss-selection word sense disambiguation as multiple choice.

Given a WordNet example sentence and its target word, the model picks the gloss of the example's
synset among the glosses of the lemma's other synsets with the same part of speech (at most
``n_choices`` candidates, the gold one included, distractors sampled with a seed). Each item is
scored like any other multiple-choice task through lm-eval: the log-likelihood of
`` <gloss>`` after ``<sentence>\\nIn this sentence, "<word>" means:``.
"""

from __future__ import annotations

import random
from typing import Any

from dskd.evaluation.lm_eval_tasks import MCItem
from dskd.evaluation.wic import Example


def wsd_query(ex: Example) -> str:
    return f'{ex.text}\nIn this sentence, "{ex.text[ex.start : ex.end]}" means:'


def build_wsd(
    examples: list[Example], wn: Any, max_items: int | None, n_choices: int = 4, seed: int = 0
) -> list[MCItem]:
    """Multiple-choice WSD items for examples whose lemma has at least two synsets of its POS."""
    rng = random.Random(seed)
    pool = list(examples)
    rng.shuffle(pool)
    items: list[MCItem] = []
    for ex in pool:
        if max_items is not None and len(items) >= max_items:
            break
        lemma, pos = ex.key
        pos_query = "a" if pos == "s" else pos
        gold = wn.synset(ex.synset)
        others = [s for s in wn.synsets(lemma.replace(" ", "_"), pos=pos_query) if s != gold]
        glosses = {s.definition() for s in others} - {gold.definition()}
        if not glosses:
            continue
        distractors = rng.sample(sorted(glosses), min(n_choices - 1, len(glosses)))
        choices = [gold.definition(), *distractors]
        rng.shuffle(choices)
        items.append(
            MCItem(query=wsd_query(ex), choices=tuple(choices), gold=choices.index(gold.definition()))
        )
    return items
