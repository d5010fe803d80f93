"""Result tables: chance row, item counts, mean ± std over seeds, averages (hand-computed)."""

from __future__ import annotations

import csv
import io

import pytest

from dskd.evaluation.tables import aggregate, render_csv, render_markdown


def rec(model, seed, bench, metric, value, chance, n, in_average=True):
    return {
        "model": model,
        "seed": seed,
        "benchmark": bench,
        "metric": metric,
        "value": value,
        "chance": chance,
        "n_items": n,
        "seconds": 1.0,
        "in_average": in_average,
        "higher_is_better": True,
    }


RECORDS = [
    rec("teacher", 0, "bigbench/odd_one_out", "acc", 0.40, 0.25, 86),
    rec("teacher", 0, "wic", "acc", 0.60, 0.5, 200),
    rec("teacher", 0, "simlex", "spearman", 0.20, 0.0, 999, in_average=False),
    rec("dskd", 0, "bigbench/odd_one_out", "acc", 0.30, 0.25, 86),
    rec("dskd", 0, "wic", "acc", 0.50, 0.5, 200),
    rec("dskd", 0, "simlex", "spearman", 0.10, 0.0, 999, in_average=False),
    rec("dskd", 1, "bigbench/odd_one_out", "acc", 0.34, 0.25, 86),
    rec("dskd", 1, "wic", "acc", 0.56, 0.5, 200),
    rec("dskd", 1, "simlex", "spearman", 0.14, 0.0, 999, in_average=False),
]


def test_aggregate_mean_std_over_seeds():
    agg = aggregate(RECORDS)
    mean, std = agg["dskd"]["bigbench/odd_one_out acc"]
    assert mean == pytest.approx(0.32)
    assert std == pytest.approx(0.0282842712)  # sample std of (0.30, 0.34): 0.02 * sqrt(2)
    # per-seed averages over the in_average columns: seed 0 (0.30+0.50)/2=0.40, seed 1 (0.34+0.56)/2=0.45
    mean, std = agg["dskd"]["average"]
    assert mean == pytest.approx(0.425)
    assert std == pytest.approx(0.0353553391)  # 0.05 / sqrt(2)
    assert agg["teacher"]["average"] == (pytest.approx(0.5), None)


def test_markdown_has_rows_chance_items_and_pm():
    text = render_markdown(RECORDS, ["teacher", "dskd"])
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert lines[0] == "| model | bigbench/odd_one_out acc | wic acc | simlex spearman | average |"
    assert lines[2] == "| teacher | 0.400 | 0.600 | 0.200 | 0.500 |"
    assert lines[3] == "| dskd | 0.320 ± 0.028 | 0.530 ± 0.042 | 0.120 ± 0.028 | 0.425 ± 0.035 |"
    assert lines[4] == "| chance | 0.250 | 0.500 | 0.000 | 0.375 |"  # average chance = (0.25 + 0.5) / 2
    assert lines[5] == "| items | 86 | 200 | 999 |  |"


def test_secondary_metrics_stay_out_of_the_table():
    extra = rec("teacher", 0, "wic", "acc_norm", 0.9, 0.5, 200, in_average=False) | {"in_table": False}
    assert "acc_norm" not in render_markdown([*RECORDS, extra])


def test_csv_matches_markdown_rows():
    rows = list(csv.reader(io.StringIO(render_csv(RECORDS))))
    assert rows[0][0] == "model" and [r[0] for r in rows[1:]] == ["teacher", "dskd", "chance", "items"]
    assert rows[2][1] == "0.320 ± 0.028"
