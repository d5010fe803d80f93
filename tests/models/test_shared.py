"""TeacherHolder: one teacher per process, loaded once, replaced (never doubled), released."""

from __future__ import annotations

import torch

import dskd.models.shared as shared
from dskd.models.config import TeacherConfig
from dskd.models.shared import TeacherHolder, held
from dskd.testing.fixtures import llama_config, random_model_dir


def test_the_held_teacher_is_loaded_once_and_replaced_by_another(tmp_path, monkeypatch):
    folder = random_model_dir(tmp_path, llama_config(32, 16, 2, max_len=16))
    loads, load = [], shared.load_causal_lm
    monkeypatch.setattr(shared, "load_causal_lm", lambda *a, **k: loads.append(a) or load(*a, **k))
    holder = TeacherHolder()
    cfg = TeacherConfig(model=str(folder), dtype="float32")
    a = holder.get(cfg, torch.device("cpu"))
    assert holder.get(cfg, torch.device("cpu")) is a and len(loads) == holder.loads == 1
    assert not any(p.requires_grad for p in a.parameters()) and not a.training
    b = holder.get(TeacherConfig(model=str(folder), dtype="bfloat16"), torch.device("cpu"))
    assert b is not a and next(b.parameters()).dtype == torch.bfloat16 and holder.loads == 2
    holder.release()
    assert holder.get(cfg, torch.device("cpu")) is not b and holder.loads == 3


def test_a_stage_without_a_holder_lets_its_own_teacher_go(tmp_path):
    import gc
    import weakref

    folder = random_model_dir(tmp_path, llama_config(32, 16, 2, max_len=16))
    given = TeacherHolder()
    with held(given) as holder:
        assert holder is given
    with held(None) as holder:
        ref = weakref.ref(holder.get(TeacherConfig(model=str(folder), dtype="float32"), torch.device("cpu")))
    gc.collect()
    assert ref() is None


def test_a_held_model_is_handed_out_without_loading(tmp_path):
    model = torch.nn.Linear(2, 2)
    holder = TeacherHolder()
    cfg = TeacherConfig(model=str(tmp_path / "nothing-here"), dtype="bfloat16")
    holder.hold(cfg, model)
    assert holder.get(cfg, torch.device("cpu")) is model and holder.loads == 0
    assert not model.weight.requires_grad and not model.training
