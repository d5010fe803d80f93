"""The benchmark registry: every benchmark of the suite is one :class:`Benchmark` object.

A benchmark builds its items once per evaluation (seeded, so every model sees the same ones) and
scores one model on them, returning :class:`Score` records; results.json, the tables and the plots
are generic in those records. Adding a benchmark is adding one object: to :data:`BENCHMARKS`
(or :func:`register` from outside the package), or, for a family of named tasks such as
``bigbench/<task>``, one factory to :data:`FAMILIES`.

``in_average`` marks accuracy-like scores in [0, 1] with a chance level (multiple-choice accuracy,
WiC accuracy, synonym/antonym AUC) that make up a table's average column. Spearman correlations
and held-out LM metrics are reported, not averaged.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dskd.assets import asset_path, wordnet
from dskd.core.errors import ConfigError, DSKDError
from dskd.data.alignment import byte_spans
from dskd.evaluation.analogy import build_analogy, read_questions
from dskd.evaluation.config import EvalConfig
from dskd.evaluation.lm_eval_tasks import bigbench_items, chance_level, run_lm_eval, write_task
from dskd.evaluation.lm_metrics import heldout_blocks, lm_scores
from dskd.evaluation.online import HubOffline, score_online
from dskd.evaluation.scores import Score
from dskd.evaluation.similarity import (
    auc,
    lexical_pairs,
    read_pairs,
    similarity_cosines,
    spearman,
    synonym_antonym_cosines,
)
from dskd.evaluation.wic import build_wic, read_examples, wic_correct
from dskd.evaluation.wsd import build_wsd
from dskd.evaluation.xtok_metrics import block_texts, xtok_scores

WORD_PAIRS_PER_ITEM = 10
"""A word pair (two forwards of a few tokens) costs about a tenth of a multiple-choice item, so the
word-pair benchmarks take ``max_items * 10`` pairs (all of SimLex-999 and WordSim-353 at 100)."""


@dataclass(frozen=True)
class Building:
    """What a benchmark may use to build its items."""

    cfg: EvalConfig
    tokenizer: Any
    """The teacher's tokenizer (it cuts the held-out blocks)."""
    task_dir: Path
    """Folder for files the benchmark writes (lm-eval task definitions)."""


@dataclass(frozen=True)
class Scoring:
    """The model being scored and what comes with it."""

    model: Any
    tokenizer: Any
    teacher: Any | None
    """The teacher, for benchmarks with ``needs_teacher`` (None when scoring the teacher itself)."""
    cfg: EvalConfig


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: ``build`` its items once, then ``score`` any model on them."""

    name: str
    """The name in ``eval.tasks`` (``family/<task>`` for a member of a family)."""
    build: Callable[[Building], Any]
    """The items, built once per evaluation (seeded by ``eval.seed``)."""
    score: Callable[[Any, Scoring], list[Score]]
    """The scores of one model on the items."""
    needs_teacher: bool = False
    """Scoring a student needs the teacher model (e.g. for agreement and KL with it)."""


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    return fn(), time.perf_counter() - t0


# ---- multiple choice through lm-eval (analogy, wsd, bigbench/<task>) -------------------------------


def multiple_choice(name: str, task: str, items: Callable[[Building], list]) -> Benchmark:
    """A benchmark of multiple-choice ``items`` (``MCItem``) scored by lm-eval's log-likelihood
    (accuracy, and length-normalised accuracy kept out of the table); ``task``: lm-eval task name."""

    def build(b: Building) -> tuple[str, Path, int, float]:
        built = items(b)
        return write_task(task, built, b.task_dir), b.task_dir, len(built), chance_level(built)

    def score(built: tuple[str, Path, int, float], s: Scoring) -> list[Score]:
        task_name, folder, _, chance = built
        (ts,) = run_lm_eval(s.model, s.tokenizer, [task_name], folder, s.cfg.batch_size)
        return [
            Score(name, "acc", ts.acc, ts.n_items, chance, ts.seconds, in_average=True, items=ts.correct),
            Score(name, "acc_norm", ts.acc_norm, ts.n_items, chance, ts.seconds, in_table=False),
        ]

    return Benchmark(name, build, score)


def _bigbench(task: str) -> Benchmark:
    def items(b: Building) -> list:
        task_json = asset_path("bigbench-mc") / task / "task.json"
        if not task_json.is_file():
            raise ConfigError(
                f"BIG-bench task '{task}' is not in the bigbench-mc asset ({task_json.parent.parent}); "
                "pick one of its folders or add the task to the asset."
            )
        return bigbench_items(task_json, b.cfg.max_items, b.cfg.seed)

    return multiple_choice(f"bigbench/{task}", task, items)


def _analogy_items(b: Building) -> list:
    questions = read_questions(asset_path("analogies") / "questions-words.txt")
    return build_analogy(questions, b.cfg.max_items, b.cfg.seed)


def _examples() -> list:
    return read_examples(asset_path("wordnet-corpus") / "examples.jsonl")


def _wsd_items(b: Building) -> list:
    return build_wsd(_examples(), wordnet(), b.cfg.max_items, b.cfg.wsd_choices, b.cfg.seed)


# ---- representation probes (wic, simlex, wordsim, antonymy) ----------------------------------------


def _wic_build(b: Building) -> tuple[list, list]:
    return build_wic(_examples(), b.cfg.max_items or 10**9, b.cfg.seed)


def _wic_score(built: tuple[list, list], s: Scoring) -> list[Score]:
    correct, secs = _timed(lambda: wic_correct(s.model, s.tokenizer, *built, s.cfg.batch_size))
    acc = sum(correct) / len(correct)
    return [Score("wic", "acc", acc, len(correct), 0.5, secs, in_average=True, items=correct)]


def word_similarity(name: str, asset: str, file: str) -> Benchmark:
    """Spearman correlation of the model's word cosines with human ratings of the pairs in ``file``."""

    def build(b: Building) -> list[tuple[str, str, float]]:
        pairs = read_pairs(asset_path(asset) / file)
        n = b.cfg.max_items
        return random.Random(b.cfg.seed).sample(
            pairs, len(pairs) if n is None else min(len(pairs), n * WORD_PAIRS_PER_ITEM)
        )

    def score(pairs: list[tuple[str, str, float]], s: Scoring) -> list[Score]:
        cosines, secs = _timed(
            lambda: similarity_cosines(s.model, s.tokenizer, pairs, s.cfg.word_template, s.cfg.batch_size)
        )
        human = [h for _, _, h in pairs]
        rho = spearman(cosines, human)
        return [
            Score(
                name,
                "spearman",
                rho,
                len(pairs),
                0.0,
                secs,
                items=cosines,
                statistic="spearman",
                reference=human,
            )
        ]

    return Benchmark(name, build, score)


