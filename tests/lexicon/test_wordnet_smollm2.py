"""Hand-checked cases on real WordNet 3.0 and the real SmolLM2 tokenizer.

WordNet facts used (checked with nltk): good.a.01 'good' has the antonym pointer bad.a.01 'bad';
large.a.01 = {large, big} and small.a.01 = {small, little}, with lemma pointers
large <-> small and big <-> little; hot.a.01 'hot' <-> cold.a.01
'cold'; dysphoric.s.01 = {dysphoric, distressed, unhappy}; car.n.01 has the lemma 'motorcar'.
"""

from __future__ import annotations

import pytest

from dskd.config.schema import ExperimentConfig
from dskd.core.errors import ArtifactMismatchError
from dskd.lexicon import Lexicon
from dskd.lexicon.build import build_from_sources, write_lexicon
from dskd.lexicon.config import LexiconConfig, LexiconSourceConfig
from dskd.lexicon.relations import POLARITY_SOURCE
from dskd.lexicon.sources import ANT, HYP, from_wordnet, load_source

from .conftest import FIXTURES, WORDS, make_word_tokenizer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def wn_data(wordnet):
    return from_wordnet(wordnet, LexiconConfig())


@pytest.fixture(scope="module")
def built(wn_data, smollm2_tokenizer):
    return build_from_sources(LexiconConfig(), [wn_data], smollm2_tokenizer, "smollm2-135m-instruct")


@pytest.fixture(scope="module")
def lex(built, smollm2_tokenizer, tmp_path_factory):
    cfg = ExperimentConfig()
    cfg.lexicon.output_dir = str(tmp_path_factory.mktemp("lex") / "lexicon")
    written = write_lexicon(cfg.lexicon, built, smollm2_tokenizer, "smollm2-135m-instruct", cfg.to_yaml())
    return Lexicon.load(written)


def tok1(tokenizer, word: str) -> int:
    ids = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, (word, ids)
    return ids[0]


def test_hand_checked_pairs(lex, smollm2_tokenizer):
    t = lambda w: tok1(smollm2_tokenizer, w)  # noqa: E731
    syn, ant = lex.neighbours(t("good"))
    assert t("bad") in ant and t("bad") not in syn
    syn, ant = lex.neighbours(t("bad"))
    assert t("good") in ant
    syn, ant = lex.neighbours(t("big"))
    assert t("large") in syn and t("small") in ant and t("little") in ant  # antonyms extend to synsets
    assert t("big") in lex.neighbours(t("large"))[0]
    assert t("cold") in lex.neighbours(t("hot"))[1] and t("hot") in lex.neighbours(t("cold"))[1]
    assert lex.vocab_size == len(smollm2_tokenizer) == 49152
    for head in (t("good"), t("big"), t("hot")):  # no self pairs
        assert head not in lex.neighbours(head)[0] and head not in lex.neighbours(head)[1]


def test_multi_token_neighbour_becomes_vid(lex, smollm2_tokenizer):
    ids = tuple(smollm2_tokenizer(" motorcar", add_special_tokens=False)["input_ids"])
    assert 2 <= len(ids) <= 3
    vid = {v: k for k, v in lex.vid_tokens.items()}[ids]
    assert vid >= lex.vocab_size and lex.vid_words[vid] == "motorcar"
    assert vid in lex.neighbours(tok1(smollm2_tokenizer, "car"))[0]
    assert sorted(lex.vid_tokens) == list(range(lex.vocab_size, lex.vocab_size + len(lex.vid_tokens)))


def test_polarity_flip_on_wordnet(built, lex, smollm2_tokenizer):
    # WordNet: unhappy ~ distressed (dysphoric.s.01) => happy vs distressed, marked as derived
    t = lambda w: tok1(smollm2_tokenizer, w)  # noqa: E731
    assert t("distressed") in lex.neighbours(t("unhappy"))[0]  # the original pair is kept
    row = slice(lex.ant_indptr[t("happy")], lex.ant_indptr[t("happy") + 1])
    keys, masks = lex.ant_indices[row].tolist(), lex.ant_sources[row].tolist()
    pol_bit = 1 << [s["name"] for s in lex.meta["sources"]].index(POLARITY_SOURCE)
    assert masks[keys.index(t("distressed"))] & pol_bit
    assert masks[keys.index(t("unhappy"))] & pol_bit == 0  # a direct WordNet antonym


