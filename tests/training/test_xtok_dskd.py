"""Cross-tokenizer DSKD end to end (experiments/tiny/xtok-dskd.yaml on the smoke scale): a lexicon and a
small sense dictionary built from the real SmolLM2 teacher by the real commands, then a few steps of a
new Llama over the WordNet BPE with the word-keyed sense loss."""

from __future__ import annotations

import math

import pytest
import torch

from dskd.cli import main
from dskd.config.loading import load_config
from dskd.data.datamodule import CrossTokenizerDataModule
from dskd.lexicon import Lexicon
from dskd.training.run import train

from .test_cross_tokenizer import SMOKE, assert_sigterm_resume_is_exact
from .tinyrun import metrics_rows

pytestmark = pytest.mark.integration  # the real SmolLM2 teacher, WordNet and the WordNet BPE

SMALL_SENSES = [
    "senses.sources=[{kind: wordnet_corpus, path: examples, max_records: 300}]",
    "senses.max_tokens=3000",
    "senses.save_rows=false",
]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, smollm2_dir, wordnet, wordnet_bpe):
    root = tmp_path_factory.mktemp("xtok-dskd")
    over = [f"artifacts_dir={root}/artifacts", f"runs_dir={root}/runs"]
    assert main(["lexicon", "build", "experiments/tiny/xtok-dskd.yaml", *over]) == 0
    assert main(["senses", "build", "experiments/tiny/xtok-dskd.yaml", *over, *SMALL_SENSES]) == 0
    return root, over


def test_word_keyed_batches_hold_sense_positions_on_both_sides(artifacts, smollm2_tokenizer, wordnet_bpe):
    root, over = artifacts
    cfg = load_config("experiments/tiny/xtok-dskd.yaml", [*SMOKE, *over])
    lexicon = Lexicon.load(cfg.lexicon.output_dir)
    dm = CrossTokenizerDataModule(cfg.data, cfg.seed, smollm2_tokenizer, wordnet_bpe, lexicon)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    on = batch["sense_pos_mask"]
    assert on.any()
    pos, t_pos = batch["sense_pos"][on], batch["teacher_sense_pos"][on]
    rows = on.nonzero()[:, 0]
    # the next student token and the next teacher token start the same word: they decode alike up to
    # the shorter of the two, and the key is the teacher's next token (a single-token head)
    s_next = batch["input_ids"][rows, pos + 1]
    t_next = batch["teacher_input_ids"][rows, t_pos + 1]
    assert torch.equal(batch["sense_targets"][on], t_next)
    for s, t in zip(s_next.tolist(), t_next.tolist()):
        a, b = wordnet_bpe.decode([s]), smollm2_tokenizer.decode([t])
        assert a.startswith(" ") and (a.startswith(b) or b.startswith(a))


def _run_dir(root):
    return root / "runs" / "tiny-xtok-dskd" / "seed-0"


@pytest.fixture(scope="module")
def full_run(artifacts):
    """The 6-step run (SMOKE's), uninterrupted."""
    root, over = artifacts
    return train(load_config("experiments/tiny/xtok-dskd.yaml", [*SMOKE, *over]), export=False)


def test_xtok_dskd_trains_a_few_steps_with_the_sense_loss(artifacts, full_run):
    root, _ = artifacts
    assert full_run["global_step"] == 6 and full_run["skipped_steps"] == 0
    rows = [r for r in metrics_rows(_run_dir(root)) if r.get("train/sense")]
    assert len(rows) == 6 and all(float(r["train/kd"]) > 0 for r in rows)
    # a batch of short WordNet documents may hold no word with a sense key: its sense loss is exactly 0
    active = [float(r["train/candidates_per_position"]) > 0 for r in rows]
    assert sum(active) >= 4 and all((float(r["train/sense"]) > 0) == a for r, a in zip(rows, active))
    assert math.isfinite(full_run["metrics"]["val/sense"]) and full_run["metrics"]["val/sense"] > 0


def test_sigterm_then_resume_continues_the_xtok_dskd_run_exactly(artifacts, full_run, tmp_path):
    """Word-keyed sense draws and the cross-tokenizer stream resume where the stop left them: the same
    train losses (CE + ULD + sense) at every step as the uninterrupted run."""
    root, over = artifacts
    cfg = load_config("experiments/tiny/xtok-dskd.yaml", [*SMOKE, *over, f"runs_dir={tmp_path}/runs"])
    assert_sigterm_resume_is_exact(cfg, _run_dir(tmp_path), _run_dir(root))
    sense = [_sense_by_step(_run_dir(r)) for r in (root, tmp_path)]
    assert sense[0] == sense[1] and sense[0][6] > 0  # the resumed steps include a sense-loss step


def _sense_by_step(run_dir) -> dict[int, float]:
    return {int(r["step"]): float(r["train/sense"]) for r in metrics_rows(run_dir) if r.get("train/sense")}
