"""Benchmark of the chunked fused CE + KD against the plain loss on full logits (forward + backward).

Setting: the paper's recipe (frozen student LM head, gradients w.r.t. the student's hidden states),
forward KL at tau = 2, Llama-3's vocabulary of 128,256 tokens, B = 1, L = 512, d = 256.

Peak memory is measured in a fresh subprocess per method, so that nothing else lives in the
process: on GPU ``torch.cuda.max_memory_allocated`` minus the memory allocated before the step;
on CPU the peak resident set size (VmHWM, reset once the inputs exist) minus the resident size
before the step (tracemalloc does not see torch's allocations). The memory worker runs with a fixed glibc
mmap threshold of 1 MiB, so large CPU tensors are mmap-ed and returned to the system when freed and
the RSS peak follows the tensors alive at once. Inputs (hidden states, LM heads) exist before the
step and are not counted. Time is the median of interleaved repeats of
both methods in one subprocess. Goal: at most a quarter of the memory for at most 10% more time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.harness import Figure


@dataclass
class Setting:
    batch: int = 1
    length: int = 512
    vocab: int = 128_256
    hidden: int = 256
    chunk_size: int = 64
    dtype: str = "float32"
    device: str = "cpu"
    repeats: int = 3


def _inputs(s: Setting):
    import torch

    g = torch.Generator(device="cpu").manual_seed(0)
    dtype = getattr(torch, s.dtype)

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(device=s.device, dtype=dtype)

    h_s = randn(s.batch, s.length, s.hidden).requires_grad_(True)
    labels = torch.randint(0, s.vocab, (s.batch, s.length), generator=g).to(s.device)
    return (
        h_s,
        randn(s.vocab, s.hidden) * 0.1,
        randn(s.batch, s.length, s.hidden),
        randn(s.vocab, s.hidden) * 0.1,
        labels,
    )


def _step(method: str, s: Setting, inputs) -> None:
    import torch.nn.functional as F

    from dskd.losses.config import KDConfig
    from dskd.losses.kd import HeadInput, ce_and_kd_chunked, kd_loss, position_mask

    h_s, w_s, h_t, w_t, labels = inputs
    h_s.grad = None
    if method == "plain":
        student_logits = h_s @ w_s.T
        teacher_logits = (h_t @ w_t.T).detach()
        ce = F.cross_entropy(student_logits.float().reshape(-1, s.vocab), labels.reshape(-1))
        loss = ce + kd_loss(student_logits, teacher_logits, position_mask(labels), kd=KDConfig())
    else:
        kd = KDConfig(chunk_size=s.chunk_size)
        loss = ce_and_kd_chunked(HeadInput(h_s, w_s), HeadInput(h_t, w_t), labels, kd=kd).total
    loss.backward()


def _sync(s: Setting) -> None:
    if s.device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _reset_peak_rss() -> None:
    """Reset the process's peak resident set size (Linux >= 4.0: ``clear_refs`` 5 resets VmHWM)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return kib * 1024


def _worker_memory(method: str, s: Setting) -> dict:
    import torch

    tiny = Setting(length=4, vocab=64, hidden=8, chunk_size=2, dtype=s.dtype, device=s.device)
    _step(method, tiny, _inputs(tiny))  # load kernels and thread pools before the baseline
    inputs = _inputs(s)
    _sync(s)
    if s.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        _step(method, s, inputs)
        _sync(s)
        return {"peak_bytes": torch.cuda.max_memory_allocated() - before}
    _reset_peak_rss()  # building the inputs left a higher peak behind
    before = _rss_bytes()
    _step(method, s, inputs)
    return {"peak_bytes": _peak_rss_bytes() - before}


def _worker_time(s: Setting) -> dict:
    inputs = _inputs(s)
    times: dict[str, list[float]] = {"plain": [], "chunked": []}
    for rep in range(s.repeats + 1):
        for method in times:
            _sync(s)
            t0 = time.perf_counter()
            _step(method, s, inputs)
            _sync(s)
            if rep > 0:  # the first round warms up
                times[method].append(time.perf_counter() - t0)
    return {m: statistics.median(t) for m, t in times.items()}


def _run_worker(mode: str, s: Setting) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.losses", "--worker", mode, "--setting", json.dumps(asdict(s))]
    env = dict(os.environ)
    if mode != "time":  # memory: glibc then returns every large freed block at once, so the resident
        env["MALLOC_MMAP_THRESHOLD_"] = str(1 << 20)  # size follows the tensors alive (not for timing)
    root = Path(__file__).resolve().parents[1]  # where `benchmarks` is importable
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=root)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _figures(s: Setting) -> list[Figure]:
    where = (
        f"V={s.vocab}, B={s.batch}, L={s.length}, d={s.hidden}, chunk={s.chunk_size}, {s.dtype}, {s.device}"
    )
    plain = _run_worker("memory:plain", s)["peak_bytes"] / 2**20
    chunked = _run_worker("memory:chunked", s)["peak_bytes"] / 2**20
    times = _run_worker("time", s)
    return [
        Figure(
            name=f"chunked CE+KD peak memory ({where})",
            value=chunked,
            unit="MiB",
            baseline=plain,
            baseline_name="CE+KD on full logits",
            goal="<= 0.25 x baseline",
            met=chunked <= 0.25 * plain,
        ),
        Figure(
            name=f"chunked CE+KD forward+backward time ({where})",
            value=times["chunked"],
            unit="s",
            baseline=times["plain"],
            baseline_name="CE+KD on full logits",
            goal="<= 1.10 x baseline",
            met=times["chunked"] <= 1.10 * times["plain"],
            note=f"median of {s.repeats} interleaved repeats",
        ),
    ]


def bench_chunked_kd(quick: bool) -> list[Figure]:
    """Peak memory and time of :func:`dskd.losses.kd.ce_and_kd_chunked` against full logits."""
    import torch

    figures = _figures(Setting(length=256, chunk_size=32, repeats=2) if quick else Setting())
    if torch.cuda.is_available() and not quick:  # the same on GPU, and a 1B-class student in bf16
        figures += _figures(Setting(device="cuda", repeats=10))
        figures += _figures(
            Setting(length=4096, hidden=2048, chunk_size=512, dtype="bfloat16", device="cuda", repeats=5)
        )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="worker of bench_chunked_kd (one measurement, JSON out)")
    parser.add_argument("--worker", required=True, help="memory:plain | memory:chunked | time")
    parser.add_argument("--setting", required=True, help="JSON of Setting")
    args = parser.parse_args(argv)
    s = Setting(**json.loads(args.setting))
    if args.worker == "time":
        result = _worker_time(s)
    else:
        result = _worker_memory(args.worker.split(":", 1)[1], s)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
