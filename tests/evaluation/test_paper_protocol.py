"""The paper's scoring on hand-made records: first-token letters, exact match, MMLU macro average, F1."""

from __future__ import annotations

import pytest

from dskd.evaluation import paper_protocol as pp

Q = pp.MCQuestion("Which is a fruit?", ("car", "apple", "stone", "cloud"), gold=1, subject="biology")


@pytest.mark.parametrize(
    ("token", "letter"),
    [
        (" B", "B"),
        ("B", "B"),
        ("\nC", "C"),
        (" b", None),
        (" Bad", None),
        (" E", None),
        ("", None),
        (".", None),
    ],
)
def test_first_token_letter(token, letter):
    assert pp.first_token_letter(token, n_choices=4) == letter


def test_letter_exact_match():
    assert pp.letter_exact_match(" B", Q)
    assert not pp.letter_exact_match(" A", Q)
    assert not pp.letter_exact_match(" apple", Q)


def test_mc_prompt_lists_shots_then_open_question():
    shot = pp.MCQuestion("2+2?", ("3", "4"), gold=1)
    prompt = pp.mc_prompt(Q, [shot])
    assert prompt == (
        "Question: 2+2?\nA. 3\nB. 4\nAnswer: B\n\n"
        "Question: Which is a fruit?\nA. car\nB. apple\nC. stone\nD. cloud\nAnswer:"
    )


def test_macro_average_weights_subjects_equally():
    subjects = ["a", "a", "a", "a", "b"]
    correct = [True, True, True, False, False]
    # subject a: 3/4, subject b: 0/1 -> macro (0.75 + 0) / 2; the micro average would be 3/5.
    assert pp.macro_average(subjects, correct) == pytest.approx(0.375)


@pytest.mark.parametrize(
    ("pred", "golds", "f1"),
    [
        ("the Eiffel Tower", ["Eiffel Tower"], 1.0),  # articles and case are normalised away
        ("Eiffel Tower in Paris", ["Eiffel Tower"], 2 * (2 / 4) * 1.0 / (2 / 4 + 1.0)),  # P=1/2, R=1 -> 2/3
        (
            "Paris",
            ["Eiffel Tower", "in Paris, France"],
            2 * 1.0 * (1 / 3) / (1.0 + 1 / 3),
        ),  # best gold: P=1, R=1/3
        ("London", ["Paris"], 0.0),
        ("", [], 1.0),  # unanswerable, abstained
        ("Paris", [], 0.0),  # unanswerable, answered
        ("a a b", ["a b b"], 2 * 1.0 * 0.5 / 1.5),  # 'a' is an article: "b" vs "b b" -> P=1, R=1/2
    ],
)
def test_squad_f1_hand_computed(pred, golds, f1):
    assert pp.squad_f1(pred, golds) == pytest.approx(f1)


def test_normalize_answer():
    assert pp.normalize_answer("  The  Cat's, hat!  ") == "cats hat"


def test_online_tasks_stop_with_advice_when_offline(monkeypatch):
    from dskd.errors import DSKDError
    from dskd.evaluation.config import EvalConfig
    from dskd.evaluation.online import score_online

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DSKDError, match=r"needs the Hugging Face hub.*suite is bigbench/\*, wsd, wic"):
        score_online("paper/mmlu", None, None, EvalConfig())
