"""`dskd ablate`: sweep files, grid expansion, artifacts per point, summary table and plot, dashboard."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from dskd.cli import main
from dskd.core.errors import ArtifactMismatchError, ConfigError, DSKDError
from dskd.launch import ablate
from tests.test_notebooks import assert_png, execute_notebook

ROOT = Path(__file__).resolve().parents[2]
SWEEPS = sorted((ROOT / "experiments" / "sweeps").glob("*.yaml"))
BASE = str(ROOT / "experiments" / "tiny" / "dskd.yaml")


def _sweep_file(tmp: Path, parameters: dict, method: str = "grid", name: str = "abl", extra_cmd=()) -> Path:
    path = tmp / f"{name}.yaml"
    data = {
        "name": name,
        "program": "dskd",
        "method": method,
        "metric": {"name": "val/loss", "goal": "minimize"},
        "parameters": parameters,
        "command": ["${env}", "dskd", "train", BASE, *extra_cmd, "${args_no_hyphens}"],
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ---------------------------------------------------------------- sweep files and the grid


def test_shipped_sweeps_cover_the_paper_knobs():
    knobs = set()
    for path in SWEEPS:
        sweep = ablate.load_sweep(path)
        knobs |= set(sweep.knobs)
        points = ablate.point_configs(sweep)
        assert len({p.run_dir for p in points}) == len(points) == math.prod(map(len, sweep.knobs.values()))
        assert {p.cfg.preset for p in points} == {sweep.name}
        assert {p.cfg.artifacts_dir for p in points} == {"artifacts/tiny"}  # the tiny preset's artifacts
        if "senses.k" in sweep.knobs:  # one dictionary per k
            assert len({p.cfg.senses.output_dir for p in points}) == len(points)
    expected = {"loss.sense.weight", "loss.sense.kappa", "senses.k", "loss.sense.margin"}
    assert expected | {"loss.sense.positives", "loss.sense.negatives"} <= knobs
    assert {"loss.sense.hinge", "loss.sense.pull"} <= knobs  # DSKD+'s teacher-relative switches
    old_plus = ablate.point_configs(ablate.load_sweep(ROOT / "experiments/sweeps/dskd_plus_margin.yaml"))
    assert {p.cfg.loss.sense.hinge for p in old_plus} == {"absolute"}  # the quantile margin's own hinge
    tiny = ablate.load_sweep(ROOT / "experiments/sweeps/tiny_kappa_weight.yaml")
    assert tiny.knobs == {"loss.sense.kappa": [3, 5], "loss.sense.weight": [0.5, 1.5]}
    assert tiny.fixed["trainer.max_steps"] == 40


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_a_wandb_agent_command_gives_the_same_config_as_the_local_grid(path):
    """W&B's own macro expansion of `${args_no_hyphens}` run through `dskd train`'s loader."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    from dskd.config.loading import load_config

    data = yaml.safe_load(path.read_text())
    assert data["program"] and data["method"] == "grid"
    sweep = ablate.load_sweep(path)
    for point in ablate.point_configs(sweep):
        params = {**{k: v["value"] for k, v in data["parameters"].items() if "value" in v}, **point.settings}
        args = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
        argv = []
        for item in data["command"]:
            argv += args["args_no_hyphens"] if item == "${args_no_hyphens}" else [item]
        assert argv[1:3] == ["dskd", "train"]
        cfg = load_config(ROOT / argv[3], argv[4:])
        cfg.logging.tags = point.cfg.logging.tags  # the local runner adds its ablation tag
        assert cfg == point.cfg


def test_grid_is_the_product_with_the_last_knob_fastest(tmp_path):
    sweep = ablate.load_sweep(
        _sweep_file(
            tmp_path,
            {"loss.sense.kappa": {"values": [1, 2]}, "loss.sense.margin": {"values": [0.5, 1.0, 2.0]}},
        )
    )
    assert ablate.grid(sweep) == [
        {"loss.sense.kappa": 1, "loss.sense.margin": 0.5},
        {"loss.sense.kappa": 1, "loss.sense.margin": 1.0},
        {"loss.sense.kappa": 1, "loss.sense.margin": 2.0},
        {"loss.sense.kappa": 2, "loss.sense.margin": 0.5},
        {"loss.sense.kappa": 2, "loss.sense.margin": 1.0},
        {"loss.sense.kappa": 2, "loss.sense.margin": 2.0},
    ]


