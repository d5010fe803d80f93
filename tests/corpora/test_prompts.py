"""QA records rendered as chat prompts with seeded k-shot exemplars, on fixture records (no hub)."""

from __future__ import annotations

import json

import pytest

from dskd.core.errors import DSKDError
from dskd.corpora.config import SourceConfig
from dskd.corpora.prompts import PARSERS, QAItem, apply_chat, draw_exemplars, question_text
from dskd.corpora.sources import iter_documents, qa_documents

from .conftest import FIXTURES, records

# (kind, record index, expected question start, expected gold answer) -- read off the fixture files
GOLD = [
    ("arc_challenge", 0, "Which gas do plants", "B"),
    ("arc_challenge", 2, "Which object is a conductor", "C"),  # digit labels: "3" is the third option
    ("commonsense_qa", 2, "Where do fish live?", "C"),
    ("piqa", 1, "To keep bread fresh longer,", "B"),
    ("mmlu", 1, "Which planet is known", "C"),
    ("squad_v2", 0, "Into which sea", "the Mediterranean Sea"),
    ("squad_v2", 1, "What is the Moon made of?", "unanswerable"),
]


@pytest.mark.parametrize("kind,index,question,answer", GOLD)
def test_parsers(kind, index, question, answer):
    item = PARSERS[kind](records(kind)[index])
    assert item.question.startswith(question)
    assert item.answer == answer


def test_multiple_choice_text_lists_lettered_options():
    item = PARSERS["mmlu"](records("mmlu")[0])
    assert question_text(item) == (
        "The following is a multiple choice question about elementary mathematics.\n"
        "Question: What is 7 x 8?\nA. 54\nB. 56\nC. 58\nD. 64\nAnswer with the letter of the correct option."
    )


def test_bigbench_gold_is_best_scored_option():
    task = json.loads((FIXTURES / "bigbench/toy_mc/task.json").read_text())
    item = PARSERS["bigbench"](task["examples"][0])  # 1, 5, 3 -> "5" is option B
    assert item.choices == ("1", "5", "3") and item.answer == "B"


@pytest.mark.parametrize(
    "kind,shots", [(k, 5) for k in ("arc_challenge", "commonsense_qa", "piqa", "mmlu")] + [("squad_v2", 1)]
)
def test_chat_prompt_k_shot(tokenizer, kind, shots):
    recs = records(kind)
    docs = list(qa_documents(kind, recs, kind, shots, tokenizer, seed=0))
    assert len(docs) == len(recs)
    for i, doc in enumerate(docs):
        prompt, full, answer = doc.meta["prompt"], doc.text, doc.meta["answer"]
        assert prompt.startswith("<|im_start|>system\n")
        assert prompt.count("<|im_start|>user\n") == shots + 1
        assert prompt.count("<|im_start|>assistant\n") == shots + 1  # exemplar answers + generation prompt
        assert prompt.endswith("<|im_start|>assistant\n")
        assert full == prompt + answer + "<|im_end|>\n"
        own = question_text(PARSERS[kind](recs[i]))
        assert prompt.count(own) == 1  # exemplars never repeat the question itself
        assert prompt.endswith(f"<|im_start|>user\n{own}<|im_end|>\n<|im_start|>assistant\n")
    assert docs[0].meta["answer"] == PARSERS[kind](recs[0]).answer


def test_exemplars_are_seeded_and_exclude_the_record():
    pool = [QAItem(f"q{i}", ("a", "b"), "A") for i in range(10)]
    a = draw_exemplars(pool, 3, 5, seed=0)
    assert a == draw_exemplars(pool, 3, 5, seed=0)
    assert len(set(a)) == 5 and pool[3] not in a
    assert any(draw_exemplars(pool, 3, 5, seed=s) != a for s in range(1, 5))
    with pytest.raises(DSKDError, match="at least 6 records"):
        draw_exemplars(pool[:5], 0, 5, seed=0)


def test_plain_rendering_without_chat_template():
    msgs = [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A"}]
    assert apply_chat(msgs) == "User: Q?\nAssistant: A\n"
    assert apply_chat(msgs[:1], generation_prompt=True) == "User: Q?\nAssistant: "


def test_bigbench_source_from_task_file(tokenizer):
    src = SourceConfig(kind="bigbench", path=str(FIXTURES / "bigbench/toy_mc/task.json"), shots=2)
    docs = list(iter_documents([src], tokenizer))
    assert len(docs) == 6 and docs[5].meta["answer"] == "B"  # 10, 30, 20
    assert docs[0].meta["prompt"].count("<|im_start|>user\n") == 3


def test_hub_qa_source_offline_is_a_clear_error():
    with pytest.raises(DSKDError, match="datasets|hub"):
        list(iter_documents([SourceConfig(kind="arc_challenge")]))
