"""Artifacts, lineage, results table and plots in W&B, read back from the real offline run files of a
tiny DSKD training and of its evaluation."""

from __future__ import annotations

import json

import pytest

from dskd.evaluation.plots import plot_scores
from dskd.evaluation.run import publish, write_results
from dskd.evaluation.wandb_results import EvalRun
from dskd.tracking.offline import history, records, run_logs
from dskd.training.run import train

from ..training.tinyrun import make_senses, random_batches, tiny_config


def _artifacts(log) -> list:
    return [r.artifact for r in records(log) if r.HasField("artifact")]


def _record(model, seed, benchmark, metric, value):
    return {
        "model": model, "seed": seed, "benchmark": benchmark, "metric": metric, "value": value,
        "n_items": 4, "chance": 0.5, "seconds": 1.0, "in_average": True, "higher_is_better": True,
    }  # fmt: skip


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")


def test_training_and_evaluation_runs_hold_lineage_table_and_plots(tmp_path, teacher_dir, offline):
    make_senses(tmp_path / "senses", teacher_dir)
    (tmp_path / "artifacts" / "lexicon").mkdir(parents=True)
    (tmp_path / "artifacts" / "lexicon" / "relations.json").write_text("{}")
    cfg = tiny_config(tmp_path, teacher_dir, "dskd", {"logging.wandb": True, "trainer.max_steps": 1})
    export = train(cfg, datamodule=random_batches(n=2))["export_dir"]

    (log,) = run_logs(tmp_path / "runs" / "tiny-dskd" / "seed-0")
    arts = {a.type: a for a in _artifacts(log)}
    assert set(arts) == {"lexicon", "sense-dictionary", "model"}
    assert arts["lexicon"].use_after_commit and arts["sense-dictionary"].use_after_commit  # inputs
    assert not arts["model"].use_after_commit and arts["model"].name == "tiny-dskd-seed0"  # output
    assert set(arts["model"].aliases) == {"latest", "step-1"}
    entries = {e.path: e.ref for e in arts["model"].manifest.contents}
    assert (
        entries["model.safetensors"] == (tmp_path / "runs/tiny-dskd/seed-0/export/model.safetensors").as_uri()
    )
    assert {"config.json", "generation_config.json", "export_meta.json"} <= set(entries)
    assert "README.md" not in entries  # the card changes with every evaluation; the student does not
    trained = arts["model"]

    models = {"teacher": str(teacher_dir), "DSKD@0": export, "DSKD@1": export}
    recs = [_record("teacher", 0, "wic", "acc", 0.7)]
    recs += [_record("DSKD", s, "wic", "acc", v) for s, v in ((0, 0.6), (1, 0.8))]
    cfg.eval.output_dir = str(tmp_path / "results")
    write_results(recs, cfg.eval, models)
    plot_scores(recs, tmp_path / "results" / "scores.png")
    publish(
        cfg.eval,
        EvalRun(cfg.logging.project, cfg.preset, cfg.logging.tags, cfg.logging.artifacts),
        recs,
        models,
    )

    (log,) = run_logs(tmp_path / "results")
    run = next(r.run for r in records(log) if r.HasField("run"))
    assert (run.job_type, run.run_group) == ("eval", "test")
    (row,) = [r for r in history(log) if "eval/results" in r]
    assert row["eval/scores"]["_type"] == "image-file"
    table = json.loads((log.parent / "files" / row["eval/results"]["path"]).read_text())
    assert table["columns"] == ["model", "seeds", "wic acc", "wic acc std", "average", "average std"]
    assert table["data"][0][:4] == ["teacher", 1, 0.7, None]
    assert table["data"][1][:3] == ["DSKD", 2, 0.7] and table["data"][1][3] == pytest.approx(0.1414, abs=1e-4)
    summary = {
        i.key: json.loads(i.value_json)
        for r in records(log)
        if r.HasField("summary")
        for i in r.summary.update
    }
    assert summary["DSKD/wic/acc"] == pytest.approx(0.7) and summary["DSKD/wic/acc_std"] == pytest.approx(
        0.1414, abs=1e-4
    )
    arts = {a.type: a for a in _artifacts(log)}
    assert arts["model"].use_after_commit and arts["model"].name == "tiny-dskd-seed0"  # the scored student
    # the very version the training logged, though eval rewrote the card in the export folder
    assert arts["model"].digest == trained.digest
    assert {e.path: e.digest for e in arts["model"].manifest.contents} == {
        e.path: e.digest for e in trained.manifest.contents
    }
    assert {e.path for e in arts["evaluation"].manifest.contents} == {
        "results.json",
        "table.md",
        "table.csv",
        "scores.png",
    }
    assert "| DSKD | 0.700 ± 0.141 |" in (tmp_path / "runs/tiny-dskd/seed-0/export/README.md").read_text()
