"""GPU-only checks for `make gpu-check`: the paper path rehearsed on the GPUs, its size on one GPU, then
FSDP, DeepSpeed ZeRO-2/3 and bf16 throughput on random Llama-shaped models. Nothing needs the hub or an
asset.

* ``rehearse-paper-llama3``, ``rehearse-paper-mistral``: ``dskd reproduce --preset P --rehearse``
  (docs/training.md) on every visible GPU with ``trainer.strategy=fsdp`` and the preset's bf16-mixed,
  chunked KD, teacher continuations, sense dictionary (``senses.device=auto``) and paper-protocol
  evaluation; a stand-in ``tsv`` lexicon replaces WordNet and W&B is off. It passes when the pipeline
  exits 0 with both students exported and the results table holding every paper task.
* ``paper-step``: the paper-llama3 DSKD preset (experiments/paper-llama3/dskd.yaml) at its size on one
  GPU, with random weights: a Llama of Meta-Llama-3-8B-Instruct's shape (32 layers, d 4096, 32 heads,
  8 key/value heads, FFN 14336, V 128256; ``--tiny``: the same depths, widths for a CPU) made in bf16
  on the GPU and handed to training as the held teacher (``TeacherHolder.hold``: no weights written),
  its 16-layer student sharing the frozen trunk with the top 2 layers training, bf16-mixed, chunked
  KD, the sense loss on a dictionary with random rows for the keys its batches look up, batch 1 x
  2048 tokens (``--tiny``: 128), ``--steps`` steps of ``dskd.training.run.train`` with
  ``trainer.strategy=auto``. Besides tokens/s and the MFU it reports torch's peak allocation and
  `dskd memory`'s estimate for one GPU of the same config (``estimate_gb``), and passes when the peak
  is within 10% of the estimate's tensors (``estimate_tensors_gb``: the total less its allowance for
  the CUDA context and fragmentation, which torch's allocation count does not see); on a CPU the
  memory is n/a.
* the throughput checks: a truncated student of a random teacher trained for a few steps with the
  sense loss on, then exported.

Each check prints one JSON line: tokens per second (median of the logged ``train/items_per_sec``, all
GPUs), per-GPU peak memory (``nvidia-smi``'s used memory, polled every 0.2 s, for a rehearsal; torch's
peak allocation for a throughput check) and the MFU: model FLOPs per second of one GPU (``train/
device/flops_per_sec``: the FLOPs of a token times the tokens per second, where a token costs 6 FLOPs
per trainable weight (forward and backward), 2 per frozen student weight and 2 per teacher weight
(forward only), see dskd.training.progress.flops_per_token) over the GPU's peak dense bf16 FLOP/s
(:data:`PEAK_BF16`, or ``--peak-tflops``). Every check runs in its own subprocess with a timeout, so
a crash or hang in one does not hide the others; a summary follows, and the exit status is 1 when any
check failed (a DeepSpeed check without ``deepspeed`` installed is reported as skipped).

    python scripts/gpu_check.py                 # all checks
    python scripts/gpu_check.py --only fsdp     # checks whose name contains 'fsdp'
    python scripts/gpu_check.py --only paper-step   # the paper's size on one GPU, memory vs estimate
    python scripts/gpu_check.py --accelerator cpu --tiny --only rehearse-paper-llama3 auto-bf16-mixed
                                                # the harness on a CPU (2 processes, DDP)
    python scripts/gpu_check.py --accelerator cpu --tiny --only paper-step   # paper-step on a CPU
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # dskd from this checkout, installed or not
REHEARSALS = {"rehearse-paper-llama3": "paper-llama3", "rehearse-paper-mistral": "paper-mistral"}
MIN_CHECK_S = 25
"""A check is started only with at least this many seconds of the --budget left."""
PAPER_TASKS = ("arc_challenge", "commonsense_qa", "piqa", "mmlu", "squad_v2")
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "H800": 989e12, "A100": 312e12, "A800": 312e12, "L40S": 362e12}
"""Peak dense bf16 FLOP/s by GPU name (data sheets: H100/H200 SXM 989 TFLOP/s, A100 312, L40S 362)."""
CHECKS: dict[str, dict[str, object]] = {
    "auto-bf16-mixed": {"trainer.strategy": "auto", "trainer.precision": "bf16-mixed"},
    "auto-bf16-true": {"trainer.strategy": "auto", "trainer.precision": "bf16-true"},
    "auto-bf16-mixed-chunked-kd": {"trainer.precision": "bf16-mixed", "loss.kd.chunk_size": 512},
    "fsdp-bf16-mixed": {"trainer.strategy": "fsdp", "trainer.precision": "bf16-mixed"},
    "deepspeed_stage_2-bf16-mixed": {
        "trainer.strategy": "deepspeed_stage_2",
        "trainer.precision": "bf16-mixed",
    },
    "deepspeed_stage_3-bf16-mixed": {
        "trainer.strategy": "deepspeed_stage_3",
        "trainer.precision": "bf16-mixed",
    },
    "deepspeed_stage_3-chunked-kd": {
        "trainer.strategy": "deepspeed_stage_3",
        "trainer.precision": "bf16-mixed",
        "loss.kd.chunk_size": 512,
    },
}
SHAPE = {"vocab": 32000, "hidden": 1024, "layers": 8, "heads": 16, "kv_heads": 8}
TINY = {
    "vocab": 128,
    "hidden": 32,
    "layers": 4,
    "heads": 4,
    "kv_heads": 2,
}  # --tiny: smoke test of the harness
STUDENT = {"student.num_layers": 4, "student.trainable_top_layers": 2}
PAPER_STEP = "paper-step"
PAPER_PRESET = ROOT / "experiments" / "paper-llama3" / "dskd.yaml"
PAPER_SHAPE = {
    "vocab": 128256,
    "hidden": 4096,
    "ffn": 14336,
    "layers": 32,
    "heads": 32,
    "kv_heads": 8,
    "seq": 2048,
}  # Meta-Llama-3-8B-Instruct's config.json; the preset's batch 1 x 2048 tokens
PAPER_TINY = {"vocab": 512, "hidden": 64, "ffn": 224, "layers": 32, "heads": 4, "kv_heads": 1, "seq": 128}
MEMORY_TOLERANCE = 0.10
"""paper-step passes when torch's peak allocation is within this fraction of the estimate's tensors."""


def _shape(args: argparse.Namespace) -> dict[str, int]:
    return TINY if args.tiny else SHAPE


def _prepare(work: Path, shape: dict[str, int]) -> None:
    """The random teacher folder and its sense dictionary, shared by all checks."""
    from dskd.testing.fixtures import llama_config, random_model_dir, random_senses

    if not (work / "teacher" / "config.json").exists():
        cfg = llama_config(
            shape["vocab"], shape["hidden"], shape["layers"], shape["heads"], shape["kv_heads"], max_len=2048
        )
        random_model_dir(work / "teacher", cfg)
    if not (work / "senses" / "senses.safetensors").exists():
        random_senses(work / "senses", shape["vocab"], shape["hidden"], k=5)


def _config(work: Path, name: str, steps: int, batch: int, devices: str, accelerator: str):
    from dskd.config.loading import config_from_dict

    data: dict = {
        "name": name,
        "preset": "gpu-check",
        "method": "dskd",
        "runs_dir": str(work / "runs"),
        "teacher": {"model": str(work / "teacher"), "dtype": "bfloat16"},
        "senses": {"output_dir": str(work / "senses"), "device": "cuda" if accelerator == "gpu" else "cpu"},
        "trainer": {
            "accelerator": accelerator,
            "devices": devices,
            "max_steps": steps,
            "log_every_n_steps": 1,
            "checkpoint_every_n_steps": steps,
            "resume": "never",
        },
        "data": {"batch_size": batch},
        "logging": {"wandb": False},
    }
    for key, value in {**STUDENT, **CHECKS[name]}.items():
        node = data
        *path, last = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return config_from_dict(data, source=f"gpu check {name}")


def run_one(args: argparse.Namespace) -> dict:
    """Run the check ``args.run`` in this process and return its JSON record."""
    import torch

    from dskd.testing.fixtures import SyntheticBatches
    from dskd.training.run import run_dir, train

    gpu = args.accelerator == "gpu"
    if gpu and not torch.cuda.is_available():
        raise RuntimeError("no CUDA device visible to torch (torch.cuda.is_available() is False)")
    name, steps, batch, seq, work = args.run, args.steps, args.batch, args.seq, args.work
    cfg = _config(work, name, steps, batch, args.devices, args.accelerator)
    data = SyntheticBatches(
        _shape(args)["vocab"], n=steps, val=1, batch=batch, seq=seq, positions=25, neighbours=25
    )
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    summary = train(cfg, datamodule=data)
    wall = time.perf_counter() - t0
    with open(run_dir(cfg.runs_dir, cfg.name, cfg.seed) / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    return {
        "check": name,
        "ok": summary["global_step"] == steps and all(map(_finite, losses)),
        "tokens_per_s": _tokens_per_s(rows),
        "peak_mem_gib": [round(torch.cuda.max_memory_allocated() / 2**30, 3)] if gpu else None,
        "mfu": _mfu(rows, args.peak_tflops),
        "wall_s": round(wall, 1),
        "steps": summary["global_step"],
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "export_dir": summary["export_dir"],
        "device": torch.cuda.get_device_name(0) if gpu else "cpu",
    }


def _paper_teacher(folder: Path, shape: dict[str, int]) -> Path:
    """A teacher folder holding only the config.json of ``shape`` and a word tokenizer (no weights:
    :func:`_random_teacher` makes them on the device)."""
    from transformers import LlamaConfig

    from dskd.testing.fixtures import word_tokenizer

    config = LlamaConfig(
        vocab_size=shape["vocab"],
        hidden_size=shape["hidden"],
        intermediate_size=shape["ffn"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
        max_position_embeddings=8192,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    )
    config.save_pretrained(folder)
    word_tokenizer(shape["vocab"]).save_pretrained(folder)
    return folder


def _random_teacher(folder: Path, dtype: str, device: object):
    """The model of ``folder``'s config.json with random weights, made on ``device`` in ``dtype``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from dskd.models.loading import resolve_dtype

    torch.manual_seed(0)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(
            AutoConfig.from_pretrained(folder), dtype=resolve_dtype(dtype)
        )


