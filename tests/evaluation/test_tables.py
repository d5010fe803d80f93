"""Result tables: chance row, item counts, mean ± std over seeds, averages (hand-computed)."""

from __future__ import annotations

import csv
import io
import math

import pytest

from dskd.core.errors import DSKDError
from dskd.evaluation.tables import aggregate, difference_rows, differences, render_csv, render_markdown


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


def item_rec(model, seed, bench, metric, items, statistic="mean", reference=None, higher_is_better=True):
    values = {"mean": lambda v: sum(v) / len(v), "exp_mean": lambda v: math.exp(sum(v) / len(v))}
    r = rec(model, seed, bench, metric, values[statistic](items), None, len(items), in_average=False)
    return r | {
        "items": items,
        "statistic": statistic,
        "reference": reference,
        "higher_is_better": higher_is_better,
    }


PAIRED = [
    rec("teacher", 0, "wic", "acc", 0.9, 0.5, 4),  # no per-item values: no difference row
    item_rec("KD", 0, "wic", "acc", [1.0, 0.0, 1.0, 0.0]),
    item_rec("KD", 1, "wic", "acc", [1.0, 1.0, 0.0, 0.0]),
    item_rec("KD", 0, "heldout", "perplexity", [1.0, 2.0], "exp_mean", higher_is_better=False),
    item_rec("DSKD", 0, "wic", "acc", [1.0, 1.0, 1.0, 0.0]),
    item_rec("DSKD", 1, "wic", "acc", [1.0, 1.0, 0.0, 1.0]),
    item_rec("DSKD", 0, "heldout", "perplexity", [0.5, 1.5], "exp_mean", higher_is_better=False),
    item_rec("DSKD+", 0, "wic", "acc", [1.0, 0.0, 1.0, 0.0]),
    item_rec("DSKD+", 1, "wic", "acc", [1.0, 1.0, 0.0, 0.0]),
]


def test_difference_table_hand_computed():
    text = render_markdown(PAIRED, ["teacher", "KD", "DSKD", "DSKD+"])
    head, _, diff_part = text.partition("### Difference to KD (95% paired-bootstrap interval)")
    assert "| KD | 0.500 ± 0.000 | 4.482 |" in head  # the first table is unchanged: e^1.5 = 4.482
    lines = [line for line in diff_part.splitlines() if line.startswith("|")]
    assert lines[0] == "| model | wic acc | heldout perplexity |"
    # wic, pooled over seeds: DSKD - KD per item (mean over the two seeds) is (0, 0.5, 0, 0.5), mean 0.25;
    # a resample's mean is Binomial(4, 1/2) / 8, whose 2.5% and 97.5% points are 0 and 0.5 (p 1/16 each).
    # perplexity: both resampled blocks move both models alike, exp(m - 0.5) - exp(m) for the KD mean NLL
    # m in {1, 1.5, 2}: e^1 - e^1.5 = -1.763 on all blocks, 2.5% point at m = 2: e^1.5 - e^2 = -2.907,
    # 97.5% point at m = 1: e^0.5 - e^1 = -1.070; all below 0, so significant.
    assert lines[2] == "| DSKD | +0.250 [+0.000, +0.500] | -1.763 [-2.907, -1.070]* |"
    assert lines[3] == "| DSKD+ | +0.000 [+0.000, +0.000] | – |"  # identical to KD on every item
    assert len(lines) == 4  # no KD row, no teacher row (no per-item values)
    assert (
        "Lower is better for heldout perplexity." in diff_part and "`*`: the interval excludes 0" in diff_part
    )


def test_dskd_plus_gets_a_second_difference_table_against_its_pull_only_ablation():
    pull = [
        item_rec("DSKD+ pull-only", 0, "wic", "acc", [1.0, 1.0, 1.0, 0.0]),
        item_rec("DSKD+ pull-only", 1, "wic", "acc", [1.0, 1.0, 0.0, 1.0]),
    ]
    text = render_markdown(PAIRED + pull, ["teacher", "KD", "DSKD", "DSKD+", "DSKD+ pull-only"])
    _, _, pair_part = text.partition("### DSKD+ − DSKD+ pull-only")
    lines = [line for line in pair_part.splitlines() if line.startswith("|")]
    # DSKD+ equals KD, the pull-only rows equal DSKD's: the negative of DSKD - KD (+0.250 [+0.000, +0.500])
    assert lines == ["| model | wic acc |", "|---|---|", "| DSKD+ | -0.250 [-0.500, +0.000] |"]
    assert "DSKD+ pull-only" not in render_markdown(PAIRED)


def test_difference_rows_are_plain_strings_for_other_outputs():
    header, rows = difference_rows(PAIRED, baseline="DSKD", n_resamples=100)
    assert header == ["model", "wic acc", "heldout perplexity"]
    assert [r[0] for r in rows] == ["KD", "DSKD+"] and rows[0][1].startswith("-0.250 [")


def test_no_difference_table_without_the_baseline():
    assert "Difference to" not in render_markdown([r for r in PAIRED if r["model"] != "KD"])


def test_unpaired_references_are_refused():
    a = item_rec("KD", 0, "simlex", "spearman", [0.1, 0.2, 0.3], "mean", reference=[1.0, 2.0, 3.0])
    b = item_rec("DSKD", 0, "simlex", "spearman", [0.1, 0.2, 0.3], "mean", reference=[3.0, 2.0, 1.0])
    with pytest.raises(DSKDError, match="'simlex spearman': models .* different items"):
        differences([a, b])


REASON = "Could not download bigbench==1.0.0 for asset 'bigbench-mc'. Put the file in DIR and run ..."


def test_an_unavailable_task_is_a_marked_column_with_its_reason_and_the_average_says_so():
    available = [r for r in RECORDS if r["benchmark"] != "bigbench/odd_one_out"]
    missing = {"bigbench/odd_one_out": REASON}
    text = render_markdown(available, ["teacher", "dskd"], unavailable=missing)
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert lines[0] == "| model | wic acc | simlex spearman | bigbench/odd_one_out | average |"
    assert lines[2] == "| teacher | 0.600 | 0.200 | unavailable | 0.600 |"  # average of wic alone
    assert lines[3] == "| dskd | 0.530 ± 0.042 | 0.120 ± 0.028 | unavailable | 0.530 ± 0.042 |"
    assert lines[4] == "| chance | 0.500 | 0.000 | – | 0.500 |"
    assert lines[5] == "| items | 200 | 999 |  |  |"
    assert f"- bigbench/odd_one_out: unavailable — {REASON}" in text
    assert "mean of the accuracy-like columns of the available tasks" in text
    rows = list(csv.reader(io.StringIO(render_csv(available, ["teacher", "dskd"], missing))))
    assert rows[0][3] == "bigbench/odd_one_out" and rows[1][3] == rows[2][3] == "unavailable"
    assert "available tasks" not in render_markdown(available)  # nothing missing: the usual note
