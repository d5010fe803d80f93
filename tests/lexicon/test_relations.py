"""Combining sources: symmetry, self pairs, conflicts, provenance bits and the polarity rule."""

from __future__ import annotations

from dskd.lexicon.relations import POLARITY_SOURCE, combine
from dskd.lexicon.sources import ANT, HYP, SYN, SourceData


def _src(name, pairs, words=()):
    known = {w: {"a"} for p in pairs for w in p[:2]}
    known.update({w: {"a"} for w in words})
    return SourceData(name, pairs=list(pairs), words=known)


def test_combine_symmetric_with_provenance_and_conflicts():
    a = _src("a", [("big", "large", SYN), ("large", "big", SYN), ("hot", "cold", ANT), ("x1", "x1", SYN)])
    b = _src("b", [("large", "big", SYN), ("hot", "cold", SYN), ("dog", "animal", HYP)])
    rel = combine([a, b], negation_polarity=False)
    assert rel.source_names == ["a", "b", POLARITY_SOURCE]
    # unordered pairs, both sources' bits
    assert rel.signed == {("big", "large"): (1, 0b11)}  # hot/cold given with both signs: dropped
    assert rel.hypernyms == {("dog", "animal"): 0b10}  # directed
    assert rel.stats["conflicting_pairs_dropped"] == 1
    assert rel.stats["per_source"]["a"] == {"synonym_pairs": 1, "antonym_pairs": 1, "hypernym_pairs": 0}
    assert rel.stats["per_source"]["b"] == {"synonym_pairs": 2, "antonym_pairs": 0, "hypernym_pairs": 1}


def test_polarity_keeps_original_and_adds_pair_on_bases():
    src = _src(
        "a",
        [("unhappy", "sad", SYN), ("unkind", "unfair", SYN), ("happy", "unhappy", ANT)],
        words=["happy", "kind", "fair"],
    )
    rel = combine([src], negation_polarity=True)
    pol_bit = 1 << 1
    assert rel.signed[("sad", "unhappy")] == (1, 0b1)  # original kept as is
    assert rel.signed[("happy", "sad")] == (-1, 0b1 | pol_bit)  # (+1) x (-1) x (+1)
    assert rel.signed[("fair", "kind")] == (1, 0b1 | pol_bit)  # (+1) x (-1) x (-1)
    assert ("happy", "happy") not in rel.signed  # happy/unhappy re-expressed is a self pair
    assert rel.stats["polarity_pairs_added"] == 2


def test_direct_evidence_beats_polarity():
    # a source says happy ~ sad are synonyms: the derived antonym pair must not override it
    src = _src("a", [("unhappy", "sad", SYN), ("happy", "sad", SYN)])
    rel = combine([src], negation_polarity=True)
    assert rel.signed[("happy", "sad")] == (1, 0b1)
    assert rel.stats["polarity_pairs_added"] == 0


def test_polarity_off_changes_nothing():
    src = _src("a", [("unhappy", "sad", SYN)], words=["happy"])
    assert combine([src], negation_polarity=False).signed == {("sad", "unhappy"): (1, 1)}
