"""One teacher per process for the stages that run in it (`dskd reproduce`; `dskd train` building the
stages it lacks): the senses build, the teacher's continuations, the teacher cache, training and the
evaluation take the teacher a :class:`TeacherHolder` holds instead of each loading its own, so a
process never holds two (and loads it once where every stage runs it).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import nn

from dskd.models.config import TeacherConfig
from dskd.models.loading import load_causal_lm


class TeacherHolder:
    """The teacher of this process, loaded on first use and handed to every stage after."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._model: nn.Module | None = None
        self.loads = 0
        """How many times a teacher was loaded (what holding it saves)."""

    def get(self, teacher: TeacherConfig, device: torch.device) -> nn.Module:
        """The teacher ``teacher`` names (frozen, eval mode) on ``device``: the one held, moved there if
        it is elsewhere; loaded straight onto ``device`` when none is held or the held one is another
        model, revision or dtype (which goes first: never two at once)."""
        key = _key(teacher)
        if self._model is None or self._key != key:
            self.release()
            model = load_causal_lm(teacher.model, teacher.dtype, teacher.revision, device=device)
            self._model, self._key = model.requires_grad_(False), key
            self.loads += 1
        if next(self._model.parameters()).device != torch.device(device):
            self._model.to(device)
        return self._model.eval()

    def hold(self, teacher: TeacherConfig, model: nn.Module) -> None:
        """Hold ``model``, built already (e.g. random weights made on the GPU: `make gpu-check`), as the
        teacher ``teacher`` names: :meth:`get` hands it out instead of loading one."""
        self.release()
        self._model = model.requires_grad_(False).eval()
        self._key = _key(teacher)

    def release(self) -> None:
        """Let the held teacher go and hand its accelerator memory back (a stage that does not run it,
        e.g. cached training, needs the room)."""
        self._model = self._key = None
        release_device_memory()


def _key(teacher: TeacherConfig) -> tuple:
    """What makes two teacher configs the same model: its name, revision and dtype."""
    return (teacher.model, teacher.revision, teacher.dtype)


@contextlib.contextmanager
def held(teachers: TeacherHolder | None) -> Iterator[TeacherHolder]:
    """``teachers``, or (None) a holder of the block's own whose teacher goes when the block ends (a
    stage run alone)."""
    if teachers is not None:
        yield teachers
        return
    own = TeacherHolder()
    try:
        yield own
    finally:
        own.release()


def release_device_memory() -> None:
    """Collect freed models (a trainer's reference cycles keep its teacher until a collection) and hand
    their accelerator memory back."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class StageProcess(NamedTuple):
    """How this process runs a stage: ``teachers`` its held teacher (None: the stage loads its own),
    ``together`` every process of the default group runs the stage (torchrun, srun), each a share,
    ``progress`` the first process shows the stage's progress."""

    teachers: TeacherHolder | None = None
    together: bool = False
    progress: bool = True
