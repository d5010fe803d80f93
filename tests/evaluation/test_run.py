"""The results folder of `dskd eval`: no students is said, richer results and foreign files are kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dskd.cli import main
from dskd.core.errors import DSKDError
from dskd.core.io import provenance, write_json_atomic
from dskd.core.outputs import mark_output
from dskd.evaluation.run import check_results_folder, discover_models

CONFIG = Path(__file__).resolve().parents[2] / "experiments" / "tiny" / "dskd.yaml"
EARLIER = {"teacher": "t", "KD@0": "runs/kd/seed-0/export", "DSKD@0": "runs/dskd/seed-0/export"}


def earlier_results(out: Path) -> str:
    """A results folder of an evaluation of the teacher and two students; returns results.json's text."""
    out.mkdir(parents=True)
    mark_output(out, "eval")
    write_json_atomic(
        out / "results.json", {"provenance": provenance("eval", {"models": EARLIER}), "results": []}
    )
    return (out / "results.json").read_text()


def test_eval_without_students_says_so_and_keeps_richer_results(tmp_path, capsys):
    out = tmp_path / "results"
    before = earlier_results(out)
    rc = main(["eval", str(CONFIG), f"runs_dir={tmp_path / 'no-runs'}", f"eval.output_dir={out}"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no students to evaluate" in err and "evaluating the teacher only" in err
    assert "holds results of DSKD@0, KD@0, which this evaluation (teacher) would drop" in err
    assert "--overwrite" in err.splitlines()[-1]
    assert (out / "results.json").read_text() == before


def test_results_folder_rules(tmp_path):
    out = tmp_path / "results"
    earlier_results(out)
    check_results_folder(out, {**EARLIER, "KD@1": "runs/kd/seed-1/export"})  # more models: fine
    check_results_folder(out, {"teacher": "t"}, overwrite=True)
    with pytest.raises(DSKDError, match="holds results of KD@0"):
        check_results_folder(out, {"teacher": "t", "DSKD@0": "x"})
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "table.md").write_text("my own table")
    with pytest.raises(DSKDError, match="holds files not written by dskd"):
        check_results_folder(tmp_path / "mine", EARLIER)
    export = tmp_path / "runs" / "dskd" / "seed-0" / "export"
    export.mkdir(parents=True)
    with pytest.raises(DSKDError, match="holds an input of this eval stage"):
        check_results_folder(tmp_path / "runs", {"DSKD@0": str(export)}, overwrite=True)


def test_damaged_results_json_is_one_line(tmp_path):
    out = tmp_path / "results"
    earlier_results(out)
    (out / "results.json").write_text("{")
    with pytest.raises(DSKDError, match=r"results.json \(JSONDecodeError.*--overwrite"):
        check_results_folder(out, {"teacher": "t"})
    assert json.loads((out / ".dskd-artifact.json").read_text())["stage"] == "eval"


def _export(runs: Path, run: str, seed: int, config: str | None) -> str:
    """A run folder with an exported student and (unless None) this config.yaml; the export's path."""
    export = runs / run / f"seed-{seed}" / "export"
    export.mkdir(parents=True)
    (export / "config.json").write_text("{}")
    if config is not None:
        (export.parent / "config.yaml").write_text(config)
    return str(export)


def test_discovered_students_are_named_by_their_label_or_method_as_reproduce_names_them(tmp_path):
    runs = tmp_path / "runs"
    kd = [_export(runs, "tiny-kd", s, "method: kd\nlabel: ''\n") for s in (0, 1)]
    plus = _export(runs, "tiny-dskd-plus", 0, "method: dskd\nlabel: DSKD+\n")
    # two DSKD runs without a label: they would both be DSKD@0, so each keeps its run name
    kappa = [_export(runs, f"tiny-dskd-kappa{k}", 0, "method: dskd\n") for k in (2, 4)]
    unreadable = _export(runs, "old-run", 0, None)
    assert discover_models("t", str(runs)) == {
        "teacher": "t",
        "KD@0": kd[0],
        "KD@1": kd[1],
        "DSKD+@0": plus,
        "tiny-dskd-kappa2@0": kappa[0],
        "tiny-dskd-kappa4@0": kappa[1],
        "old-run@0": unreadable,
    }
