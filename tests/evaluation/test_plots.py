"""Plots: Lightning metrics.csv parsing, and the figures' artists (one colour per run in every panel, one
legend, a grid no wider than a screen, the intervals table.md reports), read from real smoke-run logs."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from matplotlib.colors import to_hex

from dskd.evaluation.plots import (
    curves_figure,
    is_loss,
    plot_losses,
    plot_scores,
    read_metrics_csv,
    scores_figure,
)
from dskd.evaluation.tables import differences

CSV = (
    "epoch,step,train/ce,train/kd,train/sense,val/loss,train/device/items_per_sec,train/time\n"
    "0,9,2.5,1.0,,,,\n0,9,,,0.3,,,\n0,19,2.0,0.8,0.2,,,\n0,19,,,,1.7,,\n0,19,,,,,512.0,3.5\n"
)
FIXTURES = Path(__file__).parent / "fixtures"
SMOKE = {  # metrics.csv of `dskd reproduce --preset smoke` (8 CPU steps; 24 train/* columns for DSKD)
    "smoke-kd@0": FIXTURES / "smoke-kd-metrics.csv",
    "smoke-dskd@0": FIXTURES / "smoke-dskd-metrics.csv",
}


def _png_size(path: Path) -> tuple[int, int]:
    return struct.unpack(">II", path.read_bytes()[16:24])  # the IHDR chunk: width, height


def _line_colours(fig) -> dict[str, set[str]]:
    """run -> the colours of its lines over every panel of ``fig``."""
    out: dict[str, set[str]] = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            out.setdefault(line.get_label(), set()).add(to_hex(line.get_color()))
    return out


def _one_legend(fig) -> dict[str, str]:
    """The figure's only legend (no panel has one): label -> colour."""
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
    legend = fig.legends[0]
    return {
        t.get_text(): to_hex(h.get_facecolor() if hasattr(h, "get_facecolor") else h.get_color())
        for t, h in zip(legend.get_texts(), legend.legend_handles)
    }


def test_read_metrics_csv_collects_sparse_train_columns_but_not_throughput(tmp_path):
    f = tmp_path / "metrics.csv"
    f.write_text(CSV)
    series = read_metrics_csv(f)
    assert series == {
        "train/ce": [(9.0, 2.5), (19.0, 2.0)],
        "train/kd": [(9.0, 1.0), (19.0, 0.8)],
        "train/sense": [(9.0, 0.3), (19.0, 0.2)],
    }


def test_losses_and_diagnostics_of_a_smoke_run_are_screen_sized_grids_with_one_colour_per_run(tmp_path):
    losses, diag = tmp_path / "losses.png", tmp_path / "diagnostics.png"
    assert plot_losses(SMOKE, losses, diag) == losses
    (lw, lh), (dw, _) = _png_size(losses), _png_size(diag)
    assert lw <= 2400 and dw <= 2400 and lh < 1000  # was 9,216 x 360: 24 panels in one row

    data = {name: read_metrics_csv(p) for name, p in SMOKE.items()}
    keys = sorted({k for d in data.values() for k in d})
    assert len(keys) == 24
    loss_keys = [k for k in keys if is_loss(k)]
    diag_keys = [k for k in keys if not is_loss(k)]
    assert set(loss_keys) == {"train/loss", "train/ce", "train/kd"} | {
        f"train/sense{s}" for s in ("", "_pos", "_neg", "_rand")
    }
    assert {"train/lr", "train/grad_norm", "train/skipped", "train/sense_diag/margin"} <= set(diag_keys)
    colours = None
    for keys_of, n_rows in ((loss_keys, 2), (diag_keys, 5)):
        fig = curves_figure(data, keys_of)
        visible = [ax for ax in fig.axes if ax.get_visible()]
        assert [ax.get_title() for ax in visible] == [k.removeprefix("train/") for k in keys_of]
        assert len({ax.get_position().y0 for ax in visible}) == n_rows  # wrapped, 4 panels a row
        per_run = _line_colours(fig)
        assert all(len(c) == 1 for c in per_run.values()), per_run  # one colour in every panel
        legend = _one_legend(fig)
        assert legend == {run: c.pop() for run, c in per_run.items()}
        assert len(set(legend.values())) == 2
        colours = colours or legend
        assert legend == colours  # the same colours in both figures
    assert set(colours) == set(SMOKE)


def _record(model, seed, metric, items, chance=0.5):
    return {
        "model": model, "seed": seed, "benchmark": "wic", "metric": metric, "value": sum(items) / len(items),
        "n_items": len(items), "chance": chance, "seconds": 1.0, "in_average": True, "higher_is_better": True,
        "items": items, "statistic": "mean", "reference": None,
    }  # fmt: skip


def test_scores_draw_the_seed_std_and_the_paired_bootstrap_intervals_of_table_md(tmp_path):
    items = {
        ("KD", 0): [1, 0, 0, 1, 0, 1, 0, 0],
        ("KD", 1): [1, 0, 1, 1, 0, 1, 0, 0],
        ("DSKD", 0): [1, 1, 0, 1, 1, 1, 0, 1],
        ("DSKD", 1): [1, 1, 1, 1, 0, 1, 0, 1],
        ("teacher", 0): [1, 1, 1, 1, 1, 1, 0, 1],
    }
    recs = [_record(m, s, "acc", [float(x) for x in v]) for (m, s), v in items.items()]
    diffs = differences(recs, "KD", 500, 0)
    fig = scores_figure(recs, diffs)
    bars, diff_panel = fig.axes
    legend = _one_legend(fig)
    assert list(legend) == ["KD", "DSKD", "teacher", "chance"]

    # scores: a bar per model in its colour, error bar = std over seeds (none for the one-seed teacher)
    kd_std = 0.0883883  # stdev of (3/8, 4/8)
    got = {}
    for container in (c for c in bars.containers if hasattr(c, "patches")):
        (patch,) = container.patches
        segments = container.errorbar.lines[2][0].get_segments() if container.errorbar else []
        spans = [seg[1][1] - seg[0][1] for seg in segments if abs(seg[1][1] - seg[0][1]) > 0]
        got[to_hex(patch.get_facecolor())] = (patch.get_height(), spans)
    assert got[legend["KD"]][0] == pytest.approx(0.4375) and got[legend["KD"]][1] == [
        pytest.approx(2 * kd_std)
    ]
    assert got[legend["teacher"]] == (pytest.approx(0.875), [])

    # differences: a point at each difference, the bar from its interval's low to high end
    drawn = {}
    for container in diff_panel.containers:
        ((x, y),) = container.lines[0].get_xydata()
        (seg,) = container.lines[2][0].get_segments()
        drawn[to_hex(container.lines[0].get_color())] = (y, seg[0][1], seg[1][1])
    for model in ("DSKD", "teacher"):
        d = diffs[model]["wic acc"]
        assert drawn[legend[model]] == pytest.approx((d.diff, d.lo, d.hi))
    assert drawn[legend["DSKD"]][1] > 0  # a difference whose interval excludes 0, as table.md stars it
    assert plot_scores(recs, tmp_path / "scores.png", diffs).read_bytes()[:4] == b"\x89PNG"


def test_no_losses_logged_writes_no_loss_figure(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("epoch,step,val/loss\n0,1,2.0\n")
    assert plot_losses({"kd@0": empty}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