def _paper_config(work: Path, shape: dict[str, int], steps: int, accelerator: str):
    """The paper-llama3 DSKD preset on one device, with the random teacher of ``work`` and its senses."""
    from dskd.config.loading import load_config

    overrides = [
        "name=paper-step",
        f"runs_dir={work / 'runs'}",
        f"artifacts_dir={work / 'artifacts'}",
        f"teacher.model={work / 'teacher'}",
        f"senses.output_dir={work / 'senses'}",
        f"senses.device={'auto' if accelerator == 'gpu' else 'cpu'}",
        "data.targets=observed",  # the batches are synthetic: no teacher continuations to build
        f"data.seq_len={shape['seq']}",
        f"trainer.accelerator={accelerator}",
        "trainer.devices=1",
        "trainer.strategy=auto",
        f"trainer.max_steps={steps}",
        "trainer.log_every_n_steps=1",
        f"trainer.checkpoint_every_n_steps={steps + 1}",  # one checkpoint: the one at the end of fit
        "trainer.resume=never",
        "logging.wandb=false",
    ]
    return load_config(PAPER_PRESET, overrides)


def _step_keys(data) -> object:
    """The sense keys the sense loss looks up in ``data``'s training batches (P1 and P2 targets,
    synonyms, antonyms): the random dictionary needs rows for these only."""
    import torch

    from dskd.core.batch import IGNORE_INDEX

    keys = []
    for b in data.train_dataloader():
        targets = [b["labels"].gather(1, b[k]) for k in ("sense_pos", "rand_pos")]
        keys += [t.flatten() for t in targets] + [b["syn_keys"].flatten(), b["ant_keys"].flatten()]
    keys = torch.cat(keys)
    return keys[keys != IGNORE_INDEX].unique()


