"""ResumableLoader: round-robin dealing to processes and skipping what a checkpoint already consumed."""

from __future__ import annotations

import itertools

import pytest

from dskd.errors import ConfigError
from dskd.training.resume import ResumableLoader, resume_checkpoint


def test_deals_batches_round_robin():
    data = list(range(11))
    ranks = [ResumableLoader(data, rank, 2) for rank in (0, 1)]
    assert [len(r) for r in ranks] == [5, 5]
    assert list(ranks[0]) == [0, 2, 4, 6, 8] and list(ranks[1]) == [1, 3, 5, 7, 9]  # 10 is dropped


def test_resumes_after_the_consumed_batches_then_runs_full_epochs():
    first = ResumableLoader(list(range(6)), 1, 2)
    taken = list(itertools.islice(iter(first), 2))
    assert taken == [1, 3] and first.state_dict() == {"batches_done": 2, "world": 2}
    again = ResumableLoader(list(range(6)), 1, 2)
    again.load_state_dict(first.state_dict())
    assert list(again) == [5]
    assert list(again) == [1, 3, 5]  # the next epoch is whole


def test_refuses_another_world_size():
    loader = ResumableLoader(list(range(4)))
    with pytest.raises(ConfigError, match="2 processes"):
        loader.load_state_dict({"batches_done": 1, "world": 2})


def test_resume_checkpoint(tmp_path):
    assert resume_checkpoint("auto", tmp_path) is None
    (tmp_path / "last.ckpt").write_bytes(b"x")
    assert resume_checkpoint("auto", tmp_path) == str(tmp_path / "last.ckpt")
    assert resume_checkpoint("never", tmp_path) is None
    with pytest.raises(ConfigError, match="trainer.resume"):
        resume_checkpoint(str(tmp_path / "nope.ckpt"), tmp_path)
