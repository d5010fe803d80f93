"""The paper's evaluation protocol (generation-based), for its hub-hosted tasks when online.

Multiple choice (ARC-Challenge, CommonsenseQA, PIQA, MMLU): a 5-shot prompt lists the lettered
options; the model generates greedily and the **first generated token** must be the gold letter
(exact match). MMLU is macro-averaged over subjects. SQuAD v2: 1-shot, 10 new tokens, token F1
(SQuAD normalisation; an unanswerable question scores 1 only for an empty answer).
"""

from __future__ import annotations

import re
import string
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import torch

LETTERS = "ABCDEFGH"
_ARTICLES = re.compile(r"\b(a|an|the)\b")


@dataclass(frozen=True)
class MCQuestion:
    question: str
    choices: tuple[str, ...]
    gold: int
    subject: str = ""


def mc_block(q: MCQuestion, with_answer: bool) -> str:
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(q.choices))
    answer = f" {LETTERS[q.gold]}" if with_answer else ""
    return f"Question: {q.question}\n{options}\nAnswer:{answer}"


def mc_prompt(q: MCQuestion, shots: list[MCQuestion]) -> str:
    """k-shot prompt: solved examples, then the question with its lettered options and ``Answer:``."""
    return "\n\n".join([*(mc_block(s, True) for s in shots), mc_block(q, False)])


def first_token_letter(first_token: str, n_choices: int) -> str | None:
    """The answer letter when the first generated token is one (``" B"``, ``"B"``), else None."""
    stripped = first_token.strip()
    return stripped if len(stripped) == 1 and stripped in LETTERS[:n_choices] else None


def letter_exact_match(first_token: str, q: MCQuestion) -> bool:
    return first_token_letter(first_token, len(q.choices)) == LETTERS[q.gold]


def macro_average(subjects: list[str], correct: list[bool]) -> float:
    """Mean over subjects of each subject's accuracy (MMLU)."""
    by: dict[str, list[bool]] = defaultdict(list)
    for s, c in zip(subjects, correct):
        by[s].append(c)
    return sum(sum(v) / len(v) for v in by.values()) / len(by)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_f1(prediction: str, golds: list[str]) -> float:
    """Best token F1 over the gold answers; no gold answers (unanswerable) means the empty answer."""
    return max(token_f1(prediction, g) for g in (golds or [""]))


def squad_prompt(context: str, question: str, shot: tuple[str, str, str]) -> str:
    """1-shot SQuAD prompt; ``shot`` is (context, question, answer)."""
    c, q, a = shot
    return f"Context: {c}\nQuestion: {q}\nAnswer: {a}\n\nContext: {context}\nQuestion: {question}\nAnswer:"


@torch.no_grad()
def greedy_continuations(
    model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int
) -> list[list[str]]:
    """For each prompt, the decoded greedy new tokens (one string per token), one prompt at a time."""
    device = next(model.parameters()).device
    out = []
    for p in prompts:
        enc = tokenizer(p, return_tensors="pt").to(device)
        gen = model.generate(
            **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
        out.append([tokenizer.decode([t]) for t in gen[0, enc["input_ids"].shape[1] :].tolist()])
    return out
