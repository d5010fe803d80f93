"""Distillation runs on tiny random models: gradients, frozen teacher, outputs, resume, NaN guard, export."""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from dskd.core.devices import numerics
from dskd.core.errors import DSKDError, TrainingInterrupted
from dskd.core.trusted_load import read_checkpoint
from dskd.losses.config import SenseLossConfig
from dskd.losses.sense import sense_loss
from dskd.models.loading import load_causal_lm
from dskd.models.student import build_projection, build_student
from dskd.senses import SenseDictionary
from dskd.training.module import (
    DistillationModule,
    DistillationParts,
    _pooled_val_sense,
    _ratio_standard_error,
    _val_sense_sums,
)
from dskd.training.run import train
from tests.losses.test_sense import N_KEYS, D, K, TableLookup, _problem
from tests.sections import settings_of

from .tinyrun import (
    VOCAB,
    make_model_dir,
    make_tokenizer,
    metrics_rows,
    random_batches,
    tiny_config,
    train_losses,
)


class _RecordGrads(pl.Callback):
    def __init__(self) -> None:
        self.with_grad: set[str] = set()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.with_grad |= {n for n, p in pl_module.named_parameters() if p.grad is not None}
        assert all(p.grad is None for p in pl_module.teacher.parameters())


def test_gradients_reach_only_trainable_parameters_and_teacher_stays_unchanged(run_tmp, teacher_dir):
    cfg = tiny_config(run_tmp, teacher_dir, "dskd", {"student.projection": "linear"})
    teacher = load_causal_lm(teacher_dir, dtype="float32")
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = build_student(cfg.student, teacher)
    student_before = {k: v.clone() for k, v in student.state_dict().items()}
    senses = SenseDictionary.load(run_tmp / "senses")
    parts = DistillationParts(student, teacher, senses, build_projection(cfg.student, student, teacher))
    module = DistillationModule(settings_of(cfg), parts)
    assert not any("teacher" in n for n, _ in module.named_modules())
    assert not any(k.startswith("teacher") for k in module.state_dict())
    record = _RecordGrads()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        callbacks=[record],
        enable_progress_bar=False,
    )
    trainer.fit(module, datamodule=random_batches(n=4))
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert record.with_grad == trainable
    assert trainable == {n for n in trainable if n.startswith(("student.model.layers.1.", "projection."))}
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), f"teacher weight {k} changed"
    for n, p in student.named_parameters():
        changed = not torch.equal(p.detach(), student_before[n])
        assert changed == p.requires_grad, n
    assert all(not p.requires_grad for p in teacher.parameters())


def test_kd_run_writes_its_folder_and_a_loadable_export(run_tmp, teacher_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = tiny_config(run_tmp, teacher_dir, "kd", {"seed": 3})
    out = train(cfg, datamodule=random_batches(n=6))
    run = run_tmp / "runs" / "tiny-kd" / "seed-3"
    assert out["run_dir"] == str(run) and out["global_step"] == 4
    for name in (
        "config.yaml",
        "checkpoints/last.ckpt",
        "checkpoints/config.yaml",
        "metrics.csv",
        "summary.json",
    ):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["metrics"] == out["metrics"] and summary["numerics"] == numerics()
    for key in (
        "train/loss",
        "train/ce",
        "train/kd",
        "val/loss",
        "val/ce",
        "val/kd",
        "val/ppl",
        "val/top1_agreement",
    ):
        assert key in out["metrics"], key
    assert out["metrics"]["val/ppl"] == pytest.approx(
        torch.tensor(out["metrics"]["val/ce"]).exp().item(), rel=1e-5
    )
    rows = metrics_rows(run)
    assert sorted(train_losses(run)) == [1, 2, 3, 4]  # rows at the steps done
    for key in ("train/lr", "train/grad_norm", "train/device/items_per_sec"):
        assert any(r.get(key) for r in rows), key
    ckpt = read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert ckpt["state_dict"] and all(k.startswith("student.") for k in ckpt["state_dict"])
    assert ckpt["optimizer_states"] and ckpt["lr_schedulers"] and ckpt["loops"]

    export = run / "export"
    assert out["export_dir"] == str(export)
    model = AutoModelForCausalLM.from_pretrained(export)
    tok = AutoTokenizer.from_pretrained(export)
    assert model.config.num_hidden_layers == 2
    state = {k[len("student.") :]: v for k, v in ckpt["state_dict"].items()}  # the trainable weights
    teacher = load_causal_lm(teacher_dir, dtype="float32").state_dict()  # the frozen ones: the teacher's
    assert set(state).isdisjoint(k[len("student.") :] for k in ckpt["dskd"]["frozen"]["keys"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k] if k in state else teacher[k]), k
    ids = tok("t5 t6 t7", return_tensors="pt").input_ids
    gen = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=1)
    assert gen.shape == (1, 7)
    meta = json.loads((export / "export_meta.json").read_text())
    assert (
        meta["stage"] == "export"
        and meta["inputs"]["global_step"] == 4
        and "tiny-kd" in meta["experiment_config"]
    )


