"""GPU-only checks for `make gpu-check`: FSDP, DeepSpeed ZeRO-2/3 and bf16 on random Llama-shaped models.

Each check trains a truncated student of a random teacher (no hub, no assets) for a few steps with
the sense loss on, exports it, and prints one JSON line: tokens per second (median over the steps
after the first), peak GPU memory and wall time. Every check runs in its own subprocess with a
timeout, so a crash or hang in one does not hide the others; a summary follows, and the exit status
is 1 when any check failed.

    python scripts/gpu_check.py                 # all checks
    python scripts/gpu_check.py --only fsdp     # checks whose name contains 'fsdp'
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
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


def _shape(args: argparse.Namespace) -> dict[str, int]:
    return TINY if args.tiny else SHAPE


def _prepare(work: Path, shape: dict[str, int]) -> None:
    """The random teacher folder and its sense dictionary, shared by all checks."""
    from dskd.testing import llama_config, random_model_dir, random_senses

    if not (work / "teacher" / "config.json").exists():
        cfg = llama_config(
            shape["vocab"], shape["hidden"], shape["layers"], shape["heads"], shape["kv_heads"], max_len=2048
        )
        random_model_dir(work / "teacher", cfg)
    if not (work / "senses" / "senses.safetensors").exists():
        random_senses(work / "senses", shape["vocab"], shape["hidden"], k=5)


def _config(work: Path, name: str, steps: int, batch: int, devices: str, accelerator: str):
    from dskd.config import config_from_dict

    data: dict = {
        "name": name,
        "family": "gpu-check",
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

    from dskd.testing import SyntheticBatches
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
    with open(run_dir(cfg) / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    key = (
        "train/items_per_sec"
        if any(r.get("train/items_per_sec") for r in rows)
        else "train/device/items_per_sec"
    )
    speeds = [float(r[key]) for r in rows if r.get(key)]  # tokens/s of all processes (ThroughputMonitor)
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    return {
        "check": name,
        "ok": summary["global_step"] == steps and all(map(_finite, losses)),
        "tokens_per_s": round(statistics.median(speeds), 1) if speeds else None,
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if gpu else None,
        "wall_s": round(wall, 1),
        "steps": summary["global_step"],
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "export_dir": summary["export_dir"],
        "device": torch.cuda.get_device_name(0) if gpu else "cpu",
    }


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


def _child(name: str, args: argparse.Namespace, work: Path) -> dict:
    cmd = [sys.executable, __file__, "--run", name, "--work", str(work), "--steps", str(args.steps)]
    cmd += ["--batch", str(args.batch), "--seq", str(args.seq), "--devices", args.devices]
    cmd += ["--accelerator", args.accelerator] + (["--tiny"] if args.tiny else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"check": name, "ok": False, "error": f"timed out after {args.timeout} s"}
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
    p.add_argument("--timeout", type=int, default=75, help="seconds per check")
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
        print("\n".join(CHECKS))
        return 0
    if args.run:  # child: one check, one JSON line
        record = run_one(args)
        print(json.dumps(record), flush=True)
        return 0 if record["ok"] else 1

    names = [n for n in CHECKS if not args.only or any(o in n for o in args.only)]
    if not names:
        print(f"no check matches {args.only}; checks: {', '.join(CHECKS)}", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="dskd-gpu-check-"))
    t0 = time.perf_counter()
    _prepare(work, _shape(args))
    print(
        json.dumps(
            {"prepared": str(work), "shape": _shape(args), "seconds": round(time.perf_counter() - t0, 1)}
        )
    )
    results = []
    for name in names:
        rec = _child(name, args, work)
        results.append(rec)
        print(json.dumps(rec), flush=True)
    failed = [r["check"] for r in results if not r["ok"]]
    print("\nsummary:", file=sys.stderr)
    for r in results:
        what = (
            f"{r.get('tokens_per_s')} tok/s, peak {r.get('peak_mem_gib')} GiB" if r["ok"] else r.get("error")
        )
        print(f"  {'PASS' if r['ok'] else 'FAIL'}  {r['check']:<32} {what}", file=sys.stderr)
    print(json.dumps({"summary": {"passed": len(results) - len(failed), "failed": failed}}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
