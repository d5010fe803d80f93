"""A shared trunk: a truncated student whose frozen bottom is the teacher's own modules.

With ``student.share_trunk`` the truncated student's embeddings, frozen layers, final norm and LM
head are the teacher's module objects, not copies (:func:`dskd.models.student.truncate`); only its
trainable top layers are its own. On the same input the frozen layers compute what the teacher's
first layers compute, so a step runs the teacher once, keeps the output of its layer ``depth - 1``
(the trunk's output), and runs only the student's trainable layers on it (:class:`Trunk`): 32 + 2
layer forwards instead of 32 + 16 for the paper's student, and one set of frozen weights per device.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from dskd.models.student import decoder_layers


def shared_depth(student: nn.Module, teacher: nn.Module | None) -> int:
    """How many of the student's bottom layers are the teacher's own modules (0: none are shared)."""
    embeddings = getattr(student, "get_input_embeddings", None)  # not a Hugging Face model: shares none
    if teacher is None or embeddings is None or embeddings() is not teacher.get_input_embeddings():
        return 0
    depth = 0
    for own, theirs in zip(decoder_layers(student), decoder_layers(teacher), strict=False):
        if own is not theirs:
            break
        depth += 1
    return depth


def _upper_decoder(decoder: nn.Module, depth: int) -> nn.Module:
    """A view of ``decoder`` whose layers are its layers from ``depth`` on (the same modules, not
    copies): called with ``inputs_embeds`` = the output of layer ``depth - 1`` it computes what the
    whole decoder computes. Not registered anywhere, so no state dict or optimizer sees it twice."""
    view = copy.copy(decoder)
    view._modules = {**decoder._modules, "layers": nn.ModuleList(list(decoder.layers)[depth:])}
    return view


class Trunk:
    """The split of a run whose student shares its bottom ``depth`` layers with the teacher."""

    def __init__(self, student: nn.Module, teacher: nn.Module, depth: int) -> None:
        self.depth = depth
        self._teacher = teacher
        self._decoder = student.get_decoder()

    def teacher_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the teacher's last hidden states, the trunk's output) of one teacher forward, without
        gradient: the trunk's output is captured on its way through the teacher's layer ``depth - 1``."""
        captured: list[torch.Tensor] = []
        layer = decoder_layers(self._teacher)[self.depth - 1]
        hook = layer.register_forward_hook(lambda _m, _i, out: captured.append(_first(out)))
        try:
            with torch.no_grad():
                out = self._teacher.get_decoder()(
                    input_ids=input_ids, attention_mask=attention_mask, use_cache=False
                )
        finally:
            hook.remove()
        return out.last_hidden_state, captured[0]

    def student_states(self, trunk: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The student's last hidden states from the trunk's output: its trainable layers and final norm."""
        # the view is taken per call: FSDP replaces the trainable layers by their wrapped units
        upper = _upper_decoder(self._decoder, self.depth)
        dtype = next(upper.layers.parameters()).dtype
        # under autocast the trunk's dtype is the teacher's; without it the layers need their own
        x = trunk if torch.is_autocast_enabled(trunk.device.type) else trunk.to(dtype)
        out = upper(inputs_embeds=x, attention_mask=attention_mask, use_cache=False)
        return out.last_hidden_state


def shared_modules(student: nn.Module, teacher: nn.Module | None) -> list[nn.Module]:
    """The student's outermost modules that are the teacher's own (embeddings, shared layers, final
    norm, LM head, rotary tables): what FSDP leaves out of its units (the teacher needs them whole)."""
    if teacher is None:
        return []
    theirs = {id(m) for m in teacher.modules()}
    shared: list[nn.Module] = []
    inside: set[int] = set()
    for module in student.modules():  # parents before children
        if id(module) in theirs and id(module) not in inside:
            shared.append(module)
            inside.update(id(m) for m in module.modules())
    return shared


def _first(out: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """A decoder layer's hidden states (older Hugging Face layers return a tuple)."""
    return out[0] if isinstance(out, tuple) else out


def splits_exactly(student: nn.Module, teacher: nn.Module) -> bool:
    """Whether the split reproduces the student's own forward on a few tokens (a decoder that rescales
    ``inputs_embeds``, as Gemma's does, does not split at a layer)."""
    device = student.get_input_embeddings().weight.device
    ids = torch.arange(1, 9, device=device).unsqueeze(0)
    am = torch.ones_like(ids)
    trunk = Trunk(student, teacher, shared_depth(student, teacher))
    with torch.no_grad():
        whole = student.get_decoder()(input_ids=ids, attention_mask=am, use_cache=False).last_hidden_state
        split = trunk.student_states(trunk.teacher_states(ids, am)[1], am)
    return bool(torch.allclose(whole.float(), split.float(), rtol=1e-2, atol=1e-2))
