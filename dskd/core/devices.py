"""This process's accelerator: ``cuda:LOCAL_RANK``, never a bare ``cuda`` (which is GPU 0 in every
process of a node). A test keeps the package free of bare ``cuda`` devices (tests/test_devices.py)."""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist

from dskd.core.errors import DSKDError

GROUP_TIMEOUT_HOURS = 4
"""Timeout of the process group :func:`launcher_group` creates: a stage's other ranks may wait that
long while rank 0 works alone (k-means of the sense dictionary, writing results)."""


def numerics() -> dict[str, object]:
    """What a result's floats depend on beyond the code, the config and the inputs: torch's version, the
    CPU kernel path torch chose (AVX-512 or AVX2 change a tiny run's held-out KL in the 2nd decimal;
    docs/results.md), its intra-op threads and the GPU. Recorded in summary.json and results.json."""
    gpu = torch.cuda.get_device_name(local_rank()) if torch.cuda.is_available() else None
    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "gpu": gpu,
    }


def local_rank() -> int:
    """The process's rank on its node: LOCAL_RANK (torchrun, Lightning), else SLURM_LOCALID, else 0."""
    for name in ("LOCAL_RANK", "SLURM_LOCALID"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def is_global_zero() -> bool:
    """Whether this is the job's first process, read from the launcher's variables (it works before any
    process group exists): RANK (torchrun), SLURM_PROCID (srun), NODE_RANK / LOCAL_RANK (Lightning's
    launcher of the other processes of a node)."""
    return all(
        os.environ.get(n, "0") in ("0", "") for n in ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK")
    )


def local_device() -> torch.device:
    """``cuda:<local rank mod visible GPUs>`` when CUDA is available, else the CPU.

    Once Lightning (or the user) has set the current CUDA device, that device wins."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if torch.cuda.is_initialized() and torch.cuda.current_device() != 0:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cuda", local_rank() % torch.cuda.device_count())


def resolve_device(value: str, key: str) -> torch.device:
    """The device a config key names: ``auto`` (:func:`local_device`), ``cpu``, or ``cuda`` (this process's
    GPU; a DSKDError naming ``key`` when no GPU is visible)."""
    if value == "auto":
        return local_device()
    try:
        device = torch.device(value)
    except RuntimeError as e:
        raise DSKDError(f"{key} '{value}' is not a device; use auto, cpu or cuda.") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DSKDError(f"{key}={value} but no CUDA GPU is visible; use {key}=auto or cpu.")
    return local_device() if device.type == "cuda" and device.index is None else device


def check_accelerator(accelerator: str, key: str = "trainer.accelerator") -> None:
    """Refuse ``gpu`` (a DSKDError naming ``key``) when no CUDA GPU is visible: before any model loads or
    file is written, instead of Lightning's traceback at fit."""
    if accelerator == "gpu" and not torch.cuda.is_available():
        raise DSKDError(f"{key}=gpu but no CUDA GPU is visible; use {key}=auto or cpu.")


def rank_world() -> tuple[int, int]:
    """(rank, world size) in the default torch.distributed group; (0, 1) when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_gather_object(obj):
    """Every process's ``obj`` in rank order (``[obj]`` without a process group)."""
    if rank_world()[1] == 1:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_to_first(obj) -> list | None:
    """Every process's ``obj`` in rank order on rank 0, None on the others (``[obj]`` without a
    process group)."""
    rank, world = rank_world()
    if world == 1:
        return [obj]
    out = [None] * world if rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def from_first(obj):
    """Rank 0's ``obj`` on every process (``obj`` without a process group)."""
    if rank_world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for every process of the default group (nothing without one)."""
    if rank_world()[1] > 1:
        dist.barrier()


@contextlib.contextmanager
def launcher_group() -> Iterator[bool]:
    """Inside: the gloo process group of the processes a launcher started together (torchrun: WORLD_SIZE;
    srun: SLURM_STEP_NUM_TASKS, which only srun sets, so the batch script of an allocation of several
    tasks stays one process; ranks and address read through Lightning's SLURM environment), destroyed
    at the end so that a later stage can start its own; yields whether several processes are together
    in it. Nothing when there is one process or a group exists already. Stages that run outside
    training (`dskd senses build`, `dskd cache build`, `dskd eval`, those of `dskd reproduce`) exchange
    CPU objects, hence gloo."""
    # deferred: lightning takes 3 s to import; only the stage commands open this group
    from lightning.fabric.plugins.environments import SLURMEnvironment

    timeout = datetime.timedelta(hours=GROUP_TIMEOUT_HOURS)
    if not dist.is_available() or dist.is_initialized():
        yield rank_world()[1] > 1
        return
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo", timeout=timeout)
    elif int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1 and SLURMEnvironment.detect():
        env = SLURMEnvironment()
        address = f"tcp://{env.main_address}:{env.main_port}"
        dist.init_process_group(
            "gloo", init_method=address, rank=env.global_rank(), world_size=env.world_size(), timeout=timeout
        )
    else:
        yield False
        return
    try:
        yield True
    finally:
        dist.destroy_process_group()
