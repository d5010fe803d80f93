"""The paper's evaluation protocol (generation-based), for its hub-hosted tasks when online.

Prompts are rendered exactly as the training prompts (:mod:`dskd.corpora.prompts`: the tokenizer's
chat template when it has one, k-shot exemplars as user/assistant turns). Multiple choice
(ARC-Challenge, CommonsenseQA, PIQA, MMLU): 5-shot; the **first greedy token** must be the gold
letter (exact match); MMLU is macro-averaged over subjects. SQuAD v2: 1-shot, 10 greedy new tokens,
token F1 (SQuAD normalisation; an unanswerable question scores 1 only for an empty answer, and the
trained answer 'unanswerable' counts as empty). Models run in batches (:func:`next_token_scores`,
:func:`greedy_texts`).
"""

from __future__ import annotations

import re
import string
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import torch

from dskd.corpora.prompts import UNANSWERABLE, QAItem, prompt_and_answer
from dskd.data.continuations import batch_plan, greedy_batch, left_padded

LETTERS = "ABCDEFGH"
_ARTICLES = re.compile(r"\b(a|an|the)\b")


@dataclass(frozen=True)
class MCQuestion:
    question: str
    choices: tuple[str, ...]
    gold: int
    subject: str = ""


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


def as_qa_item(q: MCQuestion) -> QAItem:
    """The training prompts' form of a multiple-choice question (gold answer: its letter)."""
    return QAItem(q.question, q.choices, LETTERS[q.gold], subject=q.subject)


def training_prompt(item: QAItem, shots: list[QAItem], tokenizer: Any) -> str:
    """The prompt exactly as training renders it (:func:`dskd.corpora.prompts.prompt_and_answer`): the
    tokenizer's chat template when it has one, shots as user/assistant turns, ending with the assistant
    header."""
    return prompt_and_answer(item, shots, tokenizer)[0]


def letter_tokens(tokenizer: Any, n_choices: int) -> list[int]:
    """The token that starts each option letter ``A``, ``B``, ... (the trained answer turn's first token)."""
    return [tokenizer(LETTERS[i], add_special_tokens=False)["input_ids"][0] for i in range(n_choices)]


def _encode(tokenizer: Any, prompts: list[str]) -> list[list[int]]:
    """Token ids of rendered prompts; the chat template brings its own special tokens, as in training."""
    return [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]


@torch.no_grad()
def next_token_scores(
    model: Any, tokenizer: Any, prompts: list[str], candidates: list[list[int]], batch_size: int = 8
) -> tuple[list[int], list[list[float]]]:
    """For each prompt: the greedy next token and the log-probabilities of its ``candidates`` tokens.

    Batches are left-padded with an attention mask and position ids counted from each prompt's first
    token (as ``generate`` does), so every row sees only its own prompt at its own positions; only the
    last position's logits are computed (``logits_to_keep=1``: [batch, vocab], not [batch, length,
    vocab]). A batch gives the scores of one prompt at a time up to float rounding.
    """
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = _encode(tokenizer, prompts)
    greedy: list[int] = [0] * len(prompts)
    scores: list[list[float]] = [[] for _ in prompts]
    for batch in batch_plan([len(e) for e in ids], batch_size):
        inputs, mask = left_padded([ids[i] for i in batch], pad, device)
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        out = model(
            input_ids=inputs, attention_mask=mask, position_ids=positions, use_cache=False, logits_to_keep=1
        )
        logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
        for row, i in enumerate(batch):
            greedy[i] = int(logp[row].argmax())
            scores[i] = logp[row, candidates[i]].tolist()
    return greedy, scores


def greedy_texts(
    model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int, batch_size: int = 8
) -> list[str]:
    """The decoded greedy continuation of each prompt (left-padded batches, special tokens dropped)."""
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    ids = _encode(tokenizer, prompts)
    out: list[str] = [""] * len(prompts)
    for batch in batch_plan([len(e) for e in ids], batch_size):
        conts = greedy_batch(model, [ids[i] for i in batch], max_new_tokens, pad, eos)
        for i, cont in zip(batch, conts):
            out[i] = tokenizer.decode(cont, skip_special_tokens=True)
    return out


def squad_answer(generated: str) -> str:
    """The predicted span: the first line of the generation; the training answer 'unanswerable' is the
    empty answer of SQuAD v2 scoring."""
    line = generated.strip().split("\n")[0].strip()
    return "" if normalize_answer(line) == UNANSWERABLE else line
