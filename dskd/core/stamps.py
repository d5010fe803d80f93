"""Stage bookkeeping (`dskd reproduce`, `dskd ablate`, `dskd train`): skip stages whose artifacts are up
to date, say when a stage runs, stamp what it wrote.

A stage's *key* is everything its output depends on (its config section, upstream stage keys, the
dskd version). After a stage succeeds, ``<out>/.stage.json`` records that key; a later run with
the same key and the outputs present skips the stage.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import dskd
from dskd.core.devices import is_global_zero
from dskd.core.io import read_json, write_json_atomic

STAMP = ".stage.json"


def stage_key(*parts: Any) -> str:
    """A stable hash of dataclasses / JSON-able parts (and the dskd version)."""

    def plain(x: Any) -> Any:
        return asdict(x) if is_dataclass(x) and not isinstance(x, type) else x

    blob = json.dumps([dskd.__version__, *map(plain, parts)], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def is_current(out_dir: str | Path, key: str) -> bool:
    stamp = Path(out_dir) / STAMP
    if not stamp.is_file():
        return False
    try:
        return read_json(stamp).get("key") == key
    except (OSError, ValueError):
        return False


def run_stage(
    name: str,
    out_dir: str | Path,
    key: str,
    fn: Callable[[], Any],
    force: bool = False,
    collective: bool = False,
) -> Any:
    """Run ``fn`` unless ``out_dir`` holds the outputs of a run with the same key; stamp on success.

    In a job of several processes only the first (:func:`dskd.devices.is_global_zero`) runs a stage
    and writes its stamp; the others wait for the stamp and read its result (``force`` is the first
    one's). A ``collective`` stage (training, a sharded build: every process takes part) runs in all of
    them, every one deciding alike (``force`` runs it everywhere); still only the first stamps.
    """
    out = Path(out_dir)
    first = is_global_zero()
    if (not force or not (first or collective)) and is_current(out, key):
        print(f"=== {name}: up to date ({out}), skipped", flush=True)
        return read_json(out / STAMP).get("result")
    if not first and not collective:
        return _wait_for_stamp(name, out, key)
    print(f"=== {name}: running -> {out}", flush=True)
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    if first:
        write_json_atomic(out / STAMP, {"stage": name, "key": key, "seconds": seconds, "result": result})
    print(f"=== {name}: done in {seconds:.1f} s", flush=True)
    return result


def _wait_for_stamp(name: str, out: Path, key: str, poll_s: float = 2.0) -> Any:
    """Block until the first process has stamped ``out`` with ``key``; return the stage's result."""
    print(f"=== {name}: waiting for the first process to write {out}", flush=True)
    while not is_current(out, key):
        time.sleep(poll_s)
    return read_json(out / STAMP).get("result")
