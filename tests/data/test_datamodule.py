"""DSKDDataModule: config wiring, lexicon check, val hold-out, exact resume (hooks and a real Trainer)."""

from __future__ import annotations

import socket
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dskd.config.schema import ExperimentConfig
from dskd.core.errors import ArtifactMismatchError
from dskd.corpora.config import SourceConfig
from dskd.corpora.shards import index_file
from dskd.corpora.sources import split_files
from dskd.data.datamodule import DSKDDataModule
from dskd.lexicon import Lexicon
from dskd.models.loading import tokenizer_fingerprint

from .conftest import random_table

pytestmark = pytest.mark.integration  # the real SmolLM2 tokenizer


def make_lexicon(tokenizer, fingerprint=None, seed=0) -> Lexicon:
    """A real Lexicon object over random CSR rows (no artifact build needed)."""
    t = random_table(len(tokenizer), seed=seed, p=0.5)
    arrays = {}
    for rel, indptr, indices in (("syn", t.syn_indptr, t.syn_indices), ("ant", t.ant_indptr, t.ant_indices)):
        arrays |= {
            f"{rel}_indptr": indptr,
            f"{rel}_indices": indices,
            f"{rel}_sources": np.ones_like(indices),
        }
    arrays |= {"hyp_indptr": np.zeros(len(tokenizer) + 1, dtype=np.int64)}
    arrays |= {"hyp_indices": np.zeros(0, dtype=np.int64), "hyp_sources": np.zeros(0, dtype=np.int64)}
    fp = fingerprint or tokenizer_fingerprint(tokenizer)
    meta = {"tokenizer": {"name": "test", "vocab_size": len(tokenizer), "fingerprint": fp}}
    return Lexicon(arrays, meta, Path("."))


def config(tmp_path, n_docs=200, **data) -> ExperimentConfig:
    lines = [f"Paragraph {i}: the river bank was {'wide ' * (i % 7)}and calm." for i in range(n_docs)]
    (tmp_path / "corpus.txt").write_text("\n\n".join(lines) + "\n")
    cfg = ExperimentConfig()
    cfg.data.train = [SourceConfig(kind="text", path=str(tmp_path / "corpus.txt"))]
    cfg.data.continuations_dir = str(tmp_path / "targets")
    for k, v in {"seq_len": 32, "batch_size": 2, "num_workers": 2, "val_fraction": 0.2, **data}.items():
        setattr(cfg.data, k, v)
    return cfg


def sections(cfg: ExperimentConfig) -> tuple:
    """What a data module takes of ``cfg``: its data section and seed."""
    return cfg.data, cfg.seed


def take(dm, loader, n=None):
    out = []
    for batch in loader:
        out.append(dm.on_before_batch_transfer(batch, 0))
        if n is not None and len(out) == n:
            break
    return out


def equal(a, b):
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a, b)
    )


@pytest.mark.parametrize("pad_to", ["seq_len", "longest"])
def test_batches_have_the_agreed_keys_and_static_shapes(tmp_path, tokenizer, pad_to):
    """Static shapes with data.pad_to=seq_len; padded to the longest row, the token arrays are as wide
    as the batch's longest sequence (the sense arrays keep their shapes)."""
    dm = DSKDDataModule(*sections(config(tmp_path, pad_to=pad_to)), tokenizer, make_lexicon(tokenizer))
    dm.setup("fit")
    batches = take(dm, dm.train_dataloader())
    M = 25  # max(25, floor(0.4 * 32))
    for b in batches[:-2]:
        W = 32 if pad_to == "seq_len" else int(b["attention_mask"].sum(1).max())
        expected = {"input_ids": (2, W), "attention_mask": (2, W), "labels": (2, W), "sense_pos": (2, M)}
        expected |= {"sense_pos_mask": (2, M), "rand_pos": (2, M), "rand_pos_mask": (2, M)}
        expected |= {k: (2, M, 25) for k in ("syn_keys", "syn_mask", "ant_keys", "ant_mask")}
        expected |= {"n_neighbour_positions": (2,)}
        assert {k: tuple(v.shape) for k, v in b.items()} == expected  # stream_* metadata removed
    assert batches[0]["sense_pos_mask"].dtype == torch.bool and batches[0]["syn_keys"].dtype == torch.int64


def test_validation_holds_out_documents(tmp_path, tokenizer):
    dm = DSKDDataModule(*sections(config(tmp_path, num_workers=0)), tokenizer, make_lexicon(tokenizer))
    dm.setup("fit")

    def texts(loader):
        return {
            tokenizer.decode(ids[att.bool()])
            for b in take(dm, loader)
            for ids, att in zip(b["input_ids"], b["attention_mask"])
        }

    train, val = texts(dm.train_dataloader()), texts(dm.val_dataloader())
    train_docs = {d for t in train for d in t.split("<|im_end|>") if d}
    val_docs = {d for t in val for d in t.split("<|im_end|>") if d}
    assert not train_docs & val_docs and 20 <= len(val_docs) <= 60 and len(train_docs) + len(val_docs) == 200


