"""Word-in-Context probe built from WordNet example sentences.

Two example sentences that contain the same lemma (same part of speech) form a pair; the label is
whether their synsets are the same. Lemmas are split between a dev and a test part (no lemma in
both), each part is balanced (as many same-sense as different-sense pairs, seeded sampling). A
model scores a pair by the cosine of its mean last-layer hidden states over the target word's
tokens; the threshold that maximises dev accuracy is applied to the test pairs. Chance = 0.5.
"""

from __future__ import annotations

import itertools
import json
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dskd.core.errors import AssetError
from dskd.evaluation.representations import cosine_pairs, embed_spans


@dataclass(frozen=True)
class Example:
    """A WordNet example sentence with the character span of its synset's lemma."""

    text: str
    synset: str
    lemma: str
    start: int
    end: int

    @property
    def key(self) -> tuple[str, str]:
        """(lemma, part of speech): pairs are formed within one key."""
        return self.lemma.lower(), self.synset.split(".")[-2]


@dataclass(frozen=True)
class WicPair:
    a: Example
    b: Example
    same: bool


def read_examples(path: Path) -> list[Example]:
    """The aligned examples of ``wordnet-corpus/examples.jsonl`` (records without a span are skipped)."""
    out = []
    try:
        with Path(path).open(encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                if r.get("lemma") is not None and r.get("start") is not None:
                    out.append(Example(r["text"], r["synset"], r["lemma"], int(r["start"]), int(r["end"])))
    except (OSError, json.JSONDecodeError, KeyError) as e:
        raise AssetError(f"Cannot read WordNet examples '{path}': {e}. Re-fetch with `dskd assets`.") from e
    return out


def _pairs_of(examples: list[Example]) -> tuple[list[WicPair], list[WicPair]]:
    same, diff = [], []
    for a, b in itertools.combinations(examples, 2):
        if a.text == b.text:
            continue
        (same if a.synset == b.synset else diff).append(WicPair(a, b, a.synset == b.synset))
    return same, diff


def build_wic(
    examples: list[Example], n_per_split: int, seed: int = 0
) -> tuple[list[WicPair], list[WicPair]]:
    """Balanced (dev, test) pair sets of up to ``n_per_split`` pairs each, disjoint by lemma.

    Only (lemma, POS) keys whose examples span at least two synsets take part. Lemmas go to dev or
    test by a seeded shuffle; each split then samples ``n_per_split // 2`` pairs of each label,
    spread over lemmas (one pair per lemma and label in turn, round-robin).
    """
    groups: dict[tuple[str, str], list[Example]] = defaultdict(list)
    for ex in examples:
        groups[ex.key].append(ex)
    keys = sorted(k for k, exs in groups.items() if len({e.synset for e in exs}) > 1)
    lemmas = sorted({k[0] for k in keys})
    rng = random.Random(seed)
    rng.shuffle(lemmas)
    dev_lemmas = set(lemmas[: len(lemmas) // 2])
    splits = []
    for in_dev in (True, False):
        same: list[list[WicPair]] = []
        diff: list[list[WicPair]] = []
        for k in keys:
            if (k[0] in dev_lemmas) == in_dev:
                s, d = _pairs_of(groups[k])
                same.append(rng.sample(s, len(s)))
                diff.append(rng.sample(d, len(d)))
        half = n_per_split // 2
        chosen = _round_robin(same, half, rng) + _round_robin(diff, half, rng)
        n = min(sum(p.same for p in chosen), sum(not p.same for p in chosen))
        balanced = [p for p in chosen if p.same][:n] + [p for p in chosen if not p.same][:n]
        rng.shuffle(balanced)
        splits.append(balanced)
    return splits[0], splits[1]


def _round_robin(groups: list[list[WicPair]], n: int, rng: random.Random) -> list[WicPair]:
    """Up to ``n`` pairs, taking one from each non-empty group in a shuffled order, repeatedly."""
    order = [list(g) for g in groups if g]
    rng.shuffle(order)
    out: list[WicPair] = []
    depth = 0
    while len(out) < n and any(len(g) > depth for g in order):
        out.extend(g[depth] for g in order if len(g) > depth)
        depth += 1
    return out[:n]


def best_threshold(scores: list[float], labels: list[bool]) -> float:
    """The threshold t maximising accuracy of ``score >= t`` (midpoints between sorted scores)."""
    values = sorted(set(scores))
    candidates = [values[0] - 1.0] + [(x + y) / 2 for x, y in zip(values, values[1:])] + [values[-1] + 1.0]
    return max(candidates, key=lambda t: sum((s >= t) == y for s, y in zip(scores, labels)))


def pair_scores(model: Any, tokenizer: Any, pairs: list[WicPair], batch_size: int) -> list[float]:
    """Cosine of the target word's contextual representations in the two sentences of each pair."""
    exs = [p.a for p in pairs] + [p.b for p in pairs]
    emb = embed_spans(
        model, tokenizer, [e.text for e in exs], [(e.start, e.end) for e in exs], batch_size, "wic"
    )
    return cosine_pairs(emb[: len(pairs)], emb[len(pairs) :]).tolist()


def wic_correct(
    model: Any, tokenizer: Any, dev: list[WicPair], test: list[WicPair], batch_size: int
) -> list[float]:
    """1.0 or 0.0 per test pair: whether the threshold fitted on dev labels it right (mean: accuracy)."""
    with torch.inference_mode():
        t = best_threshold(pair_scores(model, tokenizer, dev, batch_size), [p.same for p in dev])
        test_scores = pair_scores(model, tokenizer, test, batch_size)
    return [float((s >= t) == p.same) for s, p in zip(test_scores, test)]
