"""Reading W&B run files without a server: the records of ``run-*.wandb`` transaction logs.

A ``.wandb`` file is a LevelDB-style log (32 KiB blocks of framed records) whose records are W&B's own
``wandb_internal_pb2.Record`` protobuf messages; wandb itself ships no Python reader of it (its Go core
reads it when syncing), so the framing is undone here and each record is parsed with wandb's protobuf.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dskd.core.errors import DSKDError

BLOCK = 32768
HEADER = 7  # ':W&B' + 2-byte version + 1-byte magic at the start; crc (4), length (2), kind (1) per record


def _payloads(path: Path) -> Iterator[bytes]:
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise DSKDError(f"{path} is not a W&B run log (no ':W&B' header).")
    pos, parts = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        if left < HEADER or kind == 0:  # block trailer / zero padding
            pos += left
            continue
        body, pos = data[pos + HEADER : pos + HEADER + length], pos + HEADER + length
        if kind == 1:  # full record
            yield body
        elif kind == 2:  # first, middle, last fragment
            parts = body
        elif kind == 3:
            parts += body
        elif kind == 4:
            yield parts + body


def records(path: str | Path) -> Iterator[Any]:
    """The ``Record`` messages of one ``run-*.wandb`` file, in the order they were written."""
    # deferred: wandb (heavy; only a reader of run files needs its protobuf)
    from wandb.proto import wandb_internal_pb2 as pb

    for payload in _payloads(Path(path)):
        record = pb.Record()
        record.ParseFromString(payload)
        yield record


def run_logs(run_dir: str | Path) -> list[Path]:
    """The ``.wandb`` files of the W&B runs (segments) under ``run_dir/wandb``, oldest first."""
    logs = Path(run_dir).glob("wandb/*run-*/run-*.wandb")
    return sorted(logs, key=lambda p: (p.stat().st_mtime, p.parent.name))


def history(path: str | Path) -> list[dict[str, Any]]:
    """The logged rows of one run log: key -> value (``_step`` is W&B's step of the row); a logged
    media object (table, image) is the dict of its fields (``_type``, ``path`` in the run's files/)."""
    rows = []
    for record in records(path):
        if record.HasField("history"):
            row: dict[str, Any] = {}
            for item in record.history.item:
                *parents, leaf = list(item.nested_key) or [item.key]
                node = row
                for key in parents:
                    node = node.setdefault(key, {})
                node[leaf] = json.loads(item.value_json)
            rows.append(row)
    return rows


def run_id(path: str | Path) -> str:
    """The W&B run id of a run log."""
    for record in records(path):
        if record.HasField("run"):
            return record.run.run_id
    raise DSKDError(f"{path} holds no run record; it is not a complete W&B run log.")