def _memory_estimate(cfg) -> tuple[float, float]:
    """(total, total without the allowance for the CUDA context and fragmentation) of `dskd memory`'s
    estimate for one GPU of ``cfg``, in GB (1e9 bytes)."""
    from dskd.training.memory import ALLOCATOR_OVERHEAD_GB, MemoryInputs, estimate, teacher_shape

    inputs = MemoryInputs(
        cfg.name,
        cfg.method,
        cfg.teacher,
        cfg.student,
        cfg.trainer,
        cfg.data,
        cfg.loss,
        cfg.senses,
        cfg.lexicon.output_dir,
    )
    total = sum(gb for _, gb, _ in estimate(inputs, teacher_shape(cfg.teacher), world_size=1))
    return total, total - ALLOCATOR_OVERHEAD_GB


def _paper_run(args: argparse.Namespace, device: object) -> tuple:
    """(config, data module, teacher holder) of ``paper-step``: the teacher folder (config and tokenizer
    only), the random sense rows of the batches' keys, and the random teacher made on ``device``."""
    from dskd.models.shared import TeacherHolder
    from dskd.testing.fixtures import SyntheticBatches, random_senses

    shape, work = PAPER_TINY if args.tiny else PAPER_SHAPE, args.work / PAPER_STEP
    _paper_teacher(work / "teacher", shape)
    cfg = _paper_config(work, shape, args.steps, args.accelerator)
    batch = {"batch": cfg.data.batch_size, "seq": shape["seq"], "positions": 25, "neighbours": 25}
    data = SyntheticBatches(shape["vocab"], n=args.steps, val=1, **batch)
    random_senses(work / "senses", shape["vocab"], shape["hidden"], k=cfg.senses.k, keys=_step_keys(data))
    teachers = TeacherHolder()
    teachers.hold(cfg.teacher, _random_teacher(work / "teacher", cfg.teacher.dtype, device))
    return cfg, data, teachers


