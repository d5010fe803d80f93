"""`dskd eval` end to end on the real teacher with a tiny item count."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dskd.cli import main
from dskd.core.devices import numerics
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
    assert data["numerics"] == numerics()  # the kernel path and threads the numbers came from
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


def test_an_unavailable_asset_leaves_out_its_task_only(tmp_path, smollm2_dir, home_without, capsys):
    home = home_without("analogies", "wordnet-corpus", "simlex999", "shakespeare")
    out = tmp_path / "results"
    args = ["experiments/smoke/dskd.yaml", "eval.max_items=2", "eval.heldout_blocks=2"]
    rc = main(["eval", *args, f"eval.output_dir={out}", "--model", "teacher=smollm2-135m-instruct"])
    err = capsys.readouterr().err
    assert rc == 3 and "exit status 3" in err
    (line,) = [x for x in err.splitlines() if x.startswith("[eval] analogy: unavailable: ")]
    reason = line.removeprefix("[eval] analogy: unavailable: ")
    assert "'analogies'" in reason and "dskd assets fetch analogies" in reason
    assert not (home / "assets" / "analogies").exists()
    data = json.loads((out / "results.json").read_text())
    assert data["unavailable"] == {"analogy": reason}
    assert data["config"]["tasks"] == ["analogy", "wic", "simlex", "heldout"]  # the smoke preset's suite
    values = {(r["benchmark"], r["metric"]): r["value"] for r in data["results"]}
    assert {"wic", "simlex", "heldout"} == {b for b, _ in values} and all(np.isfinite(list(values.values())))
    table = (out / "table.md").read_text()
    lines = [x for x in table.splitlines() if x.startswith("|")]
    assert (
        lines[0]
        == "| model | wic acc | simlex spearman | heldout perplexity | heldout nats_per_byte | analogy | average |"  # noqa: E501
    )
    header, row = ([c.strip() for c in line.strip("|").split("|")] for line in (lines[0], lines[2]))
    teacher = dict(zip(header, row))
    assert teacher["analogy"] == "unavailable"
    assert teacher["average"] == teacher["wic acc"] == f"{values['wic', 'acc']:.3f}"  # over what is there
    assert f"- analogy: unavailable — {reason}" in table and "of the available tasks" in table
    assert "analogy" in (out / "table.csv").read_text().splitlines()[0]
    assert (out / "scores.png").read_bytes()[:4] == b"\x89PNG"
