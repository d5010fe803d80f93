"""ResumableLoader: round-robin dealing to processes and skipping what a checkpoint already consumed."""

from __future__ import annotations

import itertools

import pytest

from dskd.core.errors import ConfigError
from dskd.training.resume import ResumableLoader, check_same_experiment, fingerprint, resume_candidates


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


def test_resume_candidates(tmp_path):
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    last, prev = ckpt / "last.ckpt", ckpt / "last.prev.ckpt"
    assert resume_candidates("auto", ckpt) == [last, prev]  # none exists: pick_checkpoint says None
    last.write_bytes(b"x")
    assert resume_candidates("auto", ckpt) == [last, last, prev]
    assert resume_candidates("never", ckpt) == []
    assert resume_candidates(str(last), ckpt) == [last]
    with pytest.raises(ConfigError, match="trainer.resume"):
        resume_candidates(str(tmp_path / "nope.ckpt"), ckpt)


def test_the_fingerprint_ignores_only_the_resumable_keys(tmp_path):

    from .tinyrun import tiny_config

    def yaml(over=None):
        return tiny_config(tmp_path, tmp_path / "teacher", "kd", over).to_yaml()

    base = yaml()
    extended = yaml({"trainer.max_steps": 99, "trainer.log_every_n_steps": 5, "logging.wandb": True})
    changed = yaml({"optim.lr": 0.5, "data.seq_len": 64})
    assert fingerprint(base) == fingerprint(extended) != fingerprint(changed)
    ckpt = {"dskd": {"config": base, "fingerprint": fingerprint(base)}}
    for recorded in (True, False):  # checkpoints without a recorded fingerprint are checked from their config
        if not recorded:
            del ckpt["dskd"]["fingerprint"]
        check_same_experiment(extended, ckpt, tmp_path / "last.ckpt")
        with pytest.raises(ConfigError, match=r"changed: data.seq_len: 128 -> 64, optim.lr: 0.001 -> 0.5\)"):
            check_same_experiment(changed, ckpt, tmp_path / "last.ckpt")
