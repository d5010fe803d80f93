"""The paper's hub-hosted tasks: its generation protocol and lm-eval's log-likelihood tasks.

``paper/<task>`` loads the task from the Hugging Face hub with ``datasets`` (or from the local mirror
folder ``$DSKD_HUB_MIRROR``, see :func:`dskd.corpora.sources.mirror_file`) and scores it with
:mod:`dskd.evaluation.paper_protocol`; ``lmeval/<task>`` runs lm-eval's own task of that name.
Without the hub (and no mirror) they raise :class:`HubOffline` (a :class:`~dskd.core.errors.DSKDError`),
which the registry (:mod:`dskd.evaluation.tasks`) completes with the tasks that run offline.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from dskd.core.errors import DSKDError
from dskd.core.progress import plain_stderr
from dskd.corpora.prompts import parse_squad_v2
from dskd.corpora.sources import hub_records, mirror_file
from dskd.evaluation import paper_protocol as pp
from dskd.evaluation.config import EvalConfig
from dskd.evaluation.scores import Score

MC_SHOTS, SQUAD_SHOTS, SQUAD_NEW_TOKENS = 5, 1, 10
PAPER_TASKS = ("arc_challenge", "commonsense_qa", "piqa", "mmlu", "squad_v2")


class HubOffline(DSKDError):
    """An online task was asked for while HF_HUB_OFFLINE is set (the registry adds what runs offline)."""


def _require_online(task: str) -> None:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise HubOffline(f"Eval task '{task}' needs the Hugging Face hub, but HF_HUB_OFFLINE is set.")


def _load(path: str, name: str | None, split: str):
    if mirror_file(path, name, split) is not None:  # a local copy ($DSKD_HUB_MIRROR)
        return list(hub_records(path, name, split))
    _require_online(f"{path} ({split})")
    # deferred: datasets comes with the eval extra (lm-eval); the mirror path above runs without it
    from datasets import load_dataset

    try:
        return load_dataset(path, name, split=split)
    except Exception as e:  # datasets raises many types for an unreachable hub
        raise DSKDError(
            f"Cannot load {path} ({split}) from the hub: {e}. Check the network or HF_TOKEN."
        ) from e


def _lettered(r: dict) -> pp.MCQuestion:
    return pp.MCQuestion(
        r["question"], tuple(r["choices"]["text"]), r["choices"]["label"].index(r["answerKey"])
    )


def _piqa(r: dict) -> pp.MCQuestion:
    return pp.MCQuestion(r["goal"], (r["sol1"], r["sol2"]), int(r["label"]))


def _mmlu(r: dict) -> pp.MCQuestion:
    return pp.MCQuestion(r["question"], tuple(r["choices"]), int(r["answer"]), r["subject"])


MC_SOURCES = {
    "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge", "train", "test", _lettered),
    "commonsense_qa": ("tau/commonsense_qa", None, "train", "validation", _lettered),
    "piqa": ("ybisk/piqa", None, "train", "validation", _piqa),
    "mmlu": ("cais/mmlu", "all", "dev", "test", _mmlu),
}
"""task -> (hub path, config, shot split, evaluation split, row converter)."""


def _mc_questions(task: str) -> tuple[list[pp.MCQuestion], list[pp.MCQuestion]]:
    """(shot pool, evaluation questions) of a paper multiple-choice task."""
    if task not in MC_SOURCES:
        raise DSKDError(f"Unknown paper task '{task}'; use one of {', '.join(PAPER_TASKS)}.")
    path, name, shot_split, eval_split, convert = MC_SOURCES[task]
    return [convert(r) for r in _load(path, name, shot_split)], [
        convert(r) for r in _load(path, name, eval_split)
    ]


def _paper_mc(task: str, model: Any, tokenizer: Any, cfg: EvalConfig) -> list:
    pool, questions = _mc_questions(task)
    rng = random.Random(cfg.seed)
    if cfg.max_items is not None and cfg.max_items < len(questions):
        questions = rng.sample(questions, cfg.max_items)
    t0 = time.perf_counter()
    prompts = []
    for q in questions:
        same = [s for s in pool if s.subject == q.subject] or pool
        shots = [pp.as_qa_item(s) for s in rng.sample(same, min(MC_SHOTS, len(same)))]
        prompts.append(pp.training_prompt(pp.as_qa_item(q), shots, tokenizer))
    letters = [pp.letter_tokens(tokenizer, len(q.choices)) for q in questions]
    greedy, letter_logp = pp.next_token_scores(model, tokenizer, prompts, letters, cfg.batch_size)
    correct = [pp.letter_exact_match(tokenizer.decode([g]), q) for g, q in zip(greedy, questions)]
    best = [max(range(len(lp)), key=lp.__getitem__) == q.gold for lp, q in zip(letter_logp, questions)]
    chance = sum(1 / len(q.choices) for q in questions) / len(questions)
    secs = time.perf_counter() - t0
    names = ("macro_acc", "macro_letter_acc") if task == "mmlu" else ("exact_match", "letter_acc")
    scores = []
    for metric, hits, main in ((names[0], correct, True), (names[1], best, False)):
        if task == "mmlu":  # a macro average over subjects: no per-item values to resample
            value, items = pp.macro_average([q.subject for q in questions], hits), None
        else:
            value, items = sum(hits) / len(hits), [float(h) for h in hits]
        n = len(questions)
        scores.append(Score(f"paper/{task}", metric, value, n, chance, secs, main, True, main, items))
    return scores


def _paper_squad(model: Any, tokenizer: Any, cfg: EvalConfig) -> list:
    rows = list(_load("rajpurkar/squad_v2", None, "validation"))
    rng = random.Random(cfg.seed)
    shot = parse_squad_v2(next(r for r in _load("rajpurkar/squad_v2", None, "train") if r["answers"]["text"]))
    if cfg.max_items is not None and cfg.max_items < len(rows):
        rows = rng.sample(rows, cfg.max_items)
    t0 = time.perf_counter()
    prompts = [pp.training_prompt(parse_squad_v2(r), [shot], tokenizer) for r in rows]
    outs = pp.greedy_texts(model, tokenizer, prompts, SQUAD_NEW_TOKENS, cfg.batch_size)
    f1 = [pp.squad_f1(pp.squad_answer(o), r["answers"]["text"]) for o, r in zip(outs, rows)]
    secs = time.perf_counter() - t0
    return [Score("paper/squad_v2", "f1", sum(f1) / len(f1), len(rows), None, secs, items=f1)]


def _lm_eval_hub(task: str, model: Any, tokenizer: Any, cfg: EvalConfig) -> list:
    # deferred: lm-eval is optional (the eval extra) and takes 2 s to import
    import lm_eval.models.huggingface

    lm = lm_eval.models.huggingface.HFLM(
        pretrained=model, tokenizer=tokenizer, batch_size=cfg.batch_size, device=str(model.device)
    )
    t0 = time.perf_counter()
    with plain_stderr():  # lm-eval's and datasets' bars take no stream
        out = lm_eval.simple_evaluate(
            model=lm, tasks=[task], limit=cfg.max_items, bootstrap_iters=0, log_samples=False
        )
    secs, scores = time.perf_counter() - t0, []
    for name, res in out["results"].items():
        n = int(out["n-samples"].get(name, {}).get("effective", 0))
        for key, value in res.items():
            metric = key.split(",")[0]
            if isinstance(value, float) and not metric.endswith("_stderr"):
                scores.append(
                    Score(f"lmeval/{name}", metric, value, n, None, secs, in_average=metric == "acc")
                )
    return scores


def score_online(task: str, model: Any, tokenizer: Any, cfg: EvalConfig) -> list:
    """Scores of one ``paper/<task>`` or ``lmeval/<task>`` benchmark (needs the hub)."""
    kind, _, name = task.partition("/")
    if kind == "lmeval":
        _require_online(task)
        return _lm_eval_hub(name, model, tokenizer, cfg)
    if name == "squad_v2":
        return _paper_squad(model, tokenizer, cfg)
    return _paper_mc(name, model, tokenizer, cfg)
