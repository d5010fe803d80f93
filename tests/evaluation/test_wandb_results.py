"""The eval W&B run's tables hold numbers (read back from the offline run): the results, the differences to
the baseline with their interval bounds, and chance and item counts in a table of their own."""

from __future__ import annotations

import json

import pytest

from dskd.config.loading import config_from_dict
from dskd.evaluation.wandb_results import EvalRun, log_evaluation
from dskd.tracking.offline import history, records, run_logs


def _record(model: str, items: list[float]) -> dict:
    return {
        "model": model, "seed": 0, "benchmark": "wic", "metric": "acc", "value": sum(items) / len(items),
        "n_items": len(items), "chance": 0.5, "seconds": 1.0, "in_average": True, "higher_is_better": True,
        "items": items, "statistic": "mean", "reference": None,
    }  # fmt: skip


def _offline_config(tmp_path, monkeypatch):
    """A config whose eval run (:data:`RUN`) goes to an offline W&B run in ``tmp_path``."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    return config_from_dict({"preset": "test", "eval": {"output_dir": str(tmp_path)}})


RUN = EvalRun(project="dskd", group="test", tags=[], artifacts="off")


def _table(log, key):
    (row,) = [r for r in history(log) if key in r]
    return json.loads((log.parent / "files" / row[key]["path"]).read_text())


def test_the_eval_run_tables_hold_numbers_sortable_in_wandb(tmp_path, monkeypatch):
    cfg = _offline_config(tmp_path, monkeypatch)
    records = [
        _record("KD", [1.0, 0.0, 1.0, 0.0]),
        {**_record("DSKD", [1.0, 1.0, 1.0, 0.0]), "seed": 0},
        {**_record("DSKD", [1.0, 1.0, 0.0, 0.0]), "seed": 1},
    ]
    models = {"KD@0": "kd", "DSKD@0": "dskd0", "DSKD@1": "dskd1"}
    log_evaluation(cfg.eval, RUN, records, models, ["KD", "DSKD"])
    (log,) = run_logs(tmp_path)

    results = _table(log, "eval/results")
    assert results["columns"] == ["model", "seeds", "wic acc", "wic acc std", "average", "average std"]
    assert results["data"][0] == ["KD", 1, 0.5, None, 0.5, None]  # one seed: no std
    dskd = results["data"][1]
    assert dskd[:3] == ["DSKD", 2, 0.625] and dskd[3] == pytest.approx(0.1767767)  # stdev(0.75, 0.5)
    assert all(isinstance(v, float) for v in dskd[2:])  # numbers, not "0.625 ± 0.177"

    diffs = _table(log, "eval/differences")
    assert diffs["columns"] == ["model", "wic acc", "wic acc lo", "wic acc hi"]
    ((model, diff, lo, hi),) = diffs["data"]
    assert model == "DSKD" and diff == pytest.approx(0.125) and lo <= diff <= hi
    assert all(isinstance(v, float) for v in (diff, lo, hi))

    benchmarks = _table(log, "eval/benchmarks")  # chance and items: not rows among the models
    assert benchmarks["columns"] == ["metric", "chance", "items", "higher_is_better"]
    assert benchmarks["data"] == [["wic acc", 0.5, 4, True]]
    assert {r[0] for r in results["data"]} == {"KD", "DSKD"}


def test_identical_items_give_a_zero_difference_with_a_zero_width_interval(tmp_path, monkeypatch):
    cfg = _offline_config(tmp_path, monkeypatch)
    records = [_record("KD", [1.0, 0.0, 1.0, 0.0]), _record("DSKD", [1.0, 0.0, 1.0, 0.0])]
    log_evaluation(cfg.eval, RUN, records, {"KD@0": "kd", "DSKD@0": "dskd"}, ["KD", "DSKD"])
    (log,) = run_logs(tmp_path)
    assert _table(log, "eval/differences")["data"] == [["DSKD", 0.0, 0.0, 0.0]]


def test_the_eval_run_names_the_unavailable_tasks(tmp_path, monkeypatch):
    cfg = _offline_config(tmp_path, monkeypatch)
    missing = {"analogy": "Could not download the analogies asset."}
    log_evaluation(cfg.eval, RUN, [_record("KD", [1.0, 0.0])], {"KD@0": "kd"}, ["KD"], missing)
    (log,) = run_logs(tmp_path)
    table = _table(log, "eval/results")
    assert table["columns"] == [
        "model", "seeds", "wic acc", "wic acc std", "analogy", "analogy std", "average", "average std"
    ]  # fmt: skip
    assert table["data"][0] == ["KD", 1, 0.5, None, None, None, 0.5, None]  # no value, not "unavailable"
    (run,) = [r.run for r in records(log) if r.HasField("run")]
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["unavailable"] == missing
