"""Word similarity (SimLex-999, WordSim-353) and synonym-vs-antonym separation from contextual vectors.

Each word is embedded in a template (default ``"the word {w}"``) as the mean last-layer hidden
state over its own tokens; a pair's score is the cosine of its two words' vectors.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
from scipy.stats import rankdata

from dskd.core.errors import AssetError
from dskd.evaluation.representations import cosine_pairs, embed_spans

DEFAULT_TEMPLATE = "the word {w}"


def read_pairs(path: Path) -> list[tuple[str, str, float]]:
    """Word pairs with human scores from a tab-separated file (``#`` comment lines skipped)."""
    out = []
    try:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("#"):
                a, b, score = line.split("\t")[:3]
                out.append((a.strip(), b.strip(), float(score)))
    except (OSError, ValueError) as e:
        raise AssetError(f"Cannot read word pairs '{path}': {e}. Re-fetch with `dskd assets`.") from e
    return out


def embed_words(
    model: Any, tokenizer: Any, words: list[str], template: str = DEFAULT_TEMPLATE, batch_size: int = 64
) -> dict[str, torch.Tensor]:
    """Contextual vector of each distinct word in ``template``."""
    unique = sorted(set(words))
    texts = [template.format(w=w) for w in unique]
    start = template.index("{w}")
    emb = embed_spans(model, tokenizer, texts, [(start, start + len(w)) for w in unique], batch_size, "words")
    return dict(zip(unique, emb))


def pair_cosines(vectors: dict[str, torch.Tensor], pairs: list[tuple[str, str]]) -> list[float]:
    a = torch.stack([vectors[x] for x, _ in pairs])
    b = torch.stack([vectors[y] for _, y in pairs])
    return cosine_pairs(a, b).tolist()


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties): Pearson correlation of the ranks."""
    rx, ry = torch.tensor(rankdata(x)), torch.tensor(rankdata(y))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx * ry).sum() / (rx.norm() * ry.norm()))


def similarity_cosines(
    model: Any, tokenizer: Any, pairs: list[tuple[str, str, float]], template: str, batch_size: int
) -> list[float]:
    """The model's cosine of each word pair (its Spearman correlation with the human scores is the metric)."""
    with torch.inference_mode():
        vectors = embed_words(
            model, tokenizer, [w for a, b, _ in pairs for w in (a, b)], template, batch_size
        )
    return pair_cosines(vectors, [(a, b) for a, b, _ in pairs])


def lexical_pairs(wn: Any, n: int, seed: int = 0) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Up to ``n`` synonym pairs (two one-word lemmas of a synset) and ``n`` antonym pairs from WordNet.

    Antonyms are WordNet's direct lemma antonyms; both sets are seeded samples of distinct pairs.
    """
    syn, ant = set(), set()
    for s in wn.all_synsets():
        names = [lem.name() for lem in s.lemmas() if "_" not in lem.name() and lem.name().isalpha()]
        syn.update(
            (a.lower(), b.lower())
            for i, a in enumerate(names)
            for b in names[i + 1 :]
            if a.lower() != b.lower()
        )
        for lem in s.lemmas():
            for other in lem.antonyms():
                a, b = lem.name(), other.name()
                if "_" not in a + b and a.isalpha() and b.isalpha():
                    ant.add(tuple(sorted((a.lower(), b.lower()))))
    rng = random.Random(seed)
    return rng.sample(sorted(syn), min(n, len(syn))), rng.sample(sorted(ant), min(n, len(ant)))


def auc(positive: list[float], negative: list[float]) -> float:
    """Probability that a random positive scores above a random negative (ties count one half)."""
    ranks = rankdata(positive + negative)
    n_pos, n_neg = len(positive), len(negative)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def synonym_antonym_cosines(
    model: Any,
    tokenizer: Any,
    syn: list[tuple[str, str]],
    ant: list[tuple[str, str]],
    template: str,
    batch_size: int,
) -> tuple[list[float], list[float]]:
    """(cosines of the synonym pairs, cosines of the antonym pairs)."""
    with torch.inference_mode():
        vectors = embed_words(model, tokenizer, [w for p in syn + ant for w in p], template, batch_size)
    return pair_cosines(vectors, syn), pair_cosines(vectors, ant)
