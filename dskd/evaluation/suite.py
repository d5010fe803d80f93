"""The evaluation suite: each benchmark's items are built once (seeded), then every model is scored on them.

A benchmark yields :class:`Score` records; ``in_average`` marks accuracy-like scores in [0, 1]
with a chance level (multiple-choice accuracy, WiC accuracy, synonym/antonym AUC) that make up a
table's average column. Spearman correlations and held-out LM metrics are reported, not averaged.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dskd.errors import ConfigError
from dskd.evaluation.config import EvalConfig

PROBES = ("wsd", "wic", "simlex", "wordsim", "antonymy", "heldout")
MAX_HELDOUT_BLOCKS = 32
WORD_PAIRS_PER_ITEM = 10
"""A word pair (two forwards of a few tokens) costs about a tenth of a multiple-choice item, so the
word-pair benchmarks take ``max_items * 10`` pairs (all of SimLex-999 and WordSim-353 at 100)."""


@dataclass
class Score:
    """One number of one model on one benchmark."""

    benchmark: str
    metric: str
    value: float
    n_items: int
    chance: float | None
    seconds: float
    in_average: bool = False
    higher_is_better: bool = True
    in_table: bool = True
    """False for secondary metrics kept only in results.json (acc_norm, cos_gap)."""


@dataclass
class Suite:
    """Everything built once for all models: multiple-choice tasks on disk, pair sets, held-out blocks."""

    cfg: EvalConfig
    task_dir: Path
    mc_tasks: dict[str, tuple[str, int, float]] = field(default_factory=dict)
    """benchmark -> (lm-eval task name, items, chance)."""
    wic: tuple[list, list] | None = None
    pairs: dict[str, list[tuple[str, str, float]]] = field(default_factory=dict)
    antonymy: tuple[list, list] | None = None
    heldout: Any = None
    online: list[str] = field(default_factory=list)


def check_tasks(tasks: list[str]) -> None:
    """Reject unknown benchmark names with the list of valid ones."""
    for t in tasks:
        kind = t.split("/", 1)[0]
        if t not in PROBES and kind not in ("bigbench", "paper", "lmeval"):
            raise ConfigError(
                f"Unknown eval task '{t}'. Use bigbench/<task> (a folder of the bigbench-mc asset), one of "
                f"{', '.join(PROBES)}, or (online) paper/<task> or lmeval/<task>; see docs/evaluation.md."
            )


def _examples():
    from dskd.assets import asset_path
    from dskd.evaluation.wic import read_examples

    return read_examples(asset_path("wordnet-corpus") / "examples.jsonl")


def build_suite(cfg: EvalConfig, tokenizer: Any, task_dir: Path) -> Suite:
    """Build the items of every configured benchmark (the teacher's tokenizer cuts the held-out blocks)."""
    from dskd.assets import asset_path, wordnet
    from dskd.evaluation import lm_eval_tasks as lmt

    check_tasks(cfg.tasks)
    suite = Suite(cfg=cfg, task_dir=task_dir)
    n, seed = cfg.max_items, cfg.seed
    examples = _examples() if {"wsd", "wic"} & set(cfg.tasks) else []
    for t in cfg.tasks:
        kind, _, name = t.partition("/")
        if kind == "bigbench":
            task_json = asset_path("bigbench-mc") / name / "task.json"
            if not task_json.is_file():
                raise ConfigError(
                    f"BIG-bench task '{name}' is not in the bigbench-mc asset ({task_json.parent.parent}); "
                    "pick one of its folders or add the task to the asset."
                )
            items = lmt.bigbench_items(task_json, n, seed)
            suite.mc_tasks[t] = (lmt.write_task(name, items, task_dir), len(items), lmt.chance_level(items))
        elif t == "wsd":
            from dskd.evaluation.wsd import build_wsd

            items = build_wsd(examples, wordnet(), n, cfg.wsd_choices, seed)
            suite.mc_tasks[t] = (lmt.write_task("wsd", items, task_dir), len(items), lmt.chance_level(items))
        elif t == "wic":
            from dskd.evaluation.wic import build_wic

            suite.wic = build_wic(examples, n or 10**9, seed)
        elif t in ("simlex", "wordsim"):
            from dskd.evaluation.similarity import read_pairs

            asset = "simlex999" if t == "simlex" else "wordsim353"
            file = "simlex999.txt" if t == "simlex" else "wordsim353.tsv"
            pairs = read_pairs(asset_path(asset) / file)
            k = len(pairs) if n is None else min(len(pairs), n * WORD_PAIRS_PER_ITEM)
            suite.pairs[t] = random.Random(seed).sample(pairs, k)
        elif t == "antonymy":
            from dskd.evaluation.similarity import lexical_pairs

            suite.antonymy = lexical_pairs(wordnet(), n * WORD_PAIRS_PER_ITEM // 2 if n else 10**9, seed)
        elif t == "heldout":
            from dskd.evaluation.lm_metrics import heldout_blocks

            blocks = min(n or MAX_HELDOUT_BLOCKS, MAX_HELDOUT_BLOCKS)
            suite.heldout = heldout_blocks(
                asset_path("shakespeare") / "shakespeare.txt", tokenizer, blocks, cfg.heldout_block_len
            )
        else:
            suite.online.append(t)
    return suite


def score_model(suite: Suite, model: Any, tokenizer: Any, teacher: Any | None) -> list[Score]:
    """All benchmark scores of one model; ``teacher`` (None for the teacher itself) for agreement and KL."""
    from dskd.evaluation import similarity as sim
    from dskd.evaluation.lm_eval_tasks import run_lm_eval

    cfg, bs, out = suite.cfg, suite.cfg.batch_size, []
    if suite.mc_tasks:
        names = {name: bench for bench, (name, _, _) in suite.mc_tasks.items()}
        for ts in run_lm_eval(model, tokenizer, list(names), suite.task_dir, bs):
            bench = names[ts.task]
            chance = suite.mc_tasks[bench][2]
            out.append(Score(bench, "acc", ts.acc, ts.n_items, chance, ts.seconds, in_average=True))
            out.append(Score(bench, "acc_norm", ts.acc_norm, ts.n_items, chance, ts.seconds, in_table=False))
    if suite.wic is not None:
        from dskd.evaluation.wic import wic_accuracy

        t0 = time.perf_counter()
        acc = wic_accuracy(model, tokenizer, *suite.wic, bs)
        out.append(
            Score("wic", "acc", acc, len(suite.wic[1]), 0.5, time.perf_counter() - t0, in_average=True)
        )
    for bench, pairs in suite.pairs.items():
        t0 = time.perf_counter()
        rho = sim.similarity_spearman(model, tokenizer, pairs, cfg.word_template, bs)
        out.append(Score(bench, "spearman", rho, len(pairs), 0.0, time.perf_counter() - t0))
    if suite.antonymy is not None:
        t0 = time.perf_counter()
        syn, ant = suite.antonymy
        auc, gap = sim.synonym_antonym_auc(model, tokenizer, syn, ant, cfg.word_template, bs)
        secs = time.perf_counter() - t0
        out.append(Score("antonymy", "auc", auc, len(syn) + len(ant), 0.5, secs, in_average=True))
        out.append(Score("antonymy", "cos_gap", gap, len(syn) + len(ant), 0.0, secs, in_table=False))
    if suite.heldout is not None:
        from dskd.evaluation.lm_metrics import lm_scores

        t0 = time.perf_counter()
        lm = lm_scores(model, suite.heldout, teacher, bs)
        secs, n = time.perf_counter() - t0, len(suite.heldout)
        vocab = model.config.vocab_size
        out.append(
            Score("heldout", "perplexity", lm.perplexity, n, float(vocab), secs, higher_is_better=False)
        )
        if lm.top1_agreement is not None:
            out.append(Score("heldout", "top1_agreement", lm.top1_agreement, n, 1.0 / vocab, secs))
            out.append(Score("heldout", "kl", lm.kl, n, None, secs, higher_is_better=False))
    for t in suite.online:
        from dskd.evaluation.online import score_online

        out.extend(score_online(t, model, tokenizer, cfg))
    return out