def _memory_record(cfg, gpu: bool) -> dict:
    """torch's peak allocation (GB, and GiB as the other checks report it) against `dskd memory`'s
    estimate for one GPU of ``cfg``; the peak and the verdict are None on a CPU."""
    import torch

    estimate, tensors = _memory_estimate(cfg)
    record = {"estimate_gb": round(estimate, 2), "estimate_tensors_gb": round(tensors, 2)}
    if not gpu:
        keys = ("peak_mem_gib", "peak_allocated_gb", "peak_reserved_gb", "peak_over_estimate")
        return record | dict.fromkeys(keys) | {"memory_within_10pct": None}
    peak = torch.cuda.max_memory_allocated()
    ratio = peak / 1e9 / tensors
    return record | {
        "peak_mem_gib": [round(peak / 2**30, 3)],
        "peak_allocated_gb": round(peak / 1e9, 2),
        "peak_reserved_gb": round(torch.cuda.max_memory_reserved() / 1e9, 2),
        "peak_over_estimate": round(ratio, 3),
        "memory_within_10pct": abs(ratio - 1) <= MEMORY_TOLERANCE,
    }


def paper_step(args: argparse.Namespace) -> dict:
    """``paper-step``: a few training steps of the paper-llama3 DSKD preset at its size on one device,
    with random weights (see the module doc), and its JSON record."""
    import torch

    from dskd.training.run import train

    gpu = args.accelerator == "gpu"
    if gpu and not torch.cuda.is_available():
        raise RuntimeError("no CUDA device visible to torch (torch.cuda.is_available() is False)")
    cfg, data, teachers = _paper_run(args, torch.device("cuda", 0) if gpu else torch.device("cpu"))
    if gpu:
        torch.cuda.reset_peak_memory_stats()  # the teacher stays allocated: the peak counts it
    t0 = time.perf_counter()
    summary = train(cfg, datamodule=data, export=False, teachers=teachers)
    wall = time.perf_counter() - t0
    rows = _metrics(Path(summary["run_dir"]) / "metrics.csv")
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    memory = _memory_record(cfg, gpu)
    trained = summary["global_step"] == args.steps and all(map(_finite, losses))
    return {
        "check": PAPER_STEP,
        "ok": trained and memory["memory_within_10pct"] is not False,
        "tokens_per_s": _tokens_per_s(rows),
        "mfu": _mfu(rows, args.peak_tflops),
        **memory,
        "wall_s": round(wall, 1),
        "steps": summary["global_step"],
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "shape": PAPER_TINY if args.tiny else PAPER_SHAPE,
        "device": torch.cuda.get_device_name(0) if gpu else "cpu",
    }


