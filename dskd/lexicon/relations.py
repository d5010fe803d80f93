"""Combine sources into one signed, symmetric word-level relation table, then apply negation polarity.

Rules (documented in docs/lexicon.md):
- A synonym pair has sign +1, an antonym pair -1; pairs are unordered; self pairs are dropped.
- Each pair keeps a bitmask of the sources that gave it (bit i = i-th source; the last bit marks pairs
  the polarity rule derived).
- A pair that the sources give both as synonyms and as antonyms is dropped (both signs), and counted.
- Polarity: for a kept pair (a, b, s) where a or b negates a base, the pair is kept as it is and the
  pair (base(a), base(b), s * pol(a) * pol(b)) is ADDED, unless a source already relates those two
  words (direct evidence wins) or it is a self pair. Derived pairs that disagree in sign are dropped.
- Hypernym pairs are directed and untouched by polarity.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from dskd.lexicon.polarity import AffixRules, Polarity
from dskd.lexicon.sources import ANT, HYP, SYN, SourceData

POLARITY_SOURCE = "negation_polarity"


@dataclass
class WordRelations:
    signed: dict[tuple[str, str], tuple[int, int]]
    """Unordered pair (a < b) -> (sign, source bitmask)."""
    hypernyms: dict[tuple[str, str], int]
    """(hyponym, hypernym) -> source bitmask."""
    source_names: list[str]
    """Bit i of a mask is source_names[i]; the polarity rule has the last bit."""
    stats: dict[str, int | dict[str, int]] = field(default_factory=dict)


def _canon(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def _resolve(candidates: dict[tuple[tuple[str, str], int], int]) -> tuple[dict, int]:
    """Drop pairs present with both signs; return {pair: (sign, mask)} and the number dropped."""
    out: dict[tuple[str, str], tuple[int, int]] = {}
    dropped = set()
    for (pair, sign), mask in candidates.items():
        if (pair, -sign) in candidates:
            dropped.add(pair)
        else:
            out[pair] = (sign, mask)
    return out, len(dropped)


def combine(
    sources: list[SourceData], negation_polarity: bool, rules: AffixRules | None = None
) -> WordRelations:
    """One signed relation table from all sources (see the module docstring for the rules)."""
    names = [s.name for s in sources] + [POLARITY_SOURCE]
    direct: dict[tuple[tuple[str, str], int], int] = {}
    hyp: dict[tuple[str, str], int] = {}
    per_source: dict[str, dict[str, int]] = {}
    for i, src in enumerate(sources):
        bit = 1 << i
        seen: dict[str, set] = {SYN: set(), ANT: set(), HYP: set()}
        for a, b, rel in src.pairs:
            if a == b:
                continue
            if rel == HYP:
                hyp[(a, b)] = hyp.get((a, b), 0) | bit
                seen[HYP].add((a, b))
                continue
            key = (_canon(a, b), 1 if rel == SYN else -1)
            direct[key] = direct.get(key, 0) | bit
            seen[rel].add(key[0])
        per_source[src.name] = {f"{r}_pairs": len(v) for r, v in seen.items()}
    signed, conflicts = _resolve(direct)
    stats: dict[str, int | dict[str, int]] = {"conflicting_pairs_dropped": conflicts}
    if negation_polarity:
        known: dict[str, set[str]] = {}
        for src in sources:
            for w, pos in src.words.items():
                known.setdefault(w, set()).update(pos)
        pol = Polarity(known, rules or AffixRules.load())
        pol_bit = 1 << len(sources)
        derived: dict[tuple[tuple[str, str], int], int] = {}
        for (a, b), (sign, mask) in signed.items():
            pa, ba = pol(a)
            pb, bb = pol(b)
            if (pa == 1 and pb == 1) or ba == bb:
                continue
            pair = _canon(ba, bb)
            if pair in signed:
                continue
            key = (pair, sign * pa * pb)
            derived[key] = derived.get(key, 0) | mask | pol_bit
        derived_kept, derived_conflicts = _resolve(derived)
        signed.update(derived_kept)
        stats["negated_words"] = sum(pol(w)[0] == -1 for w in known)
        stats["polarity_pairs_added"] = len(derived_kept)
        stats["polarity_conflicts_dropped"] = derived_conflicts
    signs = Counter(sign for sign, _ in signed.values())
    stats["word_synonym_pairs"] = signs[1]
    stats["word_antonym_pairs"] = signs[-1]
    stats["word_hypernym_pairs"] = len(hyp)
    stats["per_source"] = per_source
    return WordRelations(signed, hyp, names, stats)
