"""`dskd eval` end to end on the real teacher with a tiny item count."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dskd.cli import main
from dskd.evaluation.stats import statistic

pytestmark = pytest.mark.integration


def test_dskd_eval_teacher_tiny(tmp_path, smollm2_dir, capsys):
    out = tmp_path / "results"
    rc = main(
        [
            "eval",
            "experiments/tiny/dskd.yaml",
            "eval.max_items=2",
            "eval.heldout_blocks=2",
            f"eval.output_dir={out}",
            "eval.tasks=[analogy,wsd,wic,simlex,heldout]",
            "--model",
            f"teacher={smollm2_dir}",
        ]
    )
    assert rc == 0
    data = json.loads((out / "results.json").read_text())
    got = {(r["benchmark"], r["metric"]) for r in data["results"]}
    assert {
        ("analogy", "acc"),
        ("wsd", "acc"),
        ("wic", "acc"),
        ("simlex", "spearman"),
        ("heldout", "perplexity"),
    } <= got
    for r in data["results"]:
        assert r["model"] == "teacher" and r["seed"] == 0 and r["seconds"] >= 0 and r["n_items"] >= 1
        if r["in_table"]:  # the per-item values of the paired bootstrap give back the value
            assert len(r["items"]) == r["n_items"]
            ref = None if r["reference"] is None else np.array(r["reference"])
            assert statistic(r["statistic"])(np.array(r["items"]), ref) == pytest.approx(r["value"])
    table = (out / "table.md").read_text()
    assert "| chance |" in table and "| items |" in table and "| teacher |" in table
    assert (out / "scores.png").read_bytes()[:4] == b"\x89PNG"
    assert "chance" in capsys.readouterr().out


def test_dskd_eval_rejects_unknown_task(tmp_path, capsys):
    rc = main(["eval", "experiments/tiny/dskd.yaml", "eval.tasks=[nope]", f"eval.output_dir={tmp_path}"])
    assert rc == 2
    assert "Unknown eval task 'nope'" in capsys.readouterr().err