def test_points_get_fixed_and_extra_overrides_and_distinct_names(tmp_path):
    path = _sweep_file(
        tmp_path,
        {
            "trainer.max_steps": {"value": 7},
            "loss.sense.positives": {"values": [True, False]},
            "loss.sense.kappa": {"values": [1, 3]},
        },
        extra_cmd=["seed=3"],
    )
    points = ablate.point_configs(ablate.load_sweep(path), ["loss.sense.margin=0.25", "runs_dir=/x"])
    assert [p.cfg.name for p in points] == [
        "positivesTrue-kappa1",
        "positivesTrue-kappa3",
        "positivesFalse-kappa1",
        "positivesFalse-kappa3",
    ]
    for p in points:
        assert p.cfg.trainer.max_steps == 7 and p.cfg.seed == 3 and p.cfg.loss.sense.margin == 0.25
        assert p.cfg.loss.sense.positives is p.settings["loss.sense.positives"]
        assert p.cfg.loss.sense.kappa == p.settings["loss.sense.kappa"]
        assert "ablation:abl" in p.cfg.logging.tags
        assert p.run_dir == Path("/x") / p.cfg.name / "seed-3"
    with pytest.raises(ConfigError, match="loss.sense.kappa clash"):
        ablate.point_configs(ablate.load_sweep(path), ["loss.sense.kappa=2"])


@pytest.mark.parametrize("value", ["true", "3", "", "a: b: c", "x y", 0.5, True, None, [{"kind": "tsv"}]])
def test_override_values_survive_the_round_trip_through_the_config_loader(value):
    from dskd.config.loading import load_config

    item = ablate.format_override("k", value).split("=", 1)[1]
    assert (yaml.safe_load(item) if item else "") == value  # the loader reads values as YAML
    if isinstance(value, str):  # and a string key gets the very string
        assert load_config(BASE, [ablate.format_override("logging.project", value)]).logging.project == value


def test_points_sharing_a_run_folder_are_refused(tmp_path):
    path = _sweep_file(tmp_path, {"name": {"value": "same"}, "loss.sense.kappa": {"values": [1, 3]}})
    with pytest.raises(ConfigError, match="share the run folder"):
        ablate.point_configs(ablate.load_sweep(path))


@pytest.mark.parametrize(
    "parameters, method, match",
    [
        ({"loss.sense.kappa": {"values": [1, 3]}}, "random", "runs grids only"),
        ({"optim.lr": {"min": 1e-5, "max": 1e-4}}, "grid", "distributions cannot be run"),
        ({"seed": {"value": 1}}, "grid", "has no knob"),
    ],
)
def test_sweeps_that_are_no_grid_are_refused(tmp_path, parameters, method, match):
    with pytest.raises(ConfigError, match=match):
        ablate.load_sweep(_sweep_file(tmp_path, parameters, method))


def test_sweep_without_a_dskd_train_command_is_refused(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump({"method": "grid", "parameters": {"seed": {"values": [1, 2]}}, "program": "x"})
    )
    with pytest.raises(ConfigError, match="dskd train BASE.yaml"):
        ablate.load_sweep(path)
    with pytest.raises(DSKDError, match="not found"):
        ablate.load_sweep(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "text, what",
    [
        ("- a\n- b\n", "Sweep file '{path}' is a YAML list"),
        (
            "method: grid\ncommand: [dskd, train, b.yaml]\nparameters: [a]\n",
            "Sweep '{path}': its parameters is",
        ),
        (
            "method: grid\ncommand: [dskd, train, b.yaml]\nparameters: {seed: {values: [1]}}\nmetric: x\n",
            "Sweep '{path}': its metric is a YAML str",
        ),
    ],
)
def test_a_sweep_file_of_the_wrong_shape_is_one_line(tmp_path, capsys, text, what):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    assert main(["ablate", str(path)]) == 2  # before: an AttributeError traceback
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"dskd: error: {what.format(path=path)}") and "where a mapping" in line


