"""One teacher cache per cache folder for a set of runs: shared over seeds and methods, refused when
the runs need different caches, skipped when up to date."""

from __future__ import annotations

import pytest

from dskd.core.errors import ConfigError
from dskd.core.io import read_json
from dskd.launch.caches import build_caches, cache_groups
from dskd.models.loading import load_tokenizer
from dskd.teacher_cache.build import open_cache, run_batches
from tests.sections import spec_of
from tests.teacher_cache.conftest import corpus, make_cfg, teacher_dir  # noqa: F401  (fixtures)

CACHED = {"teacher.mode": "cached", "cache.kd_format": "sampled", "cache.samples": 8}


def test_runs_sharing_a_folder_must_agree_on_what_the_cache_holds(make_cfg):  # noqa: F811
    kd, dskd = make_cfg(**CACHED), make_cfg(method="dskd", **CACHED)
    online = make_cfg()
    assert list(cache_groups([kd, dskd, online])) == [kd.cache.dir]
    assert cache_groups([online]) == {}
    # the sense sampling of DSKD+ does not change the sequences: one cache
    plus = make_cfg(method="dskd", **CACHED, **{"data.sense_aligned_neighbours": True})
    assert len(cache_groups([kd, dskd, plus])[kd.cache.dir]) == 3
    for over, what in (({"loss.kd.tau": 1.0}, "loss.kd.tau"), ({"data.seq_len": 12}, "data")):
        with pytest.raises(ConfigError, match=f"differ in {what}.*own cache.dir"):
            cache_groups([kd, make_cfg(**CACHED, **over)])


def test_one_cache_serves_every_seed_and_method_and_is_then_up_to_date(make_cfg, capsys):  # noqa: F811
    cfgs = [make_cfg(seed=s, **CACHED) for s in (0, 1)] + [make_cfg(method="dskd", seed=0, **CACHED)]
    keys = build_caches(cfgs, upstream="senses-key", progress=False)
    folder = cfgs[0].cache.dir
    meta = read_json(f"{folder}/meta.json")
    assert list(keys) == [folder] and meta["seeds"] == [0, 1]
    assert meta["hidden_dtype"] == "float16"  # a DSKD run is among them
    tok = load_tokenizer(cfgs[0].teacher.model)
    for cfg in cfgs:
        cache = open_cache(spec_of(cfg), tok)
        for batch in run_batches(spec_of(cfg), tok, [cfg.seed]):
            cache.lookup(batch["input_ids"], batch["attention_mask"])
    capsys.readouterr()
    assert build_caches(cfgs, upstream="senses-key", progress=False) == keys
    assert "up to date" in capsys.readouterr().out
    kd_only = build_caches(cfgs[:2], upstream="senses-key", progress=False)  # no DSKD run: KD only
    assert kd_only != keys and read_json(f"{folder}/meta.json")["hidden_dtype"] == "none"
