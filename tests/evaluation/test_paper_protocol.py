"""The paper's protocol: first-token letters, exact match, MMLU macro average, F1 on hand-made records;
prompts rendered as in training; batched scoring and generation equal to one prompt at a time."""

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
    from dskd.core.errors import DSKDError
    from dskd.evaluation.config import EvalConfig
    from dskd.evaluation.tasks import Scoring, benchmark

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DSKDError, match=r"needs the Hugging Face hub.*bigbench/\*, analogy, wsd, wic"):
        benchmark("paper/mmlu").score(None, Scoring(None, None, None, EvalConfig()))


CHAT = (
    "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<assistant> {% endif %}"
)


PROMPTS = [" ".join(f"t{3 + (7 * i + j) % 44}" for j in range(1 + (5 * i) % 13)) for i in range(11)]


def test_prompts_are_rendered_as_training_renders_them():
    from dskd.corpora.prompts import QAItem, prompt_and_answer
    from dskd.testing.fixtures import word_tokenizer

    tok = word_tokenizer(8)
    shot = pp.MCQuestion("2+2?", ("3", "4"), gold=1)
    item = pp.as_qa_item(Q)
    assert item == QAItem("Which is a fruit?", ("car", "apple", "stone", "cloud"), "B", subject="biology")
    plain = pp.training_prompt(item, [pp.as_qa_item(shot)], tok)  # no chat template: plain turns
    assert plain == prompt_and_answer(item, [pp.as_qa_item(shot)])[0] and plain.endswith("Assistant: ")
    assert "User: The following is a multiple choice question about biology." in plain
    assert "Assistant: B\n" in plain  # the shot's answer turn
    tok.chat_template = CHAT
    chat = pp.training_prompt(item, [pp.as_qa_item(shot)], tok)
    assert chat.startswith("<user> Question: 2+2?\nA. 3\nB. 4\n") and chat.endswith("</s> <assistant> ")
    assert "<assistant> B </s>" in chat and chat == prompt_and_answer(item, [pp.as_qa_item(shot)], tok)[0]


def test_batched_next_token_scores_equal_one_prompt_at_a_time(tiny):
    import torch

    model, tok = tiny
    cands = [[3, 4, 5 + i] for i in range(len(PROMPTS))]
    greedy, scores = pp.next_token_scores(model, tok, PROMPTS, cands, batch_size=4)
    for prompt, c, g, sc in zip(PROMPTS, cands, greedy, scores):
        ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), -1)  # alone, no padding
        assert g == int(logp.argmax())
        torch.testing.assert_close(torch.tensor(sc), logp[c], rtol=0, atol=1e-5)
    assert len(set(greedy)) > 3  # the prompts really differ


def test_batched_greedy_texts_equal_one_prompt_at_a_time(tiny):
    model, tok = tiny
    alone = pp.greedy_texts(model, tok, PROMPTS, 5, batch_size=1)
    assert pp.greedy_texts(model, tok, PROMPTS, 5, batch_size=4) == alone
    assert len(set(alone)) > 3 and all(len(t.split()) <= 5 for t in alone)


@pytest.mark.parametrize(
    ("generated", "answer"),
    [(" Paris\nQuestion", "Paris"), ("unanswerable", ""), (" Unanswerable.", ""), ("", "")],
)
def test_squad_answer(generated, answer):
    assert pp.squad_answer(generated) == answer