def test_unhappy_sad_flip_with_an_imported_source(wn_data, smollm2_tokenizer):
    cfg = LexiconConfig(
        sources=[LexiconSourceConfig(), LexiconSourceConfig(kind="tsv", path=str(FIXTURES / "pairs.tsv"))]
    )
    tsv = load_source(cfg.sources[1], cfg, lambda: None)
    m = build_from_sources(cfg, [wn_data, tsv], smollm2_tokenizer, "smollm2").mapped
    t = lambda w: tok1(smollm2_tokenizer, w)  # noqa: E731

    def row(csr, h):
        return csr.indices[csr.indptr[h] : csr.indptr[h + 1]].tolist()

    assert t("sad") in row(m.syn, t("unhappy"))  # kept as given
    assert t("sad") in row(m.ant, t("happy")) and t("happy") in row(m.ant, t("sad"))  # added on the bases


def test_single_token_switch(built, wn_data, smollm2_tokenizer):
    off = build_from_sources(
        LexiconConfig(single_token_neighbours=False), [wn_data], smollm2_tokenizer, "s"
    ).mapped
    on = built.mapped
    v = on.vocab_size

    def entries(csr):
        import numpy as np

        heads = np.repeat(np.arange(v), np.diff(csr.indptr))
        return set(zip(heads.tolist(), csr.indices.tolist()))

    for rel in ("syn", "ant"):
        kept = {(h, k) for h, k in entries(getattr(on, rel)) if k >= v}
        assert kept and entries(getattr(off, rel)) == kept
    assert off.vid_tokens == on.vid_tokens


def test_antonym_extension_switch(wordnet):
    synsets = [wordnet.synset("large.a.01"), wordnet.synset("small.a.01")]
    for extend, expected in (
        (True, {("large", "small"), ("large", "little"), ("big", "small"), ("big", "little")}),
        (False, {("large", "small"), ("big", "little")}),  # WordNet's two lemma pointers
    ):
        data = from_wordnet(wordnet, LexiconConfig(antonyms_extend_to_synsets=extend), synsets=synsets)
        ants = {
            tuple(sorted(p[:2], key=["large", "big", "small", "little"].index))
            for p in data.pairs
            if p[2] == ANT
        }
        assert ants == expected, extend


def test_synset_table(lex, smollm2_tokenizer):
    t = lambda w: tok1(smollm2_tokenizer, w)  # noqa: E731
    lemmas, ants = lex.synset_keys("large.a.01")
    assert set(lemmas.tolist()) == {t("large"), t("big")}
    assert set(ants.tolist()) == {t("small"), t("little")}
    assert lex.synset_keys("no.such.synset")[0].size == 0


def test_check_tokenizer_and_meta(lex, smollm2_tokenizer):
    from dskd.models.loading import tokenizer_fingerprint

    assert lex.fingerprint == tokenizer_fingerprint(smollm2_tokenizer)
    assert lex.meta["sources"][0]["kind"] == "wordnet" and len(lex.meta["sources"][0]["sha256"]) == 64
    lex.check_tokenizer(smollm2_tokenizer)
    with pytest.raises(ArtifactMismatchError):
        lex.check_tokenizer(make_word_tokenizer(WORDS))


def test_stats(built):
    s = built.stats
    assert s["vocab_size"] == 49152 and s["tokenizer"] == "smollm2-135m-instruct"
    assert s["heads_with_synonyms"] > 5000 and s["heads_with_antonyms"] > 1000
    assert s["synonym_pairs"] == built.mapped.syn.indices.size and s["vids"] == len(built.mapped.vid_tokens)
    assert s["per_source"]["wordnet"]["antonym_pairs"] > 0


def test_hypernyms_are_directed_and_optional(wordnet):
    dog = [wordnet.synset("dog.n.01")]
    assert not [p for p in from_wordnet(wordnet, LexiconConfig(), synsets=dog).pairs if p[2] == HYP]
    data = from_wordnet(wordnet, LexiconConfig(hypernyms=True), synsets=dog)
    hyp = {(a, b) for a, b, r in data.pairs if r == HYP}
    assert ("dog", "canine") in hyp and ("dog", "domestic animal") in hyp  # multi-word lemma spaced
    assert ("canine", "dog") not in hyp
