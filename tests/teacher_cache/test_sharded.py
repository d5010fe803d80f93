"""`dskd cache build` in two processes (torchrun's variables, gloo): the batches are dealt to the ranks
and rank 0 writes the cache one process writes, byte for byte."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from dskd.core.io import read_json
from dskd.models.shared import StageProcess
from dskd.teacher_cache.build import build


def _rank(rank: int, port: int, cfg, out: str) -> None:
    for name in ("SLURM_NTASKS", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS"):
        os.environ.pop(name, None)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank)
    )
    import dskd.models.shared as shared
    from dskd.core.devices import launcher_group

    loads, load = [], shared.load_causal_lm

    def counted(*args, **kwargs):
        loads.append(1)
        return load(*args, **kwargs)

    shared.load_causal_lm = counted
    with launcher_group() as together:
        stats = build(
            cfg,
            [0, 1],
            "float32",
            process=StageProcess(together=together, progress=False),
        ).stats
    Path(f"{out}-{rank}.json").write_text(
        json.dumps({"stats": stats, "together": together, "loads": len(loads)})
    )


@pytest.mark.parametrize("kd_format", ["topk", "sampled"])
def test_two_processes_write_the_one_process_cache_byte_for_byte(make_cfg, tmp_path, kd_format):
    one_dir, two_dir = tmp_path / "one", tmp_path / "two"
    cfg_one = make_cfg(**{"cache.kd_format": kd_format, "cache.dir": str(one_dir)})
    cfg_two = make_cfg(**{"cache.kd_format": kd_format, "cache.dir": str(two_dir)})
    one = build(cfg_one, [0, 1], "float32", process=StageProcess(progress=False)).stats
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = str(tmp_path / "rank")
    mp.start_processes(_rank, args=(port, cfg_two, log), nprocs=2, start_method="spawn")
    ranks = [json.loads(Path(f"{log}-{r}.json").read_text()) for r in (0, 1)]
    assert [r["together"] for r in ranks] == [True, True]
    assert [r["loads"] for r in ranks] == [1, 1]  # each rank ran its own teacher on its share
    assert ranks[0]["stats"] == ranks[1]["stats"]  # every rank returns the written cache's stats
    assert one["duplicates_skipped"] > 0  # the seeds share sequences: deduplicated across the ranks too
    for key in ("rows", "duplicates_skipped", "bytes", "bytes_per_position", "tokens"):
        assert ranks[0]["stats"][key] == one[key], key
    bins = sorted(p.name for p in one_dir.glob("*.bin"))
    assert bins == sorted(p.name for p in two_dir.glob("*.bin")) and "hidden.bin" in bins
    for name in bins:
        assert (one_dir / name).read_bytes() == (two_dir / name).read_bytes(), name
    meta_one, meta_two = read_json(one_dir / "meta.json"), read_json(two_dir / "meta.json")
    meta_one.pop("provenance"), meta_two.pop("provenance")
    assert meta_one == meta_two  # sha256 of every file, shapes, rows, world size of the run
