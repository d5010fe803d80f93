"""Cross-tokenizer KD end to end (experiments/tiny/xtok-kd.yaml on the smoke scale): the real SmolLM2
teacher into a new Llama over the WordNet BPE, through uld_hybrid. A run trains, resumes exactly after
SIGTERM, and exports a folder that transformers loads with the student's own tokenizer."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dskd.config.loading import load_config
from dskd.config.schema import ExperimentConfig
from dskd.core.errors import TrainingInterrupted
from dskd.core.trusted_load import read_checkpoint
from dskd.losses.uld import SpanSide, VocabMatch, uld_loss
from dskd.models.loading import tokenizer_fingerprint
from dskd.training.run import train
from tests.sections import models_of

from .tinyrun import metrics_rows, train_losses

pytestmark = pytest.mark.integration  # the real SmolLM2 teacher and the WordNet BPE

SMOKE = [
    "data.seq_len=32",
    "data.batch_size=2",
    "data.shuffle_buffer=64",
    "student.num_layers=1",
    "student.hidden_size=64",
    "student.intermediate_size=128",
    "trainer.max_steps=6",
    "trainer.checkpoint_every_n_steps=3",  # periodic checkpoints at 3 and 6 only
    "trainer.log_every_n_steps=1",
    "trainer.limit_val_batches=1",
    "logging.wandb=false",
]


def _config(root):
    return load_config("experiments/tiny/xtok-kd.yaml", [*SMOKE, f"runs_dir={root}/runs"])


def _run_dir(root):
    return root / "runs" / "tiny-xtok-kd" / "seed-0"


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, smollm2_dir, wordnet_bpe):
    """The 6-step run, uninterrupted, exported."""
    root = tmp_path_factory.mktemp("xtok-full")
    return root, train(_config(root))


def test_a_cross_tokenizer_run_trains_and_logs_ce_and_the_uld_term(full_run):
    root, summary = full_run
    assert summary["global_step"] == 6 and summary["skipped_steps"] == 0
    metrics = summary["metrics"]
    assert 0 < metrics["train/kd"] < 2 and math.isfinite(metrics["val/kd"]) and metrics["val/kd"] > 0
    assert 5 < metrics["val/ce"] < 10  # a new student over 8,000 tokens: ln 8000 = 8.99 at the start
    rows = [r for r in metrics_rows(_run_dir(root)) if r.get("train/kd")]
    assert len(rows) == 6 and all(float(r["train/ce"]) > 0 for r in rows)
    ckpt = read_checkpoint(_run_dir(root) / "checkpoints" / "last.ckpt")
    assert ckpt["dskd"]["student_config"]["vocab_size"] == 8000
    assert ckpt["dskd"]["frozen"]["keys"] == []  # every weight of a scratch student trains


def test_the_kd_term_is_alpha_times_uld_hybrid_of_the_two_models(full_run, smollm2_dir, wordnet_bpe):
    """The signal's KD of one real batch equals uld_loss computed here from both models' logits."""
    from dskd.data.datamodule import CrossTokenizerDataModule
    from dskd.training.run import load_models
    from dskd.training.teacher_signals import CrossTokenizerTeacher

    cfg = _config(full_run[0])
    tokenizer, teacher, student, _, student_tok = load_models(models_of(cfg))
    dm = CrossTokenizerDataModule(cfg.data, cfg.seed, tokenizer, student_tok)
    batch = dm.on_before_batch_transfer(next(iter(dm.train_dataloader())), 0)
    match = VocabMatch.of(tokenizer, student_tok)
    signal_ = CrossTokenizerTeacher(teacher, cfg.loss, "float32", match)
    logits_s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    got = signal_.kd(signal_.read(batch), logits_s, batch["attention_mask"].bool()).value
    with torch.no_grad():
        t_ids, t_mask = batch["teacher_input_ids"], batch["teacher_attention_mask"]
        logits_t = teacher(input_ids=t_ids, attention_mask=t_mask)
    want = uld_loss(
        SpanSide(logits_s, batch["labels"], batch["student_span"]),
        SpanSide(logits_t.logits, batch["teacher_labels"], batch["teacher_span"]),
        cfg.loss.kd,
        match,
    )
    assert cfg.loss.kd.alpha == 1.0 and len(match.teacher) > 1000
    assert got.item() == pytest.approx(want.item(), rel=1e-5) and got.item() > 0
    got.backward()
    assert student.lm_head.weight.grad.abs().sum() > 0


def assert_sigterm_resume_is_exact(cfg: ExperimentConfig, run_dir: Path, reference_dir: Path) -> None:
    """Run ``cfg`` (6 steps, checkpoints every 3) into ``run_dir``, stopped by a real SIGTERM before step 4,
    then resume it: the stop saves step 4, and the train loss of every step equals that of
    ``reference_dir``, the same config run without a stop."""

    class Terminate(pl.Callback):  # a real SIGTERM to this process, as `kill PID` sends it
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 3:
                os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted, match="SIGTERM at step 4") as info:
        train(cfg, callbacks=[Terminate()], export=False)
    assert info.value.exit_code == 143
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 4
    resumed = train(cfg, export=False)  # trainer.resume=auto
    assert resumed["global_step"] == 6
    a, b = train_losses(reference_dir), train_losses(run_dir)
    assert sorted(a) == sorted(b) == list(range(1, 7))
    for step in a:
        assert b[step] == pytest.approx(a[step], abs=1e-6), step


def test_sigterm_saves_the_step_reached_and_resume_continues_exactly(full_run, tmp_path):
    assert_sigterm_resume_is_exact(_config(tmp_path), _run_dir(tmp_path), _run_dir(full_run[0]))


def test_dskd_export_writes_a_standalone_model_with_the_students_own_tokenizer(
    full_run, tmp_path, smollm2_dir, wordnet_bpe, capsys
):
    from dskd.cli import main

    root, summary = full_run
    out = tmp_path / "exported"
    assert main(["export", f"{summary['checkpoint_dir']}/last.ckpt", str(out)]) == 0
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert tokenizer_fingerprint(tok) == tokenizer_fingerprint(wordnet_bpe)
    assert tokenizer_fingerprint(tok) != tokenizer_fingerprint(AutoTokenizer.from_pretrained(smollm2_dir))
    assert model.config.vocab_size == len(tok) == 8000
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == tok.eos_token_id
    text = "a dog is a domestic animal"
    ids = tok(text, return_tensors="pt")
    assert tok.decode(ids["input_ids"][0]) == text
    generated = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] == ids["input_ids"].shape[1] + 3
    # the run's own export is the same model
    own = AutoModelForCausalLM.from_pretrained(summary["export_dir"])
    assert torch.equal(own(**ids).logits, model(**ids).logits)
    # moved out of its run folder, the checkpoint has no tokenizer/ beside it: the teacher's is refused
    moved = tmp_path / "moved" / "checkpoints" / "last.ckpt"
    moved.parent.mkdir(parents=True)
    shutil.copy(f"{summary['checkpoint_dir']}/last.ckpt", moved)
    assert main(["export", str(moved), str(tmp_path / "x")]) == 2
    assert "does not fit the student's 8000-token vocabulary" in capsys.readouterr().err


def test_dskd_eval_scores_the_cross_tokenizer_student_beside_the_teacher(full_run, tmp_path, capsys):
    """The student is scored with its own tokenizer: held-out perplexity on its own tokens (a column of its
    own), nats per byte, span ULD and span KL to the teacher with span KL's coverage; top-1 agreement and
    KL, per teacher token, are the teacher's only."""
    from dskd.cli import main

    root, summary = full_run
    out = tmp_path / "eval"
    argv = ["eval", "experiments/tiny/xtok-kd.yaml", "--model", "teacher=smollm2-135m-instruct"]
    argv += ["--model", f"xtok={summary['export_dir']}", f"eval.output_dir={out}", "eval.tasks=[wic,heldout]"]
    argv += ["eval.max_items=6", "eval.heldout_blocks=2", "eval.plot=false", "logging.wandb=false"]
    assert main(argv) == 0
    records = json.loads((out / "results.json").read_text())["results"]
    scored = {(r["model"], r["benchmark"], r["metric"]) for r in records}
    assert ("xtok", "wic", "acc") in scored and ("teacher", "heldout", "perplexity") in scored
    held = {m: r for r in records if r["benchmark"] == "heldout" for m in [(r["model"], r["metric"])]}
    assert {m for _, m in held if _ == "xtok"} == {
        "perplexity_own_tokens",
        "nats_per_byte",
        "span_uld",
        "span_kl",
        "span_kl_scored",
        "span_kl_teacher_mass",
        "span_kl_student_mass",
    }
    assert {m for _, m in held if _ == "teacher"} == {"perplexity", "nats_per_byte"}  # no teacher to compare
    assert len(held[("xtok", "span_uld")]["items"]) == 2 and 0 < held[("xtok", "span_uld")]["value"] <= 2
    assert len(held[("xtok", "span_kl")]["items"]) == 2 and held[("xtok", "span_kl")]["value"] > 0
    assert 0 < held[("xtok", "span_kl_scored")]["value"] <= 1
    assert 0 < held[("xtok", "span_kl_teacher_mass")]["value"] < 1
    # the two perplexities are per token of different tokenizers: separate columns, each with its chance
    lines = (out / "table.md").read_text().splitlines()
    header = lines[0].split(" | ")
    row = {r.split(" | ")[0].lstrip("| "): r.split(" | ") for r in lines if r.startswith("| ")}
    own, per_teacher = header.index("heldout perplexity_own_tokens"), header.index("heldout perplexity")
    assert row["teacher"][own] == "–" and row["xtok"][per_teacher] == "–"
    assert row["chance"][own] == "8000" and row["chance"][per_teacher] == "49152"
    assert "`heldout perplexity_own_tokens`: a cross-tokenizer" in "\n".join(lines)
    # per byte the teacher (trained) beats the 6-step student; both are finite and positive
    assert 0 < held[("teacher", "nats_per_byte")]["value"] < held[("xtok", "nats_per_byte")]["value"]