def _antonymy_build(b: Building) -> tuple[list, list]:
    n = b.cfg.max_items
    return lexical_pairs(wordnet(), n * WORD_PAIRS_PER_ITEM // 2 if n else 10**9, b.cfg.seed)


def _antonymy_score(built: tuple[list, list], s: Scoring) -> list[Score]:
    syn, ant = built
    (s_cos, a_cos), secs = _timed(
        lambda: synonym_antonym_cosines(s.model, s.tokenizer, syn, ant, s.cfg.word_template, s.cfg.batch_size)
    )
    n, labels = len(s_cos) + len(a_cos), [1.0] * len(s_cos) + [0.0] * len(a_cos)
    gap = sum(s_cos) / len(s_cos) - sum(a_cos) / len(a_cos)
    return [
        Score(
            "antonymy",
            "auc",
            auc(s_cos, a_cos),
            n,
            0.5,
            secs,
            True,
            items=s_cos + a_cos,
            statistic="auc",
            reference=labels,
        ),
        Score("antonymy", "cos_gap", gap, n, 0.0, secs, in_table=False),
    ]


# ---- held-out language modelling -------------------------------------------------------------------


@dataclass(frozen=True)
class HeldoutBlocks:
    """The held-out blocks as the teacher's token ids, their text, and the teacher's tokenizer."""

    ids: torch.Tensor
    texts: list[str]
    n_bytes: list[int]
    """The UTF-8 bytes that tokens 1.. of each block spell (the bytes its next-token predictions cover)."""
    tokenizer: Any


def _heldout_build(b: Building) -> HeldoutBlocks:
    """The held-out blocks (the teacher's token ids), their text and the tokenizer that cut them."""
    path = asset_path("shakespeare") / "shakespeare.txt"
    blocks = heldout_blocks(path, b.tokenizer, b.cfg.heldout_blocks, b.cfg.heldout_block_len)
    texts = block_texts(b.tokenizer, blocks)
    spans = [byte_spans(b.tokenizer, ids.tolist(), text) for ids, text in zip(blocks, texts)]
    return HeldoutBlocks(blocks, texts, [int(sp[-1, 1] - sp[0, 1]) for sp in spans], b.tokenizer)


def _heldout_score(built: HeldoutBlocks, s: Scoring) -> list[Score]:
    if s.tokenizer.get_vocab() != built.tokenizer.get_vocab():
        return _heldout_xtok(built, s)
    blocks = built.ids
    lm, secs = _timed(lambda: lm_scores(s.model, blocks, s.teacher, s.cfg.batch_size))
    n, vocab = len(blocks), s.model.config.vocab_size
    nll = {"items": lm.block_nll, "statistic": "exp_mean"}  # perplexity = exp(mean block NLL)
    per_byte = [x * (blocks.shape[1] - 1) / n_bytes for x, n_bytes in zip(lm.block_nll, built.n_bytes)]
    out = [
        Score("heldout", "perplexity", lm.perplexity, n, float(vocab), secs, higher_is_better=False, **nll),
        Score(
            "heldout",
            "nats_per_byte",
            statistics.fmean(per_byte),
            n,
            None,
            secs,
            higher_is_better=False,
            items=per_byte,
        ),
    ]
    if lm.top1_agreement is not None:
        out.append(
            Score("heldout", "top1_agreement", lm.top1_agreement, n, 1.0 / vocab, secs, items=lm.block_top1)
        )
        out.append(Score("heldout", "kl", lm.kl, n, None, secs, higher_is_better=False, items=lm.block_kl))
    return out


def _heldout_xtok(built: HeldoutBlocks, s: Scoring) -> list[Score]:
    """A cross-tokenizer student: perplexity on its own tokens (``perplexity_own_tokens``, its own column:
    it does not compare with the teacher's per-token ``perplexity``), nats per byte, and with the
    teacher span ULD, span KL and span KL's coverage (:mod:`dskd.evaluation.xtok_metrics`); top-1
    agreement and the per-token KL need one vocabulary and are left out."""
    tokenizers = (built.tokenizer, s.tokenizer)
    lm, secs = _timed(
        lambda: xtok_scores(
            s.model, tokenizers, built.texts, s.teacher, s.cfg.heldout_block_len, s.cfg.batch_size
        )
    )
    n = len(built.texts)

    def lower(
        metric: str,
        value: float,
        items: list[float] | None,
        chance: float | None = None,
        statistic: str = "mean",
    ) -> Score:
        return Score(
            "heldout",
            metric,
            value,
            n,
            chance,
            secs,
            higher_is_better=False,
            items=items,
            statistic=statistic,
        )

    vocab = float(s.model.config.vocab_size)  # perplexity = exp(mean block NLL), chance: uniform
    out = [
        lower("perplexity_own_tokens", lm.perplexity, lm.block_nll, chance=vocab, statistic="exp_mean"),
        lower("nats_per_byte", lm.nats_per_byte, lm.block_nats_per_byte),
    ]
    if lm.span_uld is not None and lm.span_kl is not None and lm.span_kl_coverage is not None:
        cover = lm.span_kl_coverage
        out += [
            lower("span_uld", lm.span_uld, lm.block_span_uld),
            lower("span_kl", lm.span_kl, lm.block_span_kl),
            Score("heldout", "span_kl_scored", cover.scored, n, None, secs),
            Score("heldout", "span_kl_teacher_mass", cover.teacher_mass, n, None, secs),
            Score("heldout", "span_kl_student_mass", cover.student_mass, n, None, secs),
        ]
    return out


# ---- the hub tasks (online only) -------------------------------------------------------------------


def _online(task: str) -> Benchmark:
    def score(_: None, s: Scoring) -> list[Score]:
        try:
            return score_online(task, s.model, s.tokenizer, s.cfg)
        except HubOffline as e:  # the registry knows what runs without the hub
            offline = ", ".join(["bigbench/*", *BENCHMARKS])
            raise DSKDError(
                f"{e} Run it on a machine that reaches the hub with HF_HUB_OFFLINE unset, give a local copy "
                "(DSKD_HUB_MIRROR, docs/data.md), or remove it from eval.tasks (the offline suite is "
                f"{offline})."
            ) from e

    return Benchmark(task, lambda b: None, score)


# ---- the registry ----------------------------------------------------------------------------------

BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        multiple_choice("analogy", "analogy", _analogy_items),
        multiple_choice("wsd", "wsd", _wsd_items),
        Benchmark("wic", _wic_build, _wic_score),
        word_similarity("simlex", "simlex999", "simlex999.txt"),
        word_similarity("wordsim", "wordsim353", "wordsim353.tsv"),
        Benchmark("antonymy", _antonymy_build, _antonymy_score),
        Benchmark("heldout", _heldout_build, _heldout_score, needs_teacher=True),
    )
}
"""The benchmarks named by themselves in ``eval.tasks``."""

