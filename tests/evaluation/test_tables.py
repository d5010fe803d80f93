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


def held(model, metric, value, chance, items):
    return rec(model, 0, "heldout", metric, value, chance, len(items), in_average=False) | {
        "items": items,
        "higher_is_better": False,
    }


XTOK = [
    held("teacher", "perplexity", 111.7, 49152.0, [4.6, 4.8]),
    held("teacher", "nats_per_byte", 1.25, None, [1.2, 1.3]),
    held("ce-only", "perplexity_own_tokens", 4663.0, 8000.0, [8.4, 8.5]),
    held("ce-only", "nats_per_byte", 3.71, None, [3.7, 3.72]),
    held("dskd", "perplexity_own_tokens", 5515.0, 8000.0, [8.6, 8.6]),
    held("dskd", "nats_per_byte", 3.78, None, [3.77, 3.79]),
]


def test_the_teachers_per_token_perplexity_and_the_students_own_token_one_are_separate_columns():
    """Per SmolLM2 token and per student token are different units: two columns, each model's other cell
    empty, each with its own chance level (the teacher's and the students' vocabulary sizes), and no
    difference is formed across them (the teacher's row has only nats per byte)."""
    text = render_markdown(XTOK, ["teacher", "ce-only", "dskd"], baseline="ce-only", n_resamples=50)
    head, _, diff_part = text.partition("### Difference to ce-only")
    lines = [line for line in head.splitlines() if line.startswith("|")]
    assert (
        lines[0] == "| model | heldout perplexity | heldout nats_per_byte | heldout perplexity_own_tokens |"
    )
    assert lines[2] == "| teacher | 111.700 | 1.250 | – |"
    assert lines[3] == "| ce-only | – | 3.710 | 4663 |"
    assert lines[5] == "| chance | 49152 | – | 8000 |"
    diff = [line for line in diff_part.splitlines() if line.startswith("|")]
    assert diff[0] == "| model | heldout nats_per_byte | heldout perplexity_own_tokens |"
    assert diff[2].startswith("| teacher | -2.460 [") and diff[2].endswith(" | – |")
    assert (
        "`heldout perplexity_own_tokens`: a cross-tokenizer student's perplexity per token of its own" in head
    )
    assert "`heldout perplexity`: per token of the teacher's tokenizer" in head


def test_the_note_explains_the_columns_present_and_no_average_the_table_lacks():
    text = render_markdown(XTOK)
    assert "`average`" not in text and "accuracy-like" not in text
    assert "`heldout nats_per_byte`:" in text and "span_kl" not in text and "span_uld" not in text
    with_average = render_markdown(RECORDS)
    assert "`average`: mean of the accuracy-like columns" in with_average
    assert "heldout" not in with_average


def test_chance_is_left_empty_where_the_models_chance_levels_differ():
    """Two students with 8000- and 4000-token vocabularies: no single uniform perplexity, so the chance
    cell is empty and the note says why; one vocabulary gives its size."""
    small = held("small", "perplexity_own_tokens", 3000.0, 4000.0, [8.0, 8.0])
    lines = [line for line in render_markdown([*XTOK, small]).splitlines() if line.startswith("| chance")]
    assert lines == ["| chance | 49152 | – | – |"]
    assert (
        "`chance` is left empty where the models' chance levels differ (heldout perplexity_own_tokens)"
        in (render_markdown([*XTOK, small]))
    )
    assert "chance levels differ" not in render_markdown(XTOK)