def test_lexicon_for_another_tokenizer_is_refused(tmp_path, tokenizer):
    dm = DSKDDataModule(*sections(config(tmp_path)), tokenizer, make_lexicon(tokenizer, fingerprint="0" * 64))
    with pytest.raises(ArtifactMismatchError, match="built for tokenizer"):
        dm.setup("fit")


def test_resume_with_workers_sees_exactly_the_same_batches(tmp_path, tokenizer):
    cfg = config(tmp_path, shuffle_buffer=16)
    lex = make_lexicon(tokenizer)
    ref = DSKDDataModule(*sections(cfg), tokenizer, lex)
    ref.setup("fit")
    full = take(ref, ref.train_dataloader())
    for k in (5,):  # odd: the resumed loader must start with the second worker's shard
        first = DSKDDataModule(*sections(cfg), tokenizer, lex)
        first.setup("fit")
        it = iter(first.train_dataloader())
        head = [first.on_before_batch_transfer(next(it), 0) for _ in range(k)]
        next(it)  # prefetched by the loop but never trained on
        state = first.state_dict()
        second = DSKDDataModule(*sections(cfg), tokenizer, lex)
        second.setup("fit")
        second.load_state_dict(state)
        rest = take(second, second.train_dataloader())
        assert equal(head + rest, full), k


class _Recorder(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[tuple[int, ...]] = []

    def training_step(self, batch, idx):
        self.seen.append(
            tuple(batch["input_ids"].sum(1).tolist()) + tuple(batch["sense_pos"].sum(1).tolist())
        )
        return self.w * 0 + self.w.square()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(cfg, tokenizer, lex, root, ckpt=None, every=None):
    dm = DSKDDataModule(*sections(cfg), tokenizer, lex)
    model = _Recorder()
    saver = L.pytorch.callbacks.ModelCheckpoint(root, "{step}", every_n_train_steps=every, save_top_k=-1)
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        limit_val_batches=0,
        callbacks=[saver] if every else [],
        enable_checkpointing=bool(every),
    )
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt)
    return model.seen


@pytest.mark.parametrize("stop", [9, 22])  # inside epoch 0 and inside epoch 1 (17 steps per epoch)
def test_resume_through_a_real_trainer(tmp_path, tokenizer, stop):
    """Checkpoint written by Lightning mid-epoch (the loop has prefetched the next batch), then resumed."""
    cfg = config(tmp_path, n_docs=60, num_workers=2, shuffle_buffer=8)
    lex = make_lexicon(tokenizer)
    whole = _fit(cfg, tokenizer, lex, tmp_path / "a", every=stop)
    rest = _fit(cfg, tokenizer, lex, tmp_path / "b", ckpt=str(tmp_path / "a" / f"step={stop}.ckpt"))
    assert len(whole) == 34 and len(rest) == 34 - stop
    assert whole[:stop] + rest == whole


@pytest.mark.parametrize("workers", [0, 2])
def test_a_real_trainer_indexes_the_training_files_before_reading_them(tmp_path, tokenizer, workers):
    """Two workers are two shards: indexed before any is read; one process alone reads the file whole."""
    cfg = config(tmp_path, n_docs=30, num_workers=workers)
    (index,) = [index_file(f) for f in split_files(cfg.data.train[0])]
    found = []
    look = L.Callback()
    look.on_fit_start = lambda trainer, module: found.append(index.is_file())  # before any batch is read
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        callbacks=[look],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    assert not index.exists()
    trainer.fit(_Recorder(), datamodule=DSKDDataModule(*sections(cfg), tokenizer, make_lexicon(tokenizer)))
    assert found == [workers > 0]  # DSKDDataModule.prepare_data, run by Lightning before setup
    assert index.exists() == (workers > 0)


class _Counting(DSKDDataModule):
    """Keeps the streams it builds, to see what its process tokenized."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.built = []

    def stream(self, train):
        self.built.append(super().stream(train))
        return self.built[-1]


def _count_in_rank(rank: int, port: int, cfg, tokenizer, out) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        dm = _Counting(*sections(cfg), tokenizer)
        out[rank] = (dm.batches_per_epoch(2, 0), sum(s.tokenized for s in dm.built))
    finally:
        dist.destroy_process_group()


def test_each_process_counts_only_its_own_shards_for_the_schedule(tmp_path, tokenizer):
    """A real 2-process gloo group: the same count as one process counting both ranks, each process
    tokenizing only its own shards (before, each tokenized the whole stream)."""
    cfg = config(tmp_path, n_docs=300, num_workers=2)
    alone = _Counting(*sections(cfg), tokenizer)
    expected, everything = alone.batches_per_epoch(2, 0), alone.built[0].tokenized
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_count_in_rank, args=(port, cfg, tokenizer, out), nprocs=2, join=True, start_method="spawn")
        out = dict(out)
    assert out[0][0] == out[1][0] == expected > 0
    assert out[0][1] + out[1][1] == everything and max(out[0][1], out[1][1]) < 0.6 * everything
