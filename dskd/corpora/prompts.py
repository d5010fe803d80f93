"""Question-answering records rendered as chat prompts with seeded k-shot exemplars (paper recipe).

Each QA source has a *record parser* turning one raw record (hub or BIG-bench format) into a
:class:`QAItem`; :func:`render_qa` turns an item plus its exemplars into chat messages, and
:func:`apply_chat` renders the messages with the tokenizer's chat template (plain ``User:`` /
``Assistant:`` turns where there is none). Multiple choice answers are option letters (5-shot by
default), SQuAD v2 answers are a short span or ``unanswerable`` (1-shot by default).
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dskd.core.errors import DSKDError

LETTERS = string.ascii_uppercase
UNANSWERABLE = "unanswerable"
DEFAULT_SHOTS = {"squad_v2": 1}
"""k-shot per QA kind where it differs from the multiple-choice default of 5."""
MC_SHOTS = 5
EXEMPLAR_POOL = 64
"""Exemplars of a QA source are drawn from its first records (the pool); a record never sees itself."""


@dataclass(frozen=True)
class QAItem:
    """One question in a source-independent form."""

    question: str
    choices: tuple[str, ...] = ()
    """Options of a multiple choice question (empty for extractive QA)."""
    answer: str = ""
    """Gold answer: an option letter (multiple choice) or the answer text (SQuAD)."""
    context: str = ""
    """Passage of extractive QA."""
    subject: str = ""
    """MMLU subject (rendered in the instruction)."""


def _mc(question: str, choices: Sequence[str], answer_index: int, subject: str = "") -> QAItem:
    if not 0 <= answer_index < len(choices) or len(choices) > len(LETTERS):
        raise ValueError(f"answer index {answer_index} out of range for {len(choices)} choices")
    return QAItem(question.strip(), tuple(c.strip() for c in choices), LETTERS[answer_index], subject=subject)


def parse_arc(r: dict[str, Any]) -> QAItem:
    """ARC (allenai/ai2_arc): question, choices{text,label}, answerKey (letters or digits)."""
    labels = list(r["choices"]["label"])
    return _mc(r["question"], r["choices"]["text"], labels.index(r["answerKey"]))


parse_commonsense_qa = parse_arc
"""CommonsenseQA (tau/commonsense_qa) shares ARC's record layout."""


def parse_piqa(r: dict[str, Any]) -> QAItem:
    """PIQA: goal, sol1, sol2, label (0/1)."""
    return _mc(r["goal"], [r["sol1"], r["sol2"]], int(r["label"]))


def parse_mmlu(r: dict[str, Any]) -> QAItem:
    """MMLU (cais/mmlu): question, subject, choices, answer (int)."""
    return _mc(r["question"], r["choices"], int(r["answer"]), subject=str(r.get("subject", "")))


def parse_squad_v2(r: dict[str, Any]) -> QAItem:
    """SQuAD v2: context, question, answers{text}; no answer means unanswerable."""
    texts = [t for t in r["answers"]["text"] if t.strip()]
    return QAItem(
        r["question"].strip(), answer=texts[0].strip() if texts else UNANSWERABLE, context=r["context"]
    )


def parse_bigbench(r: dict[str, Any]) -> QAItem:
    """BIG-bench multiple choice example: input, target_scores{option: score}; gold = best score."""
    options = list(r["target_scores"])
    scores = [float(r["target_scores"][o]) for o in options]
    return _mc(r["input"], options, int(np.argmax(scores)))


PARSERS: dict[str, Callable[[dict[str, Any]], QAItem]] = {
    "arc_challenge": parse_arc,
    "commonsense_qa": parse_commonsense_qa,
    "piqa": parse_piqa,
    "mmlu": parse_mmlu,
    "squad_v2": parse_squad_v2,
    "bigbench": parse_bigbench,
}


def question_text(item: QAItem) -> str:
    """The user turn of one question."""
    if item.choices:
        head = (
            f"The following is a multiple choice question about {item.subject.replace('_', ' ')}.\n"
            if item.subject
            else ""
        )
        options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(item.choices))
        return f"{head}Question: {item.question}\n{options}\nAnswer with the letter of the correct option."
    return (
        f"Context: {item.context}\nQuestion: {item.question}\n"
        f"Answer with a short span from the context, or '{UNANSWERABLE}'."
    )


def render_qa(item: QAItem, exemplars: Sequence[QAItem]) -> list[dict[str, str]]:
    """Chat messages: one user/assistant pair per exemplar, then the question (without its answer)."""
    messages: list[dict[str, str]] = []
    for ex in exemplars:
        messages += [
            {"role": "user", "content": question_text(ex)},
            {"role": "assistant", "content": ex.answer},
        ]
    messages.append({"role": "user", "content": question_text(item)})
    return messages


def apply_chat(messages: list[dict[str, str]], tokenizer=None, generation_prompt: bool = False) -> str:
    """Render messages with the tokenizer's chat template (plain turns when there is none)."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )
    text = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages)
    return text + ("Assistant: " if generation_prompt else "")


def shots_for(kind: str, shots: int | None) -> int:
    return DEFAULT_SHOTS.get(kind, MC_SHOTS) if shots is None else shots


def draw_exemplars(pool: Sequence[QAItem], index: int, k: int, seed: int) -> list[QAItem]:
    """k exemplars from the pool for record ``index``, seeded by (seed, index); never the record itself."""
    candidates = [i for i in range(len(pool)) if i != index]
    if k > len(candidates):
        raise DSKDError(
            f"A {k}-shot prompt needs at least {k + 1} records in the source, found {len(pool)}. "
            "Lower `shots` for this source or give it more records."
        )
    rng = np.random.default_rng([seed, index])
    return [pool[candidates[i]] for i in rng.choice(len(candidates), size=k, replace=False)]


def prompt_and_answer(item: QAItem, exemplars: Sequence[QAItem], tokenizer=None) -> tuple[str, str]:
    """(prompt ending where the assistant starts, full text with the gold answer turn)."""
    messages = render_qa(item, exemplars)
    prompt = apply_chat(messages, tokenizer, generation_prompt=True)
    full = apply_chat([*messages, {"role": "assistant", "content": item.answer}], tokenizer)
    return prompt, full
