"""lm-evaluation-harness integration: BIG-bench multiple-choice tasks as offline local JSON tasks.

A BIG-bench ``task.json`` is turned into a JSONL file of ``{query, choices, gold}`` records and an
lm-eval task YAML (``dataset_path: json``, ``dataset_kwargs: {data_files: ...}``) in a scratch
folder; lm-eval then runs it from ``include_path`` with no hub access, scoring each choice by its
log-likelihood after the query (``acc``: summed log-likelihood, ``acc_norm``: per character).
The query follows BIG-bench's own zero-shot formatting (task prefix, ``Q:``/``A:`` prefixes,
choices appended where the task asks for it).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dskd.core.errors import AssetError, DSKDError
from dskd.core.progress import plain_stderr
from dskd.core.quiet import LM_EVAL_LOADED_MODEL, drop_message

TASK_PREFIX = "dskd_bb_"
DEFAULT_INPUT_PREFIX = "\nQ: "
DEFAULT_OUTPUT_PREFIX = "\nA: "


@dataclass(frozen=True)
class MCItem:
    """One multiple-choice item: the prompt, the candidate continuations and the gold index."""

    query: str
    choices: tuple[str, ...]
    gold: int


def bigbench_items(task_json: Path, max_items: int | None = None, seed: int = 0) -> list[MCItem]:
    """Multiple-choice items of a BIG-bench ``task.json`` (a seeded subset of ``max_items``)."""
    try:
        task = json.loads(Path(task_json).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise AssetError(
            f"Cannot read BIG-bench task '{task_json}': {e}. Re-fetch with `dskd assets`."
        ) from e
    examples = [ex for ex in task.get("examples", []) if ex.get("target_scores")]
    if not examples:
        raise AssetError(f"BIG-bench task '{task_json}' has no multiple-choice examples (target_scores).")
    if max_items is not None and max_items < len(examples):
        examples = random.Random(seed).sample(examples, max_items)
    prefix = task.get("task_prefix", "")
    in_prefix = task.get("example_input_prefix", DEFAULT_INPUT_PREFIX)
    out_prefix = task.get("example_output_prefix", DEFAULT_OUTPUT_PREFIX)
    append = str(task.get("append_choices_to_input", True)).lower() == "true"
    items = []
    for ex in examples:
        choices = tuple(ex["target_scores"])
        scores = list(ex["target_scores"].values())
        listed = "".join(f"\n  choice: {c}" for c in choices) if append else ""
        query = (prefix + in_prefix + ex["input"].strip() + listed + out_prefix).strip()
        items.append(MCItem(query=query, choices=choices, gold=scores.index(max(scores))))
    return items


def write_task(name: str, items: list[MCItem], folder: Path) -> str:
    """Write ``items`` as JSONL plus an lm-eval task YAML into ``folder``; return the lm-eval task name."""
    folder.mkdir(parents=True, exist_ok=True)
    task_name = TASK_PREFIX + name
    data = folder / f"{task_name}.jsonl"
    data.write_text(
        "".join(
            json.dumps({"query": i.query, "choices": list(i.choices), "gold": i.gold}) + "\n" for i in items
        ),
        encoding="utf-8",
    )
    spec = {
        "task": task_name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{query}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{gold}}",
        "target_delimiter": " ",
        "num_fewshot": 0,
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
    }
    (folder / f"{task_name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return task_name


@dataclass
class TaskScore:
    """lm-eval's result for one task on one model."""

    task: str
    acc: float
    acc_stderr: float
    acc_norm: float
    n_items: int
    n_requests: int
    seconds: float
    correct: list[float]
    """1.0 or 0.0 per item (``acc``), in the order of the task's JSONL file."""


@contextlib.contextmanager
def first_local_process() -> Iterator[None]:
    """LOCAL_RANK=0 while lm-eval scores: it returns results only where LOCAL_RANK is 0 (torchrun's tensor
    parallelism), but each process of `dskd eval` or `dskd reproduce` under a launcher scores models of
    its own, alone."""
    local = os.environ.get("LOCAL_RANK")
    os.environ["LOCAL_RANK"] = "0"
    try:
        yield
    finally:
        if local is None:
            os.environ.pop("LOCAL_RANK")
        else:
            os.environ["LOCAL_RANK"] = local


def run_lm_eval(
    model: Any, tokenizer: Any, task_names: list[str], folder: Path, batch_size: int
) -> list[TaskScore]:
    """Run lm-eval log-likelihood multiple choice on the local tasks in ``folder``, offline.

    ``model``/``tokenizer`` are a loaded causal LM and its tokenizer (wrapped in lm-eval's HFLM),
    so teacher and exported students go through the same loader as the rest of the project.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    try:
        # deferred: lm-eval is optional (the eval extra) and takes 2 s to import
        import lm_eval.models.huggingface

        # deferred: as above (lm-eval's task manager)
        import lm_eval.tasks
    except ImportError as e:
        raise DSKDError(
            "Multiple-choice evaluation needs lm-eval: install the eval extra (`pip install -e .[eval]`) or "
            "drop analogy, wsd and bigbench/* from eval.tasks."
        ) from e

    for message in LM_EVAL_LOADED_MODEL:  # we pass a loaded model on purpose, in one process
        drop_message(message)
    lm = lm_eval.models.huggingface.HFLM(
        pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(model.device)
    )
    manager = lm_eval.tasks.TaskManager(include_path=str(folder), include_defaults=False)
    scores = []
    for task in task_names:
        start = time.perf_counter()
        with plain_stderr(), first_local_process():  # lm-eval's bars take no stream
            out = lm_eval.simple_evaluate(
                model=lm,
                tasks=[task],
                task_manager=manager,
                bootstrap_iters=0,
                log_samples=True,
                verbosity="ERROR",
            )
        res = out["results"][task]
        n_items = int(out["n-samples"][task]["effective"])
        n_choices = sum(len(json.loads(line)["choices"]) for line in (folder / f"{task}.jsonl").open())
        scores.append(
            TaskScore(
                task=task,
                acc=float(res["acc,none"]),
                acc_stderr=_binomial_stderr(float(res["acc,none"]), n_items),
                acc_norm=float(res["acc_norm,none"]),
                n_items=n_items,
                n_requests=n_choices,
                seconds=time.perf_counter() - start,
                correct=[float(x["acc"]) for x in sorted(out["samples"][task], key=lambda x: x["doc_id"])],
            )
        )
    return scores


def _binomial_stderr(p: float, n: int) -> float:
    return math.sqrt(p * (1.0 - p) / (n - 1)) if n > 1 else 0.0


def chance_level(items: list[MCItem]) -> float:
    """Expected accuracy of a uniform random guess: mean of 1 / number of choices."""
    return sum(1.0 / len(i.choices) for i in items) / len(items)