def test_export_command(run_tmp, teacher_dir, capsys):
    from dskd.cli import main

    cfg = tiny_config(run_tmp, teacher_dir, "kd", {"trainer.max_steps": 1})
    out = train(cfg, datamodule=random_batches(n=2), export=False)
    assert out["export_dir"] is None
    ckpt = f"{out['checkpoint_dir']}/last.ckpt"
    assert main(["export", ckpt, str(run_tmp / "exported")]) == 0
    assert (run_tmp / "exported" / "model.safetensors").is_file()
    assert main(["export", str(run_tmp / "missing.ckpt"), str(run_tmp / "x")]) == 2
    assert "No checkpoint" in capsys.readouterr().err


def test_dskd_run_logs_every_component_and_wandb_offline(run_tmp, teacher_dir, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = tiny_config(run_tmp, teacher_dir, "dskd", {"logging.wandb": True, "trainer.max_steps": 2})
    out = train(cfg, datamodule=random_batches(n=4), export=False)
    m = out["metrics"]
    for key in (
        "sense",
        "sense_pos",
        "sense_neg",
        "sense_rand",
        "neighbour_fraction",
        "candidates_per_position",
        "sense_diag/hinge_active",
        "sense_diag/syn_row_fraction",
        "sense_diag/selections_coincide",
        "sense_diag/teacher_mse_neg",
        "sense_diag/margin",
    ):
        assert f"train/{key}" in m, key
    assert m["train/sense_diag/margin"] == cfg.loss.sense.margin
    assert 0 <= m["train/sense_diag/hinge_active"] <= 1
    loss = m["train/ce"] + m["train/kd"] + cfg.loss.sense.weight * m["train/sense"]
    assert m["train/loss"] == pytest.approx(loss, rel=1e-5)
    assert m["train/sense"] == pytest.approx(
        m["train/sense_pos"] + m["train/sense_neg"] + m["train/sense_rand"]
    )
    wandb_runs = list((run_tmp / "runs" / "tiny-dskd" / "seed-0" / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 1


def test_dskd_run_logs_the_teacher_relative_diagnostics_in_training_and_validation(run_tmp, teacher_dir):
    over = {"trainer.max_steps": 2, "loss.sense.hinge": "teacher", "loss.sense.pull": "match"}
    cfg = tiny_config(run_tmp, teacher_dir, "dskd", over)
    m = train(cfg, datamodule=random_batches(n=4), export=False)["metrics"]
    for split in ("train", "val"):
        for key in ("hinge_active", "hinge_active_teacher", "pull_active", "pos_distance_ratio"):
            assert 0 <= m[f"{split}/sense_diag/{key}"] < math.inf, (split, key)
        assert m[f"{split}/sense_diag/hinge_active_teacher"] == 0.0  # teacher-relative: never at the teacher
        assert (
            m[f"{split}/sense_diag/pos_distance_ratio"] > 0
            and m[f"{split}/sense_diag/neg_distance_ratio"] > 0
        )
    assert m["val/sense"] == pytest.approx(m["val/sense_pos"] + m["val/sense_neg"] + m["val/sense_rand"])
    assert m["val/sense"] > 0 and "val/batches" not in m
    for side in ("pos", "neg"):  # two held-out batches: a spread to measure (a step has none)
        assert 0 < m[f"val/sense_diag/{side}_distance_ratio_se"] < math.inf
        assert f"train/sense_diag/{side}_distance_ratio_se" not in m


@pytest.mark.parametrize("hinge", ["absolute", "teacher", "triplet"])
def test_validation_pools_the_sense_diagnostics_as_one_batch_of_every_held_out_position(hinge):
    """Pooled over two halves of a batch, the validation diagnostics are those of the whole batch
    (a mean of per-batch fractions would weight a half without negatives like one with many)."""
    hs, ht, batch, table = _problem(0)
    batch["n_neighbour_positions"] = batch["sense_pos_mask"].sum(1)
    mask = batch["labels"] != -100
    lookup, cfg = TableLookup(table, K, D, N_KEYS), SenseLossConfig(kappa=2, margin=2.5, hinge=hinge)
    halves = [slice(0, 1), slice(1, None)]  # unequal halves
    sums = [
        _val_sense_sums(
            sense_loss(hs[h], ht[h], {k: v[h] for k, v in batch.items()}, lookup, cfg), batch, mask
        )
        for h in halves
    ]
    pooled = _pooled_val_sense({k: (sums[0][k] + sums[1][k]).item() for k in sums[0]})
    whole = sense_loss(hs, ht, batch, lookup, cfg)["diagnostics"]
    pooled_names = {k.removeprefix("val/sense_diag/") for k in pooled if k.startswith("val/sense_diag/")}
    assert pooled_names == set(whole) | {"pos_distance_ratio_se", "neg_distance_ratio_se"}
    for name, value in whole.items():
        assert pooled[f"val/sense_diag/{name}"] == pytest.approx(value.item(), rel=1e-5), name
    assert pooled["val/sense_diag/hinge_active"] > 0


def _ratio_sums(student: list[float], teacher: list[float]) -> dict[str, float]:
    """The summed :func:`_val_sense_sums` entries of the pos ratio, for held-out batches with these
    summed student and teacher distances."""
    return {
        "batches": len(student),
        "val/sense_diag/student_mse_pos": sum(student),
        "val/sense_diag/teacher_mse_pos": sum(teacher),
        "ss/pos": sum(s * s for s in student),
        "st/pos": sum(s * t for s, t in zip(student, teacher, strict=True)),
        "tt/pos": sum(t * t for t in teacher),
    }


def test_distance_ratio_standard_error_by_hand_and_against_the_mean_s_standard_error():
    # by hand: R = 6 / 6 = 1, residuals s_b - R t_b = -1, 0, 1; n/(n-1) * 2 / 6^2 = 1/12
    assert _ratio_standard_error(_ratio_sums([1, 2, 3], [2, 2, 2]), "pos") == pytest.approx(12**-0.5)
    # equal teacher sums: the ratio is mean(s) / t, whose standard error is stdev(s) / sqrt(n) / t
    student = [3.1, 2.4, 2.9, 3.6, 2.2]
    want = statistics.stdev(student) / len(student) ** 0.5 / 2.5
    assert _ratio_standard_error(_ratio_sums(student, [2.5] * 5), "pos") == pytest.approx(want, rel=1e-9)
    # unequal teacher sums: only the residuals from R count (s = R t everywhere: no spread)
    assert _ratio_standard_error(_ratio_sums([1.8, 3.6, 0.9], [2, 4, 1]), "pos") == pytest.approx(0, abs=1e-7)
    assert _ratio_standard_error(_ratio_sums([2.0], [2.0]), "pos") is None  # one batch: no spread to see


def test_resume_reproduces_the_uninterrupted_run(run_tmp, teacher_dir):
    class Crash(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 4:
                raise RuntimeError("simulated crash")

    over = {
        "trainer.max_steps": 8,
        "trainer.checkpoint_every_n_steps": 3,
        "senses.output_dir": str(run_tmp / "senses"),
    }
    full = tiny_config(run_tmp / "a", teacher_dir, "dskd", over)
    train(full, datamodule=random_batches(n=5), export=False)
    broken = tiny_config(run_tmp / "b", teacher_dir, "dskd", over)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(broken, datamodule=random_batches(n=5), callbacks=[Crash()], export=False)
    run_b = run_tmp / "b" / "runs" / "tiny-dskd" / "seed-0"
    assert sorted(train_losses(run_b)) == [1, 2, 3, 4]  # step 4 ran; the checkpoint is at step 3
    assert read_checkpoint(run_b / "checkpoints" / "last.ckpt")["global_step"] == 3
    resumed = train(broken, datamodule=random_batches(n=5), export=False)  # trainer.resume=auto
    assert resumed["global_step"] == 8
    a = train_losses(run_tmp / "a" / "runs" / "tiny-dskd" / "seed-0")
    b = train_losses(run_b)
    assert sorted(a) == sorted(b) == list(range(1, 9))
    for step in a:
        assert b[step] == pytest.approx(a[step], abs=1e-6), step


def test_trainable_only_checkpoints_resume_exactly_export_the_same_and_are_smaller(run_tmp, teacher_dir):
    """trainer.checkpoint_weights=trainable (the default): the checkpoint leaves out the student's frozen
    weights (restored from the teacher on resume and export). A run resumed from it logs the losses of
    an uninterrupted run that keeps full checkpoints, exports the same weights, and its checkpoint is
    smaller by the bytes of the frozen weights."""
    from transformers import AutoModelForCausalLM

    class Crash(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 4:
                raise RuntimeError("simulated crash")

    over = {"trainer.max_steps": 7, "trainer.checkpoint_every_n_steps": 3, "student.num_layers": 3}
    full = tiny_config(run_tmp / "a", teacher_dir, "kd", {**over, "trainer.checkpoint_weights": "full"})
    out_a = train(full, datamodule=random_batches(n=5))
    lean = tiny_config(run_tmp / "b", teacher_dir, "kd", over)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(lean, datamodule=random_batches(n=5), callbacks=[Crash()], export=False)
    out_b = train(lean, datamodule=random_batches(n=5))  # resumed from the trainable-only step 3
    a, b = train_losses(run_tmp / "a" / "runs" / "tiny-kd" / "seed-0"), train_losses(Path(out_b["run_dir"]))
    assert sorted(a) == sorted(b) == list(range(1, 8))
    for step in a:
        assert b[step] == pytest.approx(a[step], abs=1e-6), step
    ckpt_a, ckpt_b = (os.path.join(o["checkpoint_dir"], "last.ckpt") for o in (out_a, out_b))
    state_a = torch.load(ckpt_a, weights_only=True)["state_dict"]
    lean_ckpt = torch.load(ckpt_b, weights_only=True)
    frozen = lean_ckpt["dskd"]["frozen"]
    assert set(frozen["keys"]) == set(state_a) - set(lean_ckpt["state_dict"]) and frozen["dtype"] == "float32"
    assert all(".layers.2." in k for k in lean_ckpt["state_dict"])  # only the top layer trains
    frozen_bytes = sum(  # tied weights are stored once
        {state_a[k].untyped_storage().data_ptr(): state_a[k].nbytes for k in frozen["keys"]}.values()
    )
    saved = os.path.getsize(ckpt_a) - os.path.getsize(ckpt_b)
    # the frozen tensors' bytes, plus each one's zip record and pickled name (measured: ~270 bytes each)
    assert 0 <= saved - frozen_bytes < 512 * len(frozen["keys"]), (saved, frozen_bytes)
    models = [AutoModelForCausalLM.from_pretrained(o["export_dir"]).state_dict() for o in (out_a, out_b)]
    assert models[0].keys() == models[1].keys()
    for key in models[0]:
        assert torch.equal(models[0][key], models[1][key]), key


def test_a_checkpoint_that_does_not_fit_the_student_is_refused(run_tmp, teacher_dir):
    """Checkpoints load non-strictly (a trainable-only one leaves the frozen weights out; FSDP loads the
    weights before the hook), so on_load_checkpoint checks the keys: a missing trainable weight, or
    frozen weights recorded for another student or dtype, is a ConfigError."""
    import copy

    from dskd.core.errors import ConfigError

    cfg = tiny_config(run_tmp, teacher_dir, "kd")
    teacher = load_causal_lm(teacher_dir, dtype="float32")
    module = DistillationModule(
        settings_of(cfg), DistillationParts(build_student(cfg.student, teacher), teacher)
    )
    assert module.strict_loading is False
    saved = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(saved)
    assert set(saved["state_dict"]) == {n for n, p in module.named_parameters() if p.requires_grad}
    module.on_load_checkpoint(copy.deepcopy(saved))  # fits
    module.on_load_checkpoint({k: v for k, v in saved.items() if k != "state_dict"})  # FSDP: loaded before
    broken = copy.deepcopy(saved)
    broken["state_dict"].pop(next(iter(broken["state_dict"])))
    with pytest.raises(ConfigError, match="missing or unexpected"):
        module.on_load_checkpoint(broken)
    for change in ({"dtype": "bfloat16"}, {"keys": saved["dskd"]["frozen"]["keys"][1:]}):
        other = copy.deepcopy(saved)
        other["dskd"]["frozen"].update(change)
        with pytest.raises(ConfigError, match="Resume with the student and teacher.dtype"):
            module.on_load_checkpoint(other)


def test_sigterm_saves_the_step_reached_and_resume_continues(run_tmp, teacher_dir):
    class Terminate(pl.Callback):  # a real SIGTERM to this process, as `kill PID` sends it
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 5:
                os.kill(os.getpid(), signal.SIGTERM)

    over = {
        "trainer.max_steps": 8,
        "trainer.checkpoint_every_n_steps": 4,  # periodic checkpoints at 4 and 8 only
        "senses.output_dir": str(run_tmp / "senses"),
    }
    full = tiny_config(run_tmp / "a", teacher_dir, "dskd", over)
    train(full, datamodule=random_batches(n=5), export=False)
    stopped = tiny_config(run_tmp / "b", teacher_dir, "dskd", over)
    with pytest.raises(TrainingInterrupted, match="SIGTERM at step 6") as info:
        train(stopped, datamodule=random_batches(n=5), callbacks=[Terminate()], export=False)
    assert info.value.exit_code == 143
    run_b = run_tmp / "b" / "runs" / "tiny-dskd" / "seed-0"
    assert read_checkpoint(run_b / "checkpoints" / "last.ckpt")["global_step"] == 6
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # Lightning restored the handler
    resumed = train(stopped, datamodule=random_batches(n=5), export=False)  # trainer.resume=auto
    assert resumed["global_step"] == 8
    a, b = train_losses(run_tmp / "a" / "runs" / "tiny-dskd" / "seed-0"), train_losses(run_b)
    assert sorted(a) == sorted(b) == list(range(1, 9))
    for step in a:
        assert b[step] == pytest.approx(a[step], abs=1e-6), step


def _poisoned_teacher(teacher_dir, tmp_path):
    """A copy of the tiny teacher whose LM head is NaN: KD turns NaN while CE stays finite."""
    model = load_causal_lm(teacher_dir, dtype="float32")
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(torch.full_like(model.lm_head.weight, float("nan")))
    path = tmp_path / "poisoned"
    model.save_pretrained(path)
    make_tokenizer().save_pretrained(path)
    return path


def _nan_config(run_tmp, teacher_dir, over=None):
    """KD from a NaN teacher into a healthy student: only the KD component is NaN."""
    student = {"student.kind": "hf", "student.model": str(teacher_dir)}
    return tiny_config(run_tmp, _poisoned_teacher(teacher_dir, run_tmp), "kd", {**student, **(over or {})})


def test_nan_guard_stops_naming_step_and_component(run_tmp, teacher_dir):
    cfg = _nan_config(run_tmp, teacher_dir)
    with pytest.raises(DSKDError, match=r"step 0: component 'kd'"):
        train(cfg, datamodule=random_batches(n=4), export=False)


def test_nan_guard_skips_counts_and_logs_the_skipped_steps_as_nan(run_tmp, teacher_dir):
    cfg = _nan_config(run_tmp, teacher_dir, {"trainer.nan_policy": "skip"})
    with pytest.raises(DSKDError, match=r"^Step 3, the last step of the run, was skipped .*nan_policy=skip"):
        train(cfg, datamodule=random_batches(n=4))  # every step skipped: it ends diverged, unexported
    run = run_tmp / "runs" / "tiny-kd" / "seed-0"
    assert not (run / "export").exists() and not (run / "summary.json").exists()
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 4  # a skipped step still counts as a step (the schedule moves on)
    assert (saved["dskd"]["skipped_steps"], saved["dskd"]["consecutive_skips"]) == (4, 4)
    teacher = load_causal_lm(teacher_dir, dtype="float32")
    ckpt = saved["state_dict"]
    torch.testing.assert_close(
        ckpt["student.model.layers.1.mlp.up_proj.weight"], teacher.model.layers[1].mlp.up_proj.weight
    )
    steps = [r for r in metrics_rows(run) if r.get("train/skipped")]
    assert [int(r["step"]) for r in steps] == [1, 2, 3, 4]
    assert float(steps[-1]["train/skipped_steps"]) == 4
    for r in steps:  # each skipped step logs its own values, flagged: NaN KD, finite CE
        assert r["train/skipped"] == "1.0" and math.isnan(float(r["train/kd"])), r
        assert math.isnan(float(r["train/loss"])) and math.isfinite(float(r["train/ce"])), r


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        ({"trainer.max_consecutive_skips": 2}, r"Step 2: 3 steps skipped .*trainer.max_consecutive_skips=2"),
        ({"trainer.max_skipped_steps": 1}, r"Step 1: 2 steps skipped .*trainer.max_skipped_steps=1"),
    ],
)
def test_nan_guard_skip_stops_after_too_many_skips(run_tmp, teacher_dir, limit, message):
    cfg = _nan_config(run_tmp, teacher_dir, {"trainer.nan_policy": "skip", **limit})
    with pytest.raises(DSKDError, match=message):
        train(cfg, datamodule=random_batches(n=8), export=False)


def test_nan_guard_skip_stops_at_a_non_finite_parameter(run_tmp, teacher_dir):
    """A student with a NaN LM head: its loss is NaN and the skip stops at once, naming the parameter."""
    poisoned = {"student.kind": "hf", "student.model": str(_poisoned_teacher(teacher_dir, run_tmp))}
    cfg = tiny_config(run_tmp, teacher_dir, "kd", {**poisoned, "trainer.nan_policy": "skip"})
    with pytest.raises(DSKDError, match=r"Step 0: the parameter student.lm_head.weight is no longer finite"):
        train(cfg, datamodule=random_batches(n=4), export=False)


def test_vocabulary_mismatch_is_refused(run_tmp, teacher_dir):
    other = make_model_dir(run_tmp / "other", vocab=VOCAB - 8, layers=1)
    cfg = tiny_config(run_tmp, teacher_dir, "kd", {"student.kind": "hf", "student.model": str(other)})
    with pytest.raises(DSKDError, match="do not share one vocabulary"):
        train(cfg, datamodule=random_batches(n=2), export=False)


@pytest.mark.integration
def test_dskd_train_command_on_the_real_teacher(tmp_path, capsys):
    """`dskd train` on the tiny preset (SmolLM2 teacher, WordNet data), shortened to two small steps."""
    from dskd.cli import main

    over = ["trainer.max_steps=2", "trainer.log_every_n_steps=1", "trainer.limit_val_batches=1"]
    over += ["data.batch_size=1", "data.seq_len=32"]
    over += [f"runs_dir={tmp_path}", "logging.wandb=false", "--no-export", "teacher.mode=online"]
    assert main(["train", "experiments/tiny/kd.yaml", *over]) == 0
    summary = json.loads((tmp_path / "tiny-kd" / "seed-0" / "summary.json").read_text())
    assert summary["global_step"] == 2 and summary["metrics"]["val/ce"] > 0
    assert summary["metrics"]["train/loss"] > 0
    assert '"global_step": 2' in capsys.readouterr().out