FAMILIES: dict[str, Callable[[str], Benchmark]] = {
    "bigbench": _bigbench,
    "paper": lambda task: _online(f"paper/{task}"),
    "lmeval": lambda task: _online(f"lmeval/{task}"),
}
"""``family -> factory``: ``family/<task>`` in ``eval.tasks`` is the benchmark ``factory(task)``."""


def register(benchmark: Benchmark) -> Benchmark:
    """Add ``benchmark`` to :data:`BENCHMARKS` (a name may be taken once)."""
    if benchmark.name in BENCHMARKS or benchmark.name.partition("/")[0] in FAMILIES:
        raise ConfigError(f"An eval benchmark named '{benchmark.name}' exists already; choose another name.")
    BENCHMARKS[benchmark.name] = benchmark
    return benchmark


def benchmark(task: str) -> Benchmark:
    """The benchmark of an ``eval.tasks`` entry; a ConfigError naming the valid ones if none."""
    if task in BENCHMARKS:
        return BENCHMARKS[task]
    family, sep, name = task.partition("/")
    if sep and name and family in FAMILIES:
        return FAMILIES[family](name)
    raise ConfigError(
        f"Unknown eval task '{task}'. Use one of {', '.join(BENCHMARKS)}, or "
        f"{', '.join(f'{f}/<task>' for f in FAMILIES)} (bigbench: a folder of the bigbench-mc asset; "
        "paper and lmeval: online only); see docs/evaluation.md."
    )
