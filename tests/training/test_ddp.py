"""A real 2-process DDP run on CPU (gloo), started as a script the way a user would start one."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dskd.testing.fixtures import fresh_launch_env

from .tinyrun import random_batches


def _launch(tmp_path, teacher_dir, *args: str) -> None:
    script = Path(__file__).with_name("ddp_script.py")
    env = fresh_launch_env(Path.cwd())  # no rank variables left by earlier tests of this process
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(teacher_dir), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_two_process_ddp_run(tmp_path, teacher_dir):
    _launch(tmp_path, teacher_dir)
    run = tmp_path / "runs" / "tiny-dskd" / "seed-0"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 4
    w0, w1 = (torch.load(tmp_path / f"weights-rank{r}.pt") for r in (0, 1))
    assert torch.equal(w0, w1)  # gradients were averaged
    seen = [torch.load(tmp_path / f"batches-rank{r}.pt") for r in (0, 1)]
    dealt = [b["input_ids"] for b in random_batches(n=8).train_dataloader()]  # the script's 8 batches
    for rank in (0, 1):  # round-robin: rank r trains on batches r, r + 2, r + 4, r + 6
        assert len(seen[rank]) == 4
        assert all(torch.equal(a, b) for a, b in zip(seen[rank], dealt[rank::2])), rank
    assert not any(torch.equal(a, b) for a in seen[0] for b in seen[1])  # no batch on both ranks
    with open(run / "metrics.csv", newline="") as f:
        lrs = {int(r["step"]): float(r["train/lr"]) for r in csv.DictReader(f) if r.get("train/lr")}
    assert lrs[2] == pytest.approx(2 * 1e-3, rel=1e-6)  # lr x world size, of the step after the warm-up step
    with open(run / "metrics.csv", newline="") as f:
        held_out = [r for r in csv.DictReader(f) if r.get("val/sense_diag/hinge_active_teacher")]
    assert held_out and all(
        0 <= float(r["val/sense_diag/pull_active"]) <= 1 for r in held_out
    )  # pooled over ranks


@pytest.mark.parametrize("mode", [[], ["on-policy"]], ids=["data", "on-policy"])
def test_two_process_ddp_runs_sharing_the_trunk_train_the_weights_of_runs_with_copies(
    tmp_path, teacher_dir, mode
):
    weights = {}
    for how in ("shared", "copies"):
        out = tmp_path / how
        out.mkdir()
        _launch(out, teacher_dir, *mode, *([how] if how == "copies" else []))
        assert [(out / f"shared-rank{r}").read_text() for r in (0, 1)] == [str(how == "shared")] * 2
        weights[how] = [torch.load(out / f"weights-rank{r}.pt") for r in (0, 1)]
    for rank in (0, 1):
        torch.testing.assert_close(weights["shared"][rank], weights["copies"][rank], rtol=1e-6, atol=1e-7)


def _train_rows(run: Path) -> dict[tuple[int, str], float]:
    keys = ("train/loss", "train/ce", "train/kd", "train/sense", "train/grad_norm", "train/lr")
    with open(run / "metrics.csv", newline="") as f:
        return {(int(r["step"]), k): float(r[k]) for r in csv.DictReader(f) for k in keys if r.get(k)}


@pytest.mark.parametrize("weights", [[], ["full"]], ids=["trainable", "full"])
def test_two_process_fsdp_runs_sharing_the_trunk_train_resume_and_export_as_runs_with_copies(
    tmp_path, teacher_dir, weights
):
    """FSDP (the run's own strategy, on gloo) with the shared modules left out of its units: the losses,
    clipped gradient norms, checkpoints and export of a run with copies; each stops at step 4 and
    resumes from its checkpoint to step 6 (trainer.max_steps, a resumable key)."""
    runs = {}
    for how in ("shared", "copies"):
        out = tmp_path / how
        out.mkdir()
        args = ["fsdp", *weights, *(["copies"] if how == "copies" else [])]
        _launch(out, teacher_dir, *args)
        _launch(out, teacher_dir, *args, "six")
        assert [(out / f"shared-rank{r}").read_text() for r in (0, 1)] == [str(how == "shared")] * 2
        runs[how] = out / "runs" / "tiny-dskd" / "seed-0"
    shared, copies = runs["shared"], runs["copies"]
    assert [json.loads((r / "summary.json").read_text())["global_step"] for r in runs.values()] == [6, 6]
    want, got = _train_rows(copies), _train_rows(shared)
    assert got.keys() == want.keys() and {s for s, k in want if k == "train/grad_norm"} == set(range(1, 7))
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    states = [
        torch.load(r / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for r in runs.values()
    ]
    assert states[0].keys() == states[1].keys()
    assert any("embed_tokens" in k for k in states[0]) is bool(weights)  # full: the frozen weights too
    for key, value in states[1].items():
        torch.testing.assert_close(states[0][key], value, rtol=1e-6, atol=1e-7, msg=key)
    exported = [load_file(r / "export" / "model.safetensors") for r in runs.values()]
    assert exported[0].keys() == exported[1].keys() and any("embed_tokens" in k for k in exported[0])
    for key, value in exported[1].items():
        torch.testing.assert_close(exported[0][key], value, rtol=1e-6, atol=1e-7, msg=key)


@pytest.mark.parametrize("data", [[], ["corpus"]], ids=["dealt", "corpus"])
def test_two_process_run_stopped_at_an_epochs_end_extended_to_six_steps_equals_six_in_one_go(
    tmp_path, teacher_dir, data
):
    """4 batches per rank and epoch (8 random batches dealt round-robin, or the real DSKDDataModule
    over a text corpus): 4 steps end the epoch on its last batch; extended to 6 (trainer.max_steps),
    each rank trains the first 2 batches of the next epoch, as 6 steps in one go do, with the same
    losses (the dealt resume stopped with "Training epoch 2 has no batch")."""
    full, extended = tmp_path / "full", tmp_path / "extended"
    full.mkdir(), extended.mkdir()
    _launch(full, teacher_dir, "still", "six", *data)
    _launch(extended, teacher_dir, "still", *data)
    _launch(extended, teacher_dir, "still", "six", *data)
    runs = [d / "runs" / "tiny-dskd" / "seed-0" for d in (full, extended)]
    assert [json.loads((r / "summary.json").read_text())["global_step"] for r in runs] == [6, 6]
    for rank in (0, 1):
        want, got = (torch.load(d / f"batches-rank{rank}.pt") for d in (full, extended))
        assert len(want) == 6 and len(got) == 2  # the extension's own batches: steps 4 and 5
        assert all(torch.equal(a, b) for a, b in zip(got, want[4:])), rank
    want, got = _train_rows(runs[0]), _train_rows(runs[1])
    assert got.keys() == want.keys() and {s for s, k in want if k == "train/loss"} == set(range(1, 7))
    for key, value in want.items():
        if key[1] != "train/lr":  # the cosine spans trainer.max_steps: 4 steps decay faster than 6
            assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_two_process_on_policy_run_generates_on_every_rank(tmp_path, teacher_dir):
    """Every batch on-policy: each rank samples for its own batch, gradients still average."""
    _launch(tmp_path, teacher_dir, "on-policy")
    run = tmp_path / "runs" / "tiny-kd" / "seed-0"
    assert json.loads((run / "summary.json").read_text())["global_step"] == 4
    w0, w1 = (torch.load(tmp_path / f"weights-rank{r}.pt") for r in (0, 1))
    assert torch.equal(w0, w1)
    with open(run / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    assert len(rows) == 4
    for r in rows:  # means over both ranks
        assert float(r["train/on_policy"]) == 1.0 and float(r["train/gen_tokens"]) > 0
        assert float(r["train/loss"]) == pytest.approx(float(r["train/kd"]), rel=1e-6)
