"""Config of evaluation (`dskd eval`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dskd.config.ranges import ranged

DEFAULT_TASKS = ["analogy", "wsd", "wic", "simlex", "wordsim", "heldout"]
"""Tasks on which the teacher was measured clearly above chance (docs/evaluation.md has the numbers)."""


@dataclass
class EvalConfig:
    output_dir: str = "results/${preset}"
    """Where results.json, table.md/table.csv and the plots go."""
    tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS))
    """Benchmarks to run: analogy (word2vec analogy questions, multiple choice), wsd (gloss selection),
    bigbench/<task> (multiple choice on a user-supplied bigbench-mc asset: `dskd assets fetch
    bigbench-mc --from DIR`), wic (Word-in-Context), simlex, wordsim, antonymy (synonym vs antonym AUC),
    heldout (perplexity, top-1 agreement and KL with the teacher on Shakespeare), and, online only,
    paper/<arc_challenge|commonsense_qa|piqa|mmlu|squad_v2> (the paper's generation protocol) and
    lmeval/<lm-eval task name> (lm-eval's own hub task, log-likelihood). docs/evaluation.md says why
    each default task is in the suite."""
    max_items: int | None = ranged(100, ge=1)
    """Items per benchmark: multiple-choice items, WiC pairs per split (held-out blocks: heldout_blocks);
    word-pair benchmarks take 10x as many pairs (simlex, wordsim; antonymy 5x synonym + 5x antonym
    pairs). None: all. The same seeded subset is used for every model."""
    batch_size: int = ranged(8, ge=1)
    """Prompts or sequences per forward: lm-eval requests, hidden-state forwards, held-out blocks and the
    paper protocol's batched scoring and greedy generation."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the evaluated models run: auto (this process's GPU, cuda:LOCAL_RANK, when CUDA is available,
    else the CPU) | cpu | cuda (refused without a visible GPU)."""
    seed: int = ranged(0, ge=0)
    """Seed of item sampling (WiC pairs, WSD and analogy distractors, task subsets); the same for all
    models."""
    models: list[str] = field(default_factory=list)
    """Models as NAME=PATH (NAME may end in @SEED, e.g. dskd@1=runs/tiny/dskd-s1/export); empty: the
    teacher plus the exported students found under runs_dir (<run>/export)."""
    word_template: str = "the word {w}"
    """Context in which a single word is embedded for simlex, wordsim and antonymy."""
    wsd_choices: int = ranged(4, ge=2)
    """Candidate glosses per WSD item (the gold gloss plus sampled distractors of the same lemma)."""
    heldout_block_len: int = ranged(128, ge=2)
    """Tokens per held-out block."""
    heldout_blocks: int = ranged(32, ge=1)
    """Held-out blocks (the items of perplexity, top-1 agreement and KL). A 128-token block costs about
    0.5 CPU-seconds for the SmolLM2-135M teacher and 0.8 for an 8-layer student (its forward and the
    teacher's): 32 keep the tiny preset's eval short; >= 256 give narrower paired intervals."""
    baseline: str = "KD"
    """Model (name without @SEED) that the difference table compares every other model to."""
    bootstrap_resamples: int = ranged(2000, ge=1)
    """Resamples of the paired bootstrap over items behind the difference table's 95% intervals."""
    bootstrap_seed: int = ranged(0, ge=0)
    """Seed of the paired bootstrap's item resampling."""
    plot: bool = True
    """Write PNG plots (scores per benchmark; loss components from the runs' metrics.csv)."""