def _tokens_per_s(rows: list[dict]) -> float | None:
    """Median logged non-padding tokens per second of all processes (``ThroughputMonitor``; one
    process logs only its ``device`` figure)."""
    key = (
        "train/items_per_sec"
        if any(r.get("train/items_per_sec") for r in rows)
        else "train/device/items_per_sec"
    )
    speeds = [float(r[key]) for r in rows if r.get(key)]
    return round(statistics.median(speeds), 1) if speeds else None


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


def _peak_flops(peak_tflops: float | None) -> float | None:
    """--peak-tflops, else :data:`PEAK_BF16` of the first GPU's name (from nvidia-smi: this process
    never creates a CUDA context, which would hold GPU memory during the later checks)."""
    if peak_tflops:
        return peak_tflops * 1e12
    try:
        query = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]
        name = subprocess.run(query, capture_output=True, text=True, timeout=10).stdout.splitlines()[0]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return None
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def _mfu(rows: list[dict], peak_tflops: float | None) -> float | None:
    """Median logged model FLOP/s of one GPU over its peak dense bf16 FLOP/s (None on a CPU or an
    unknown GPU without --peak-tflops)."""
    flops = [float(r["train/device/flops_per_sec"]) for r in rows if r.get("train/device/flops_per_sec")]
    peak = _peak_flops(peak_tflops)
    return round(statistics.median(flops) / peak, 5) if flops and peak else None