# ---------------------------------------------------------------- artifacts per point


def test_a_dictionary_built_with_another_k_is_refused_before_building_anything(tmp_path):
    import torch

    from dskd.senses import SenseDictionary

    path = _sweep_file(tmp_path, {"senses.k": {"values": [5, 3]}, "seed": {"values": [0, 1]}})
    points = ablate.point_configs(ablate.load_sweep(path), [f"artifacts_dir={tmp_path}/art"])
    senses_dir = Path(points[0].cfg.senses.output_dir)  # shared by all points: only k=5 fits
    meta = {"teacher": "t", "tokenizer_fingerprint": "f", "hidden_size": 4, "k": 5, "keying": "predicted"}
    SenseDictionary.from_padded(torch.zeros(1, 5, 4), torch.tensor([5]), torch.tensor([7]), meta).save(
        senses_dir
    )
    points[0].cfg.save(senses_dir)
    with pytest.raises(ArtifactMismatchError, match=r"senses.k: built 5, needed 3.*senses-k\$\{senses.k\}"):
        ablate.prepare(points)
    assert not (tmp_path / "art" / "lexicon").exists()  # refused before the lexicon was built


# ---------------------------------------------------------------- reading runs, table, plot


def test_metrics_csv_series_and_final_metrics(tmp_path):
    path = tmp_path / "metrics.csv"
    rows = [
        {"epoch": 0, "step": 0, "train/loss": 5.0, "train/sense": "", "val/loss": ""},
        {"epoch": 0, "step": 1, "train/loss": 4.0, "train/sense": 0.5, "val/loss": ""},
        {"epoch": 0, "step": 2, "train/loss": 3.0, "train/sense": 0.4, "val/loss": ""},
        {"epoch": 0, "step": 3, "train/loss": 2.0, "train/sense": 0.3, "val/loss": ""},
        {"epoch": 0, "step": 4, "train/loss": 1.0, "train/sense": 0.2, "val/loss": ""},
        {"epoch": 0, "step": 4, "train/loss": "", "train/sense": "", "val/loss": 2.5},
    ]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    series = ablate.read_metrics_csv(path)
    assert series["train/loss"] == [(0, 5.0), (1, 4.0), (2, 3.0), (3, 2.0), (4, 1.0)]
    assert series["train/sense"] == [(1, 0.5), (2, 0.4), (3, 0.3), (4, 0.2)]
    assert series["val/loss"] == [(4, 2.5)]
    finals = ablate.final_metrics(series)
    assert finals["train/loss"] == pytest.approx((2.0 + 1.0) / 2)  # last ceil(0.25 * 5) = 2 values
    assert finals["train/sense"] == pytest.approx(0.2)  # last ceil(0.25 * 4) = 1 value
    assert finals["val/loss"] == 2.5
    on_policy = {
        "train/ce": [(0, 4.0), (1, 3.0), (2, math.nan), (3, 1.0), (4, math.nan)],
        "train/x": [(0, math.nan)],
    }
    finals = ablate.final_metrics(on_policy)  # NaN: CE did not apply (an on-policy step)
    assert finals["train/ce"] == pytest.approx(1.0) and math.isnan(finals["train/x"])


def _result(name: str, kappa: int, scale: float) -> ablate.RunResult:
    series = {
        "train/loss": [(s, scale * (10 - s)) for s in range(10)],
        "train/sense": [(s, scale / (s + 1)) for s in range(10)],
        "val/loss": [(9, scale)],
    }
    return ablate.RunResult(
        name, {"loss.sense.kappa": kappa}, Path(name), series, ablate.final_metrics(series)
    )


