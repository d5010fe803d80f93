"""`lockstep`: ranks whose shards end batches apart stop together (a real 2-process gloo group)."""

from __future__ import annotations

import socket

import torch.distributed as dist
import torch.multiprocessing as mp

from dskd.data.datamodule import lockstep


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, lengths: list[int], out) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        out[rank] = list(lockstep(iter(range(lengths[rank]))))
    finally:
        dist.destroy_process_group()


def test_ranks_stop_at_the_shortest_shard():
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_rank, args=(_free_port(), [3, 5], out), nprocs=2, join=True, start_method="spawn")
        assert dict(out) == {0: [0, 1, 2], 1: [0, 1, 2]}


def test_without_a_process_group_batches_pass_through():
    assert list(lockstep(iter(range(4)))) == [0, 1, 2, 3]
