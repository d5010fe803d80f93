"""Plots: Lightning metrics.csv parsing and PNG output."""

from __future__ import annotations

from dskd.evaluation.plots import plot_losses, plot_scores, read_metrics_csv

CSV = (
    "epoch,step,train/ce,train/kd,train/sense,val/loss,train/device/items_per_sec,train/time\n"
    "0,9,2.5,1.0,,,,\n0,9,,,0.3,,,\n0,19,2.0,0.8,0.2,,,\n0,19,,,,1.7,,\n0,19,,,,,512.0,3.5\n"
)


def test_read_metrics_csv_collects_sparse_train_columns_but_not_throughput(tmp_path):
    f = tmp_path / "metrics.csv"
    f.write_text(CSV)
    series = read_metrics_csv(f)
    assert series == {
        "train/ce": [(9.0, 2.5), (19.0, 2.0)],
        "train/kd": [(9.0, 1.0), (19.0, 0.8)],
        "train/sense": [(9.0, 0.3), (19.0, 0.2)],
    }


def test_plots_write_png(tmp_path):
    f = tmp_path / "metrics.csv"
    f.write_text(CSV)
    assert plot_losses({"dskd@0": f}, tmp_path / "losses.png").read_bytes()[:4] == b"\x89PNG"
    rec = {
        "model": "kd",
        "seed": 0,
        "benchmark": "wic",
        "metric": "acc",
        "value": 0.6,
        "chance": 0.5,
        "n_items": 10,
        "seconds": 1.0,
        "in_average": True,
        "higher_is_better": True,
    }
    assert plot_scores([rec], tmp_path / "scores.png").read_bytes()[:4] == b"\x89PNG"
    empty = tmp_path / "empty.csv"
    empty.write_text("epoch,step,val/loss\n0,1,2.0\n")
    assert plot_losses({"kd@0": empty}, tmp_path / "none.png") is None
