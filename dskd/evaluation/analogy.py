"""Word analogies as multiple choice, from the word2vec analogy questions (Mikolov et al. 2013).

``questions-words.txt`` holds questions ``a b c d`` ("Athens Greece Baghdad Iraq") in sections
opened by ``: <name>`` lines (``: capital-common-countries``, ``: family``, ``: gram3-comparative``,
...). Each item asks for ``d`` after ``"{a} is to {b} as {c} is to"``; the distractors are the
``d``-words of other questions of the same section (other countries, other comparatives), never
``a``, ``b``, ``c`` or ``d`` themselves. Items are drawn round-robin over the sections (seeded), so a
small ``max_items`` still covers every section.
"""

from __future__ import annotations

import random
from pathlib import Path

from dskd.core.errors import AssetError
from dskd.evaluation.lm_eval_tasks import MCItem

N_CHOICES = 4
"""The gold word and three distractors (chance 0.25)."""

Question = tuple[str, str, str, str]


def read_questions(path: Path) -> dict[str, list[Question]]:
    """Section name -> its questions ``(a, b, c, d)``, in file order, the words as they appear."""
    sections: dict[str, list[Question]] = {}
    current: list[Question] | None = None
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith(":"):
            current = sections.setdefault(line[1:].strip(), [])
        elif line.strip():
            words = line.split()
            if current is None or len(words) != 4:
                raise AssetError(f"{path}:{n}: expected four words after a ': section' line, got {line!r}.")
            current.append((words[0], words[1], words[2], words[3]))
    if not any(sections.values()):
        raise AssetError(f"{path} holds no analogy questions.")
    return sections


def analogy_query(a: str, b: str, c: str) -> str:
    """The prompt; lm-eval appends ``" " + choice``: "Athens is to Greece as Baghdad is to Iraq"."""
    return f"{a} is to {b} as {c} is to"


def stratified(
    sections: dict[str, list[Question]], max_items: int | None, rng: random.Random
) -> list[tuple[str, Question]]:
    """``(section, question)`` pairs taken round-robin over the sections (in a seeded order), each
    section's questions shuffled; all of them when ``max_items`` is None."""
    names = sorted(sections)
    rng.shuffle(names)
    queues = [(name, rng.sample(sections[name], len(sections[name]))) for name in names]
    picked = [
        (name, queue[rank])
        for rank in range(max(len(queue) for _, queue in queues))
        for name, queue in queues
        if rank < len(queue)
    ]
    return picked if max_items is None else picked[:max_items]


def _answers(questions: list[Question]) -> list[str]:
    """The distinct ``d``-words of a section (case-insensitive; first spelling kept), sorted."""
    first: dict[str, str] = {}
    for q in questions:
        first.setdefault(q[3].lower(), q[3])
    return sorted(first.values())


def _distractors(q: Question, answers: list[str]) -> list[str]:
    """The section's ``answers`` that are none of the question's four words (case-insensitive)."""
    taken = {w.lower() for w in q}
    return [w for w in answers if w.lower() not in taken]


def analogy_item(q: Question, distractors: list[str], rng: random.Random) -> MCItem:
    """``d`` among ``N_CHOICES - 1`` of ``distractors`` (sampled), in a shuffled order."""
    choices = [q[3], *rng.sample(distractors, N_CHOICES - 1)]
    rng.shuffle(choices)
    return MCItem(query=analogy_query(*q[:3]), choices=tuple(choices), gold=choices.index(q[3]))


def build_analogy(sections: dict[str, list[Question]], max_items: int | None, seed: int = 0) -> list[MCItem]:
    """Multiple-choice analogy items, stratified over ``sections`` and seeded (the same for every
    model); a question whose section has too few other answers is left out."""
    rng = random.Random(seed)
    answers = {name: _answers(qs) for name, qs in sections.items()}
    usable = {
        name: [q for q in qs if len(_distractors(q, answers[name])) >= N_CHOICES - 1]
        for name, qs in sections.items()
    }
    picked = stratified({name: qs for name, qs in usable.items() if qs}, max_items, rng)
    return [analogy_item(q, _distractors(q, answers[name]), rng) for name, q in picked]
