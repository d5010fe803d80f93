"""Multiple-choice word analogies: a hand-written questions file, and the real asset."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import yaml

from dskd.core.errors import AssetError
from dskd.evaluation.analogy import analogy_query, build_analogy, read_questions, stratified
from dskd.evaluation.lm_eval_tasks import chance_level, write_task

QUESTIONS = """\
: capital-common-countries
Athens Greece Baghdad Iraq
Baghdad Iraq Berlin Germany
Berlin Germany Cairo Egypt
Cairo Egypt Athens GREECE
Paris France Rome Italy
Rome Italy Tokyo Japan
: family
boy girl brother sister
brother sister father mother
father mother king queen
king queen man woman
man woman son daughter
: gram3-comparative
bad worse big bigger
big bigger cheap cheaper
cheap cheaper good better
good better cold colder
cold colder large larger

: too-small
cold hot dark light
dark light cold hot
"""
USABLE = {"capital-common-countries": 6, "family": 5, "gram3-comparative": 5}
"""Questions per section that can have three distractors (too-small has two answers in all)."""


@pytest.fixture
def sections(tmp_path):
    path = tmp_path / "questions-words.txt"
    path.write_text(QUESTIONS, encoding="utf-8")
    return read_questions(path)


def _source(sections) -> dict[str, tuple[str, tuple[str, str, str, str]]]:
    """query -> (section, question)."""
    return {analogy_query(*q[:3]): (name, q) for name, qs in sections.items() for q in qs}


def test_read_questions_keeps_sections_and_spelling(sections):
    assert list(sections) == [*USABLE, "too-small"]
    assert [len(qs) for qs in sections.values()] == [6, 5, 5, 2]
    assert sections["capital-common-countries"][3] == ("Cairo", "Egypt", "Athens", "GREECE")


def test_read_questions_refuses_a_malformed_line(tmp_path):
    path = tmp_path / "q.txt"
    path.write_text(": family\nboy girl brother\n", encoding="utf-8")
    with pytest.raises(AssetError, match="q.txt:2: expected four words"):
        read_questions(path)


def test_query_reads_as_a_sentence_with_lm_evals_delimiter(sections, tmp_path):
    item = next(i for i in build_analogy(sections, None, seed=0) if i.query.startswith("Athens"))
    spec = yaml.safe_load((tmp_path / f"{write_task('analogy', [item], tmp_path)}.yaml").read_text())
    assert item.query + spec["target_delimiter"] + item.choices[item.gold] == (
        "Athens is to Greece as Baghdad is to Iraq"
    )


def test_every_item_has_the_gold_and_three_same_section_distractors(sections):
    items = build_analogy(sections, None, seed=0)
    source = _source(sections)
    assert sorted(source[i.query][1] for i in items) == sorted(q for n in USABLE for q in sections[n])
    assert chance_level(items) == 0.25
    for item in items:
        name, (a, b, c, d) = source[item.query]
        assert item.choices[item.gold] == d
        lowered = [w.lower() for w in item.choices]
        assert len(item.choices) == 4 and len(set(lowered)) == 4
        answers = {q[3] for q in sections[name]}
        distractors = [w for k, w in enumerate(item.choices) if k != item.gold]
        assert set(distractors) <= answers  # the d-words of the same section, spelled as in the file
        assert not {w.lower() for w in distractors} & {a.lower(), b.lower(), c.lower(), d.lower()}
    assert {item.gold for item in items} == {0, 1, 2, 3}  # the gold's position is shuffled


def test_items_are_stratified_over_sections(sections):
    source = _source(sections)
    for n in (3, 7, 11):
        per_section = Counter(source[i.query][0] for i in build_analogy(sections, n, seed=0))
        assert sum(per_section.values()) == n and set(per_section) == set(USABLE)
        assert max(per_section.values()) - min(per_section.values()) <= 1
    assert len(build_analogy(sections, 100, seed=0)) == sum(USABLE.values())


def test_the_same_seed_gives_the_same_items(sections):
    assert build_analogy(sections, 7, seed=3) == build_analogy(sections, 7, seed=3)
    assert build_analogy(sections, 7, seed=3) != build_analogy(sections, 7, seed=4)


@pytest.mark.integration
def test_the_real_questions_give_a_hundred_stratified_items():
    from dskd.assets import asset_path

    sections = read_questions(asset_path("analogies") / "questions-words.txt")
    assert len(sections) == 14 and sum(map(len, sections.values())) == 19544
    assert sections["capital-common-countries"][0] == ("Athens", "Greece", "Baghdad", "Iraq")
    items = build_analogy(sections, 100, seed=0)
    picked = stratified(sections, 100, random.Random(0))  # every real question has enough distractors
    assert [i.query for i in items] == [analogy_query(*q[:3]) for _, q in picked]
    per_section = Counter(name for name, _ in picked)
    assert len(items) == 100 and len(per_section) == 14 and set(per_section.values()) == {7, 8}
    assert items == build_analogy(sections, 100, seed=0)