def test_summary_table_and_plot(tmp_path):
    results = [_result("kappa1", 1, 1.0), _result("kappa3", 3, 2.0)]
    md, csv_path = ablate.write_table(results, tmp_path, "Ablation t")
    text = md.read_text()
    assert "| run | loss.sense.kappa | steps | train/loss | train/sense | val/loss |" in text
    # the last ceil(2.5) = 3 of 10 values: train/loss scale * (3 + 2 + 1) / 3 = 2 * scale,
    # train/sense scale * (1/8 + 1/9 + 1/10) / 3 = 0.11204 * scale
    assert "| kappa1 | 1 | 9 | 2 | 0.112 | 1 |" in text
    assert "| kappa3 | 3 | 9 | 4 | 0.2241 | 2 |" in text
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["kappa1", "kappa3"]
    assert float(rows[1]["train/loss"]) == pytest.approx(4.0)
    assert ablate.panels(results) == (["train/loss", "train/sense"], ["val/loss"])
    assert_png(ablate.plot(results, tmp_path / "a.png", "t"))


# ---------------------------------------------------------------- W&B dashboard


def test_dashboard_offline_says_so_and_points_to_the_local_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    path = _sweep_file(tmp_path, {"loss.sense.kappa": {"values": [1, 3]}})
    assert main(["ablate", str(path), "--dashboard", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "offline" in err and str(tmp_path / "out" / "summary.md") in err and "wandb sync" in err


def test_report_draws_the_panels_of_the_local_plot():
    sweep = ablate.load_sweep(ROOT / "experiments/sweeps/tiny_kappa_weight.yaml")
    report = ablate.build_report(sweep, "tiny-ablate-kappa-weight", "dskd", "someone")
    grid, results = (b for b in report.blocks if type(b).__name__ == "PanelGrid")
    titles = [p.title for p in grid.panels]
    assert titles[: len(ablate.CURVES)] == list(ablate.CURVES)
    assert titles[len(ablate.CURVES) : -1] == [f"final {m}" for m in ablate.FINALS]
    assert "tiny-ablate-kappa-weight" in str(grid.runsets[0].filters)
    assert (report.project, report.entity) == ("dskd", "someone")
    # the saved spec (wandb_workspaces' own model) plots against the trainer's step, not W&B's _step
    specs = [p._to_model().model_dump(by_alias=True, mode="json") for p in grid.panels[: len(ablate.CURVES)]]
    assert {(s["viewType"], s["config"]["xAxis"]) for s in specs} == {
        ("Run History Line Plot", "trainer/global_step")
    }
    assert [t.table_name for t in results.panels] == ["eval/results", "eval/differences"]
    assert all(t.table_name in str(t._to_model().model_dump(mode="json")) for t in results.panels)


# ---------------------------------------------------------------- the real thing, tiny


@pytest.mark.integration
def test_dskd_ablate_runs_a_2x2_grid_with_a_dictionary_per_k(tmp_path, capsys):
    """senses.k x loss.sense.weight on the real teacher: per-k dictionaries, 4 runs, table, plot, notebook."""
    from dskd.assets import asset_path
    from dskd.senses import SenseDictionary

    words = ["good", "bad", "fine", "large", "big", "small", "hot", "cold", "happy", "sad", "fast", "slow"]
    pairs = ["good bad antonym", "good fine synonym", "large big synonym", "big small antonym"]
    pairs += ["hot cold antonym", "happy sad antonym", "fast slow antonym", "small little synonym"]
    (tmp_path / "pairs.tsv").write_text("".join(p.replace(" ", "\t") + "\n" for p in pairs))
    lines = (asset_path("wordnet-corpus") / "examples.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [t for t in (json.loads(x)["text"] for x in lines) if set(t.split()) & set(words)][:310]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:300]))
    (tmp_path / "val.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[300:]))
    fixed = {
        "artifacts_dir": str(tmp_path / "art"),
        "runs_dir": str(tmp_path / "runs" / "${preset}"),
        "preset": "abl",
        "name": "k${senses.k}-w${loss.sense.weight}",
        "senses.output_dir": "${artifacts_dir}/senses-k${senses.k}",
        "lexicon.sources": [{"kind": "tsv", "path": str(tmp_path / "pairs.tsv")}],
        "senses.sources": [{"kind": "jsonl", "path": str(tmp_path / "train.jsonl")}],
        "senses.max_tokens": 800,
        "data.train": [{"kind": "jsonl", "path": str(tmp_path / "train.jsonl")}],
        "data.val": [{"kind": "jsonl", "path": str(tmp_path / "val.jsonl")}],
        "data.seq_len": 32,
        "data.batch_size": 2,
        "trainer.max_steps": 2,
        "trainer.log_every_n_steps": 1,
    }
    params = {k: {"value": v} for k, v in fixed.items()}
    params |= {"senses.k": {"values": [2, 3]}, "loss.sense.weight": {"values": [0.5, 1.5]}}
    sweep = _sweep_file(tmp_path, params)
    out = tmp_path / "out"
    assert main(["ablate", str(sweep), "--out", str(out), "--no-progress"]) == 0
    for k in (2, 3):
        d = SenseDictionary.load(tmp_path / "art" / f"senses-k{k}")
        assert d.k == k and len(d) > 50
    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["senses.k"], r["loss.sense.weight"]) for r in rows] == [
        ("2", "0.5"),
        ("2", "1.5"),
        ("3", "0.5"),
        ("3", "1.5"),
    ]
    for r in rows:
        assert r["steps"] == "2"  # train steps 1 and 2, validation logged at step 2
        for m in ("train/loss", "train/ce", "train/kd", "val/loss", "val/top1_agreement"):
            assert math.isfinite(float(r[m])), (r["run"], m)
        assert float(r["train/sense"]) > 0 and float(r["train/sense_pos"]) > 0, r
        run_dir = tmp_path / "runs" / "abl" / r["run"] / "seed-0"
        summary = json.loads((run_dir / "summary.json").read_text())
        assert float(r["val/loss"]) == pytest.approx(summary["metrics"]["val/loss"], rel=1e-5)
    # same data and seed: CE + KD of the first step agree, the weighted sense term does not
    first = {
        r["run"]: ablate.read_metrics_csv(tmp_path / "runs/abl" / r["run"] / "seed-0/metrics.csv")
        for r in rows
    }
    ce0 = {run: s["train/ce"][0][1] for run, s in first.items()}
    assert max(ce0.values()) - min(ce0.values()) < 1e-4
    loss0 = {
        run: s["train/loss"][0][1] - s["train/ce"][0][1] - s["train/kd"][0][1] for run, s in first.items()
    }
    sense0 = {run: s["train/sense"][0][1] for run, s in first.items()}
    for run in first:
        assert loss0[run] == pytest.approx(float(run.split("-w")[1]) * sense0[run], rel=1e-3, abs=1e-4)
    assert sense0["k2-w0.5"] != sense0["k3-w0.5"]  # another dictionary, another sense term

    # the W&B offline run log holds the same series (the fallback reader when there is no CSV)
    run_dir = tmp_path / "runs" / "abl" / "k3-w1.5" / "seed-0"
    assert ablate.read_wandb_history(run_dir) == ablate.read_metrics_csv(run_dir / "metrics.csv")
    shutil.copytree(run_dir / "wandb", tmp_path / "wandb-only" / "wandb")
    assert (
        ablate.load_run(tmp_path / "wandb-only", "x", {}).finals == ablate.load_run(run_dir, "x", {}).finals
    )
    assert "| k2-w0.5 | 2 | 0.5 | 2 |" in (out / "summary.md").read_text()
    assert_png(out / "ablation.png", min_bytes=30_000)
    manifest = json.loads((out / "ablation.json").read_text())
    assert manifest["group"] == "abl" and len(manifest["points"]) == 4

    capsys.readouterr()
    assert main(["ablate", str(sweep), "--out", str(out), "--no-progress"]) == 0  # everything done before
    assert capsys.readouterr().out.count("done before") == 4

    figures = tmp_path / "figures"
    execute_notebook("ablations", {"runs_root": str(tmp_path / "runs"), "output_dir": str(figures)}, tmp_path)
    assert_png(figures / "ablation_abl.png", min_bytes=30_000)
