"""The eval W&B run holds the difference table next to the results table (read back from the offline run)."""

from __future__ import annotations

import json

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


def test_the_eval_run_logs_the_difference_table(tmp_path, monkeypatch):
    cfg = _offline_config(tmp_path, monkeypatch)
    records = [_record("KD", [1.0, 0.0, 1.0, 0.0]), _record("DSKD", [1.0, 0.0, 1.0, 0.0])]
    log_evaluation(cfg.eval, RUN, records, {"KD@0": "kd", "DSKD@0": "dskd"}, ["KD", "DSKD"])
    (log,) = run_logs(tmp_path)
    (row,) = [r for r in history(log) if "eval/differences" in r]
    table = json.loads((log.parent / "files" / row["eval/differences"]["path"]).read_text())
    # identical items: a zero difference with a zero-width interval, not significant
    assert table["columns"] == ["model", "wic acc"] and table["data"] == [["DSKD", "+0.000 [+0.000, +0.000]"]]


def test_the_eval_run_names_the_unavailable_tasks(tmp_path, monkeypatch):
    cfg = _offline_config(tmp_path, monkeypatch)
    missing = {"analogy": "Could not download the analogies asset."}
    log_evaluation(cfg.eval, RUN, [_record("KD", [1.0, 0.0])], {"KD@0": "kd"}, ["KD"], missing)
    (log,) = run_logs(tmp_path)
    (row,) = [r for r in history(log) if "eval/results" in r]
    table = json.loads((log.parent / "files" / row["eval/results"]["path"]).read_text())
    assert table["columns"] == ["model", "wic acc", "analogy", "average"]
    assert table["data"][0] == ["KD", "0.500", "unavailable", "0.500"]
    (run,) = [r.run for r in records(log) if r.HasField("run")]
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["unavailable"] == missing
