"""The `make bench` harness: ratios, the Markdown table, failures reported without hiding the rest."""

from __future__ import annotations

import json

import benchmarks.harness as bench
from benchmarks.harness import Figure, to_markdown


def good(quick: bool) -> list[Figure]:
    return [Figure("speed", 2.0, "s", baseline=8.0, baseline_name="ref", goal="<= 0.5", met=True)]


def broken(quick: bool) -> list[Figure]:
    raise RuntimeError("boom")


def test_ratio_and_table():
    f = good(False)[0]
    assert f.ratio == 0.25 and Figure("x", 1.0, "s").ratio is None
    table = to_markdown([f, Figure("x", 1.0, "s")])
    assert "| speed | 2 | s | ref | 8 | 0.25 | <= 0.5 | yes |" in table
    assert "| x | 1 | s | - | - | - | - | - |" in table


def test_a_failing_benchmark_is_reported_and_the_others_still_run(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "BENCHMARKS", [f"{__name__}:broken", f"{__name__}:good"])
    assert bench.main(["--out", str(tmp_path)]) == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [f["name"] for f in summary["figures"]] == ["speed"]
    assert len(summary["failures"]) == 1 and "boom" in summary["failures"][0]
    assert "| speed |" in (tmp_path / "summary.md").read_text()