def _metrics(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class MemoryPoller:
    """Per-GPU peak of ``nvidia-smi``'s used memory (GiB) while a child process runs (all its processes
    and stages: teacher continuations, senses, training, evaluation); empty without nvidia-smi."""

    def __init__(self, every_s: float = 0.2) -> None:
        self.peak: dict[int, float] = {}
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        query = ["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"]
        while not self._stop.is_set():
            try:
                out = subprocess.run(query, capture_output=True, text=True, timeout=5).stdout
            except (OSError, subprocess.TimeoutExpired):
                return
            for line in out.splitlines():
                index, used = (x.strip() for x in line.split(","))
                self.peak[int(index)] = max(self.peak.get(int(index), 0.0), float(used) / 1024)
            self._stop.wait(self.every_s)

    def __enter__(self) -> MemoryPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _child_env() -> dict[str, str]:
    """This environment with this checkout first on PYTHONPATH (the rest kept: carried packages)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def rehearse(name: str, args: argparse.Namespace, work: Path, timeout: float) -> dict:
    """``dskd reproduce --preset P --rehearse`` on the GPUs (see the module doc) and its JSON record."""
    from dskd.testing.standins import write_standin_lexicon

    preset, gpu = REHEARSALS[name], args.accelerator == "gpu"
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    lexicon = write_standin_lexicon(folder / "lexicon.tsv")
    overrides = [f"lexicon.sources=[{{kind: tsv, path: {lexicon.resolve()}}}]", "logging.wandb=false"]
    overrides += [] if _has("matplotlib") else ["eval.plot=false"]
    if gpu:
        devices = args.rehearse_devices if args.rehearse_devices != "all" else str(_gpu_count())
        overrides += ["trainer.accelerator=gpu", f"trainer.devices={devices}", "trainer.strategy=fsdp"]
        overrides += ["senses.device=auto"]
    cmd = [sys.executable, "-m", "dskd", "reproduce", "--preset", preset, "--rehearse", *overrides]
    env = {
        k: v for k, v in _child_env().items() if not k.startswith(("MASTER_", "LOCAL_RANK", "RANK", "WORLD"))
    }
    t0 = time.perf_counter()
    try:
        with MemoryPoller() as memory:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=folder)
    except subprocess.TimeoutExpired:
        return {"check": name, "ok": False, "error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    (folder / "log.txt").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    root = folder / "artifacts" / "rehearse" / preset
    runs = sorted((root / "runs").glob("*/seed-0"))
    problems = [] if proc.returncode == 0 else [f"exit {proc.returncode}"]
    problems += [f"{r.parent.name}: no export" for r in runs if not (r / "export" / "config.json").is_file()]
    if len(runs) < 2:
        problems.append(f"{len(runs)} runs under {root / 'runs'}")
    results = root / "results" / "results.json"
    benchmarks = set()
    if results.is_file():
        benchmarks = {r["benchmark"] for r in json.loads(results.read_text())["results"]}
    missing = [t for t in PAPER_TASKS if f"paper/{t}" not in benchmarks]
    if missing:
        problems.append(f"results without {', '.join(missing)}")
    rows = [row for r in runs if (r / "metrics.csv").is_file() for row in _metrics(r / "metrics.csv")]
    speeds = [float(r["train/items_per_sec"]) for r in rows if r.get("train/items_per_sec")]
    record = {
        "check": name,
        "ok": not problems,
        "tokens_per_s": round(statistics.median(speeds), 1) if speeds else None,
        "peak_mem_gib": [round(memory.peak[i], 2) for i in sorted(memory.peak)] or None,
        "mfu": _mfu(rows, args.peak_tflops),
        "wall_s": round(wall, 1),
        "stages_s": _stage_seconds(proc.stdout),
        "log": str(folder / "log.txt"),
    }
    if problems:
        record |= {"error": "; ".join(problems), "log_tail": (proc.stderr or proc.stdout)[-1500:]}
    return record


def _stage_seconds(stdout: str) -> dict[str, float]:
    """Seconds of each stage from the ``=== <stage>: done in N s`` lines (the first process's)."""
    out: dict[str, float] = {}
    for line in stdout.splitlines():
        if line.startswith("=== ") and ": done in " in line:
            stage, _, rest = line[4:].partition(": done in ")
            out.setdefault(stage, float(rest.split()[0]))
    return out


def _child(name: str, args: argparse.Namespace, work: Path, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--run", name, "--work", str(work), "--steps", str(args.steps)]
    cmd += ["--batch", str(args.batch), "--seq", str(args.seq), "--devices", args.devices]
    cmd += ["--accelerator", args.accelerator] + (["--tiny"] if args.tiny else [])
    cmd += ["--peak-tflops", str(args.peak_tflops)] if args.peak_tflops else []
    env = _child_env()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"check": name, "ok": False, "error": f"timed out after {timeout:.0f} s"}
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"check"')]
    if proc.returncode == 0 and records:
        return records[-1]
    tail = (proc.stderr or proc.stdout)[-1500:]
    return {
        "check": name,
        "ok": False,
        "error": f"exit {proc.returncode} after {time.perf_counter() - t0:.0f} s",
        "log_tail": tail,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", help="run the checks whose names contain one of these")
    p.add_argument("--list", action="store_true", help="list the checks and exit")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--devices", default="1", help="GPUs per check (a count or 'auto')")
    p.add_argument("--timeout", type=int, default=75, help="seconds per throughput check")
    p.add_argument("--rehearse-timeout", type=int, default=170, help="seconds per rehearsal")
    p.add_argument("--paper-timeout", type=int, default=240, help="seconds of the paper-step check")
    p.add_argument("--rehearse-devices", default="all", help="GPUs of a rehearsal (default: every one)")
    p.add_argument("--peak-tflops", type=float, default=None, help="the GPU's peak dense bf16 TFLOP/s")
    p.add_argument(
        "--budget", type=int, default=460, help="seconds for all checks; later ones are not run (SKIP)"
    )
    p.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    p.add_argument(
        "--accelerator", default="gpu", help="gpu; cpu only to smoke-test this script (auto checks)"
    )
    p.add_argument(
        "--tiny", action="store_true", help="a tiny model instead of the Llama-shaped one (smoke test)"
    )
    p.add_argument("--run", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.list:
        print("\n".join([*REHEARSALS, PAPER_STEP, *CHECKS]))
        return 0
    if args.run:  # child: one check, one JSON line
        record = paper_step(args) if args.run == PAPER_STEP else run_one(args)
        print(json.dumps(record), flush=True)
        return 0 if record["ok"] else 1

    missing = [m for m in NEEDED if not _has(m)]
    if missing:
        print(
            f"gpu-check: missing Python packages {', '.join(missing)}; install them (docs/training.md, "
            "`make gpu-check` on a GPU machine without internet).",
            file=sys.stderr,
        )
        return 2
    every = [*REHEARSALS, PAPER_STEP, *CHECKS]
    names = [n for n in every if not args.only or any(o in n for o in args.only)]
    if not names:
        print(f"no check matches {args.only}; checks: {', '.join(every)}", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="dskd-gpu-check-"))
    t0 = time.perf_counter()
    if any(n in CHECKS for n in names):  # the throughput checks' teacher and senses
        _prepare(work, _shape(args))
    print(
        json.dumps(
            {"prepared": str(work), "shape": _shape(args), "seconds": round(time.perf_counter() - t0, 1)}
        )
    )
    results = []
    for name in names:
        left = args.budget - (time.perf_counter() - t0)
        own = {PAPER_STEP: args.paper_timeout, **dict.fromkeys(REHEARSALS, args.rehearse_timeout)}
        limit = min(own.get(name, args.timeout), left)
        if name.startswith("deepspeed") and not _has_deepspeed():
            rec = {"check": name, "ok": None, "error": "skipped: deepspeed is not installed"}
        elif left < MIN_CHECK_S:
            rec = {"check": name, "ok": None, "error": f"not run: the --budget of {args.budget} s is spent"}
        elif name in REHEARSALS:
            rec = rehearse(name, args, work, limit)
        else:
            rec = _child(name, args, work, limit)
        results.append(rec)
        print(json.dumps(rec), flush=True)
    failed = [r["check"] for r in results if r["ok"] is False]
    skipped = [r["check"] for r in results if r["ok"] is None]
    print("\nsummary:", file=sys.stderr)
    for r in results:
        what = f"{r.get('tokens_per_s')} tok/s, peak {r.get('peak_mem_gib')} GiB/GPU, MFU {r.get('mfu')}"
        verdict = {True: "PASS", False: "FAIL", None: "SKIP"}[r["ok"]]
        print(f"  {verdict}  {r['check']:<32} {what if r['ok'] else r.get('error')}", file=sys.stderr)
    passed = len(results) - len(failed) - len(skipped)
    print(json.dumps({"summary": {"passed": passed, "failed": failed, "skipped": skipped}}))
    print(f"total {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 1 if failed else 0


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _has_deepspeed() -> bool:
    return _has("deepspeed")


NEEDED = ("torch", "lightning", "transformers", "tokenizers", "safetensors", "omegaconf", "yaml", "scipy")
"""Packages every check needs (matplotlib only for the evaluation's plots: off without it)."""


if __name__ == "__main__":
    sys.exit(main())
