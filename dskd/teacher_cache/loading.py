"""Models of a cached run: the teacher's lower layers only (what a truncated student copies).

With ``teacher.mode=cached`` the teacher never runs, so its upper layers are never built: the
model is instantiated with ``student.num_layers`` layers (1 for ``student.kind=hf``, where only the
teacher's vocabulary and hidden size are needed for the shape checks) and only those weights load.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.utils import logging as hf_logging

from dskd.core.errors import DSKDError
from dskd.models.config import StudentConfig, TeacherConfig
from dskd.models.loading import resolve_model
from dskd.models.student import check_depth


def load_teacher_prefix(teacher: TeacherConfig, student: StudentConfig) -> nn.Module:
    """The teacher with only the layers ``student`` copies (float32, eval, frozen)."""
    resolved = resolve_model(teacher.model)
    kw = {"revision": teacher.revision} if teacher.revision and isinstance(resolved, str) else {}
    layers = student.num_layers if student.kind == "truncated" else 1
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity(logging.ERROR)  # the skipped upper layers are reported as unused weights
    try:
        config = AutoConfig.from_pretrained(resolved, **kw)
        check_depth(layers, config.num_hidden_layers)
        config.num_hidden_layers = layers
        if getattr(config, "layer_types", None) is not None:
            config.layer_types = list(config.layer_types)[:layers]
        model = AutoModelForCausalLM.from_pretrained(resolved, config=config, dtype=torch.float32, **kw)
    except (OSError, ValueError, KeyError) as e:
        raise DSKDError(f"Could not load the teacher '{teacher.model}' ({resolved}): {e}") from e
    finally:
        hf_logging.set_verbosity(verbosity)
    model.requires_grad_(False)
    return model.eval()
