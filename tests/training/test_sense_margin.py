"""The hinge margin: absolute as in the paper, or a quantile of the dictionary's own-sense MSE."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dskd.core.errors import DSKDError
from dskd.losses.config import SenseLossConfig
from dskd.senses import SenseDictionary
from dskd.training.module import sense_margin


def _dictionary(meta: dict) -> SenseDictionary:
    return SenseDictionary.from_padded(torch.zeros(1, 2, 3), torch.tensor([2]), torch.tensor([0]), meta)


def test_absolute_margin_by_default():
    assert sense_margin(SenseLossConfig(margin=1.5), _dictionary({})) == 1.5


def test_quantile_margin_interpolates_the_stored_percentiles():
    percentiles = [0.1 * i for i in range(101)]  # percentile p holds p / 10
    d = _dictionary({"unrelated_sense_mse_percentiles": percentiles})
    assert sense_margin(SenseLossConfig(margin=1.0, margin_quantile=0.9), d) == pytest.approx(9.0)
    assert sense_margin(SenseLossConfig(margin_quantile=0.255), d) == pytest.approx(2.55)


def test_a_dictionary_without_statistics_is_refused_with_advice():
    with pytest.raises(DSKDError, match="Rebuild it with `dskd senses build"):
        sense_margin(SenseLossConfig(margin_quantile=0.5), _dictionary({}))


def test_neighbours_with_senses_draws_only_keys_the_dictionary_has(run_tmp, teacher_dir, tmp_path):
    import numpy as np

    from dskd.core.errors import ConfigError
    from dskd.data.datamodule import DSKDDataModule

    from .tinyrun import corpus_config, make_tokenizer, word_lexicon, write_corpus

    cfg = corpus_config(run_tmp, teacher_dir, write_corpus(tmp_path / "c.txt"), "dskd",
                        {"data.neighbours_with_senses": True, "data.max_sense_positions": 8})  # fmt: skip
    keys = np.arange(3, 60, 2)  # odd tokens have senses
    dm = DSKDDataModule(cfg.data, cfg.seed, make_tokenizer(), word_lexicon(), sense_keys=keys)
    dm.setup("fit")
    drawn = [b[f"{kind}_keys"][b[f"{kind}_mask"]] for b in dm.train_dataloader() for kind in ("syn", "ant")]
    drawn = torch.cat(drawn)
    assert len(drawn) > 0 and set(drawn.tolist()) <= set(keys.tolist())
    # a target whose neighbours all lack senses leaves V: fewer P1 positions, and as few P2 (docs/losses.md)
    plain = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, neighbours_with_senses=False))
    counts = {}
    plain_dm = DSKDDataModule(plain.data, plain.seed, make_tokenizer(), word_lexicon())
    for name, module in (("with", dm), ("plain", plain_dm)):
        module.setup("fit")
        batches = list(module.train_dataloader())
        counts[name] = [sum(int(b[f"{k}_mask"].sum()) for b in batches) for k in ("sense_pos", "rand_pos")]
    assert counts["with"][0] == counts["with"][1] < counts["plain"][0] == counts["plain"][1]
    without = DSKDDataModule(cfg.data, cfg.seed, make_tokenizer(), word_lexicon())
    without.setup("fit")
    with pytest.raises(ConfigError, match="neighbours_with_senses needs"):
        next(iter(without.train_dataloader()))
