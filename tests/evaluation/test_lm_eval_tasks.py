"""BIG-bench multiple-choice items from a task.json (the toy fixture; no asset needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dskd.core.errors import AssetError
from dskd.evaluation.lm_eval_tasks import bigbench_items, chance_level

TOY = Path(__file__).resolve().parents[1] / "corpora" / "fixtures" / "bigbench" / "toy_mc" / "task.json"


def test_bigbench_items_follow_the_zero_shot_format():
    items = bigbench_items(TOY)
    assert len(items) == 6 and chance_level(items) == pytest.approx(1 / 3)
    first = items[0]
    assert first.query == "Q: Which number is largest: 1, 5 or 3?\n  choice: 1\n  choice: 5\n  choice: 3\nA:"
    assert first.choices == ("1", "5", "3") and first.gold == 1
    assert all(i.choices[i.gold] == max(i.choices, key=int) for i in items)  # the best-scored target


def test_bigbench_items_subset_is_seeded(tmp_path):
    assert bigbench_items(TOY, 3, seed=1) == bigbench_items(TOY, 3, seed=1)
    assert {i.query for i in bigbench_items(TOY, 3, seed=1)} < {i.query for i in bigbench_items(TOY)}
    task = json.loads(TOY.read_text()) | {"task_prefix": "Pick.", "append_choices_to_input": False}
    (tmp_path / "task.json").write_text(json.dumps(task))
    assert (
        bigbench_items(tmp_path / "task.json")[0].query == "Pick.\nQ: Which number is largest: 1, 5 or 3?\nA:"
    )


def test_bigbench_items_refuse_a_task_without_choices(tmp_path):
    (tmp_path / "task.json").write_text(json.dumps({"examples": [{"input": "x", "target": "y"}]}))
    with pytest.raises(AssetError, match="no multiple-choice examples"):
        bigbench_items(tmp_path / "task.json")
