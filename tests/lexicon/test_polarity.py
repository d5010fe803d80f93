"""The negation-polarity rule on hand-made word lists (expected values worked out by hand)."""

from __future__ import annotations

import json

import pytest

from dskd.core.errors import DSKDError
from dskd.lexicon.polarity import AffixRules, Polarity

KNOWN = {
    "happy": {"a"},
    "unhappy": {"a"},
    "care": {"n", "v"},
    "careless": {"s"},
    "uncareless": {"a"},
    "legal": {"a"},
    "illegal": {"a"},
    "under": {"r"},
    "do": {"v"},
    "undo": {"v"},
    "interest": {"n"},
    "animal": {"n"},
    "typical": {"a"},
    "atypical": {"a"},
    "estival": {"a"},
    "aestival": {"a"},
    "ace": {"n"},
    "face": {"n"},
    "unface": {"a"},
    "tort": {"n"},
    "distort": {"v"},
    "sugar": {"n"},
    "sugar-free": {"a"},
    "alike": {"a"},
    "like": {"a", "v"},
    "inside": {"a"},
    "side": {"a", "n"},
    "frost": {"n", "v"},
    "defrost": {"v"},
    "kind": {"a", "n"},
    "Unkind": set(),
}


@pytest.fixture(scope="module")
def pol():
    return Polarity(KNOWN, AffixRules.load())


@pytest.mark.parametrize(
    "word, expected",
    [
        ("unhappy", (-1, "happy")),
        ("illegal", (-1, "legal")),
        ("careless", (-1, "care")),  # suffix; base is a noun
        ("sugar-free", (-1, "sugar")),  # hyphen joins suffix and base
        ("defrost", (-1, "frost")),
        ("atypical", (-1, "typical")),
        ("uncareless", (1, "uncareless")),  # two negations: not re-expressed
        ("happy", (1, "happy")),
        ("under", (1, "under")),  # "der" is not a known word
        ("undo", (1, "undo")),  # base "do" is shorter than 3 characters
        ("interest", (1, "interest")),  # "terest" is not a known word
        ("animal", (1, "animal")),
        ("aestival", (1, "aestival")),  # a- needs a base starting with a consonant (and 5+ characters)
        ("distort", (1, "distort")),  # verb vs noun: prefixes need a shared part of speech
        ("alike", (1, "alike")),  # listed exception
        ("inside", (1, "inside")),  # listed exception
        ("Unkind", (1, "Unkind")),  # only lowercase words are analysed
        ("unknownword", (1, "unknownword")),
    ],
)
def test_polarity_cases(pol, word, expected):
    assert pol(word) == expected


def test_words_without_pos_pass_pos_checks():
    pol = Polarity({"kind": set(), "unkind": set()}, AffixRules.load())
    assert pol("unkind") == (-1, "kind")


def test_rules_are_data(tmp_path):
    path = tmp_path / "rules.json"
    path.write_text(
        json.dumps({"min_base_chars": 3, "prefixes": [], "suffixes": [{"affix": "ness", "pos": ["n"]}]})
    )
    pol = Polarity({"happy": {"n"}, "happyness": {"n"}, "unhappy": {"a"}}, AffixRules.load(path))
    assert pol("happyness") == (-1, "happy")
    assert pol("unhappy") == (1, "unhappy")


def test_malformed_rules_file(tmp_path):
    path = tmp_path / "rules.json"
    path.write_text('{"prefixes": []}')
    with pytest.raises(DSKDError, match="malformed"):
        AffixRules.load(path)
    with pytest.raises(DSKDError, match="Cannot read"):
        AffixRules.load(tmp_path / "missing.json")
