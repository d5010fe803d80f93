"""The distillation LightningModule: CE + KD (+ lambda * sense loss for method=dskd).

The teacher is held outside the ``nn.Module`` tree (a plain attribute set with
``object.__setattr__``), so no optimizer, checkpoint or sharding strategy ever sees it: it stays
frozen, unsharded and replicated per device, and is moved to the device by this module itself.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from dskd.config.schema import ExperimentConfig
from dskd.core.batch import IGNORE_INDEX, SenseBatch, TokenBatch
from dskd.core.errors import ConfigError
from dskd.losses.config import SenseLossConfig
from dskd.losses.kd import ce_and_kd_chunked, kd_loss, position_mask, validation_sums_chunked
from dskd.losses.sampled import TeacherSamples, sampled_kd_loss
from dskd.losses.sense import sense_loss
from dskd.losses.topk import TeacherTopK, topk_kd_loss
from dskd.models.loading import resolve_dtype
from dskd.training.callbacks import check_finite, check_skip_limits
from dskd.training.on_policy import SenseSampler, training_batch
from dskd.training.schedule import total_optimizer_steps, warmup_cosine

log = logging.getLogger(__name__)


def _gathered(module: nn.Module):
    """Gather a ZeRO-3 partitioned module's weights for reading outside its forward (else a no-op)."""
    if not any(hasattr(p, "ds_id") for p in module.parameters()):
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None)


def _check_teacher_mode(cfg: ExperimentConfig, teacher: nn.Module | None, cached: Any | None) -> None:
    """The teacher (online) or its cache (cached) is there; the config itself was checked at load."""
    mode = cfg.teacher.mode
    if mode == "online" and teacher is None:
        raise ConfigError("teacher.mode=online needs the teacher model.")
    if mode == "cached" and cfg.data.on_policy.fraction > 0 and teacher is None:
        raise ConfigError(
            "teacher.mode=cached with data.on_policy.fraction > 0 needs the teacher model too: it scores "
            "the student's generated text, which the cache cannot hold."
        )
    if mode == "cached" and cached is None:
        raise ConfigError(
            "teacher.mode=cached needs the teacher cache (dskd.teacher_cache.build.open_cache); build it "
            "with `dskd cache build CONFIG`."
        )


CachedTargets = TeacherTopK | TeacherSamples
"""The KD targets a teacher cache gives for a batch."""


def _check_sense_positions_stored(batch: SenseBatch, stored: torch.Tensor) -> None:
    """Refuse a batch whose drawn P1 positions have no cached teacher hidden state (the cache's
    hidden_tokens were checked against the run's at open: this only catches a damaged cache)."""
    pos, on = batch["sense_pos"].long(), batch["sense_pos_mask"].bool()
    missing = on & ~stored.gather(1, pos)
    if missing.any():
        raise ConfigError(
            f"{int(missing.sum())} sense-loss positions of this batch have no teacher hidden state in the "
            "teacher cache (cache.hidden_positions=sense covers only targets with senses or "
            "neighbours of the lexicon and sense dictionary it was built with); rebuild the cache with "
            "`dskd cache build CONFIG` or cache.hidden_positions=all."
        )


class _Frozen:
    """Holder of what the module uses but must never own (teacher, sense dictionary, teacher cache)."""

    def __init__(self, teacher: nn.Module | None, senses: Any | None, cached: Any | None) -> None:
        self.teacher = teacher
        self.senses = senses
        self.cached = cached


def sense_margin(cfg: SenseLossConfig, senses: Any) -> float:
    """The hinge margin in MSE units: ``cfg.margin``, or the ``cfg.margin_quantile`` of the
    dictionary's teacher-state-to-unrelated-sense MSE (docs/losses.md)."""
    if cfg.margin_quantile is None:
        return cfg.margin
    margin = senses.unrelated_sense_mse_quantile(cfg.margin_quantile)
    log.info("loss.sense.margin_quantile=%s: hinge margin %.4f (MSE units)", cfg.margin_quantile, margin)
    return margin


def frozen_state_keys(module: nn.Module) -> frozenset[str]:
    """State-dict keys of the frozen parameters of ``module`` (a tied weight under each of its names)."""
    return frozenset(n for n, p in module.named_parameters(remove_duplicate=False) if not p.requires_grad)


class DistillationModule(pl.LightningModule):
    """Trains ``student`` (and ``projection``) against a frozen ``teacher``.

    ``generation_config`` (the teacher's, as a dict) is stored in the checkpoints for the export.
    With ``teacher.mode=cached``, ``cached`` (a :class:`dskd.teacher_cache.CachedTeacher`) gives the
    teacher's KD targets and hidden states of each fixed-text batch: no teacher forward runs, and KD
    is estimated from the cached samples (``dskd.losses.sampled``) or approximated from the top-k
    logits (``dskd.losses.topk``). ``teacher`` is then None, unless ``data.on_policy.fraction > 0``:
    the live teacher scores the on-policy batches (exact KD, as online), the cache the rest.
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        student: nn.Module,
        teacher: nn.Module | None,
        senses: Any | None = None,
        projection: nn.Module | None = None,
        tokenizer_spec: str | None = None,
        cached: Any | None = None,
        generation_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if cfg.method == "dskd" and senses is None:
            raise ConfigError("method=dskd needs a sense dictionary (build it with `dskd senses build`).")
        _check_teacher_mode(cfg, teacher, cached)
        self.cfg = cfg
        self.student = student
        self.projection = projection
        self.tokenizer_spec = tokenizer_spec or cfg.teacher.model
        self.generation_config = generation_config  # the teacher's, for the export
        if teacher is not None:
            teacher.requires_grad_(False)
            teacher.eval()
        object.__setattr__(self, "_frozen", _Frozen(teacher, senses, cached))
        self.sense_margin = sense_margin(cfg.loss.sense, senses) if cfg.method == "dskd" else None
        self.skipped_steps = 0
        self.train_batches = 0
        """Training batches taken so far over the whole run (resumed from checkpoints): the index that
        decides which batches are on-policy (dskd.training.on_policy)."""
        self._consecutive_skips = 0
        self.total_steps: int | None = None
        """Optimizer steps of the lr schedule (set by configure_optimizers)."""
        self._val_sums: torch.Tensor | None = None
        self._frozen_keys = frozen_state_keys(self)
        """State-dict keys of the student's frozen weights (left out of trainable-only checkpoints)."""
        self._state_keys = frozenset(self.state_dict())
        self._frozen_dtype = str(resolve_dtype(cfg.teacher.dtype)).removeprefix("torch.")
        """The dtype the student's frozen weights were copied from the teacher in (as it was loaded)."""

    # ------------------------------------------------------------------ placement

    @property
    def teacher(self) -> nn.Module | None:
        return self._frozen.teacher

    @property
    def cached(self) -> Any | None:
        return self._frozen.cached

    @property
    def senses(self) -> Any | None:
        return self._frozen.senses

    def _place_teacher(self) -> None:
        if self.teacher is None:
            return
        device = self.trainer.strategy.root_device
        auto_cpu = device.type == "cpu" and self.cfg.teacher.dtype == "auto"
        dtype = torch.float32 if auto_cpu else resolve_dtype(self.cfg.teacher.dtype)
        p = next(self.teacher.parameters())
        if p.device != device or p.dtype != dtype:
            self.teacher.to(device=device, dtype=dtype)
        self.teacher.eval()

    def _place_senses(self) -> None:
        """A dictionary kept on a GPU moves to this process's GPU (not every process's GPU 0)."""
        senses, device = self.senses, self.trainer.strategy.root_device
        centroids = getattr(senses, "centroids", None)
        if centroids is not None and centroids.is_cuda and centroids.device != device:
            self._frozen.senses = type(senses)(
                centroids.to(device), senses.counts.to(device), senses.key_ids.to(device), senses.meta
            )

    def on_fit_start(self) -> None:
        self._place_teacher()
        self._place_senses()

    def on_validation_start(self) -> None:
        self._place_teacher()

    # ------------------------------------------------------------------ forward and losses

    def _hidden(
        self, batch: TokenBatch, live: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None, CachedTargets | None]:
        """(student, teacher) last hidden states after the final norm (the LM-head inputs), and the
        teacher's cached KD targets (None online). Cached: no teacher forward (h_t is None in a
        KD-only cache), unless ``live`` (an on-policy batch, which no cache holds): the teacher runs."""
        ids, am = batch["input_ids"], batch["attention_mask"]
        targets = None
        if self.cached is not None and not live:
            out = self.cached.lookup(ids, am)
            h_t, targets = out.hidden, out.targets
            if out.hidden_stored is not None and self.cfg.method == "dskd" and "sense_pos" in batch:
                _check_sense_positions_stored(batch, out.hidden_stored)
        else:
            with torch.no_grad():
                h_t = self.teacher.get_decoder()(input_ids=ids, attention_mask=am, use_cache=False)
            h_t = h_t.last_hidden_state
        # use_cache=False: no key/value cache (a forward of 2048 tokens would keep one per layer)
        h_s = self.student.get_decoder()(input_ids=ids, attention_mask=am, use_cache=False).last_hidden_state
        return h_s, h_t, targets

    def _ce_kd(
        self,
        h_s: torch.Tensor,
        h_t: torch.Tensor | None,
        labels: torch.Tensor,
        mask: torch.Tensor,
        targets: CachedTargets | None = None,
        ce_applies: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ce_weight * CE + KD with gradient, CE, KD); cached KD when ``targets`` (cache) is given.
        Without ``ce_applies`` (an on-policy batch: the tokens are the student's own) CE is 0."""
        kd_cfg, ce_weight = self.cfg.loss.kd, self.cfg.loss.ce_weight
        labels = labels.masked_fill(~mask if ce_applies else torch.ones_like(mask), IGNORE_INDEX)
        s_head = self.student.get_output_embeddings()
        if kd_cfg.chunk_size:  # online only; with ZeRO-3 only for a frozen head (dskd.config.rules)
            t_head = self.teacher.get_output_embeddings()
            with _gathered(s_head):
                out = ce_and_kd_chunked(
                    h_s,
                    s_head.weight,
                    h_t,
                    t_head.weight,
                    labels,
                    kd=kd_cfg,
                    kd_mask=mask,
                    student_bias=s_head.bias,
                    teacher_bias=t_head.bias,
                    ce_weight=ce_weight,
                )
            return out.total, out.ce, out.kd
        logits_s = s_head(h_s)
        if ce_applies:
            ce = F.cross_entropy(logits_s.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)
        else:
            ce = torch.zeros((), device=logits_s.device)
        kd, _ = self._kd(logits_s, h_t, mask, targets)
        return ce_weight * ce + kd, ce.detach(), kd.detach()

    def _kd(
        self,
        logits_s: torch.Tensor,
        h_t: torch.Tensor | None,
        mask: torch.Tensor,
        targets: CachedTargets | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(KD, the teacher's top-1 token per position): exact from the online teacher's logits, or
        from the cache: the sampled estimate (``dskd.losses.sampled``) or the top-k approximation
        (``dskd.losses.topk``)."""
        if isinstance(targets, TeacherSamples):
            return sampled_kd_loss(logits_s, targets, mask, kd=self.cfg.loss.kd), targets.top1
        if targets is not None:
            return topk_kd_loss(logits_s, targets, mask, kd=self.cfg.loss.kd), targets.indices[..., 0]
        with torch.no_grad():
            logits_t = self.teacher.get_output_embeddings()(h_t)
        return kd_loss(logits_s, logits_t, mask, kd=self.cfg.loss.kd), logits_t.argmax(-1)

    def _sense(self, h_s: torch.Tensor, h_t: torch.Tensor, batch: SenseBatch):
        h = self.projection(h_s) if self.projection is not None else h_s
        return sense_loss(h, h_t, batch, self.senses.lookup, self.cfg.loss.sense, margin=self.sense_margin)

    # ------------------------------------------------------------------ steps

    def losses(
        self, batch: TokenBatch | SenseBatch, on_policy: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(loss with gradient, detached components for the finiteness check, values to log).
        An ``on_policy`` batch (the student's own continuation) gets no CE (and logs NaN for it) and is
        scored by the live teacher, also in a cached run."""
        h_s, h_t, targets = self._hidden(batch, live=on_policy)
        mask = position_mask(batch["labels"], batch["attention_mask"])
        loss, ce, kd = self._ce_kd(h_s, h_t, batch["labels"], mask, targets, ce_applies=not on_policy)
        parts = {"ce": ce, "kd": kd}
        # Lightning repeats a key's last value on steps that do not log it: NaN marks "CE did not apply"
        logs = {"train/ce": torch.full_like(ce, math.nan) if on_policy else ce, "train/kd": kd}
        if self.cfg.method == "dskd":
            sense = self._sense(h_s, h_t, batch)
            loss = loss + self.cfg.loss.sense.weight * sense["total"]
            parts["sense"] = sense["total"].detach()
            logs.update({f"train/sense_{k}": sense[k].detach() for k in ("pos", "neg", "rand")})
            logs["train/sense"] = sense["total"].detach()
            logs["train/candidates_per_position"] = sense["n_pos_candidates"] + sense["n_neg_candidates"]
            logs.update({f"train/sense_diag/{k}": v for k, v in sense["diagnostics"].items()})
            n_valid = mask.sum().clamp(min=1)
            logs["train/neighbour_fraction"] = batch["n_neighbour_positions"].sum().float() / n_valid
        parts["loss"] = loss.detach()
        logs["train/loss"] = loss.detach()
        return loss, parts, logs

    def _on_policy(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(the batch to train on, on-policy values to log): see dskd.training.on_policy."""
        op, index = self.cfg.data.on_policy, self.train_batches
        self.train_batches += 1
        senses = self._sense_sampler() if self.cfg.method == "dskd" and op.fraction > 0 else None
        # the data's tokenizer's EOS (a chat template's end of turn), where the data module has one
        eos = getattr(getattr(self.trainer.datamodule, "tokenizer", None), "eos_token_id", None)
        return training_batch(
            self.student,
            batch,
            op,
            seed=self.cfg.seed,
            index=index,
            rank=self.global_rank,
            senses=senses,
            eos=eos,
        )

    def _sense_sampler(self) -> SenseSampler:
        """The DSKD data module's sampler of an on-policy batch's sense positions."""
        dm = self.trainer.datamodule
        if not hasattr(dm, "on_policy_senses"):
            raise ConfigError(
                "method=dskd with data.on_policy.fraction > 0 needs the DSKD data module (it draws the "
                f"sense positions of the generated text); {type(dm).__name__} cannot."
            )
        return dm.on_policy_senses

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        self._place_teacher()
        batch, on_policy_logs = self._on_policy(batch)
        on_policy = bool(on_policy_logs.get("train/on_policy"))
        loss, parts, logs = self.losses(batch, on_policy=on_policy)
        logs.update(on_policy_logs)
        bs = batch["input_ids"].shape[0]
        finite = check_finite(parts, self.global_step, self.cfg.trainer.nan_policy, self.trainer.strategy)
        self._consecutive_skips = 0 if finite else self._consecutive_skips + 1
        self.skipped_steps += 0 if finite else 1
        # a skipped step logs its own (non-finite) values, flagged, never the previous step's
        self.log_dict(self._mean_over_processes(logs), on_step=True, on_epoch=False, batch_size=bs)
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        flags = {"train/skipped": float(not finite), "train/skipped_steps": float(self.skipped_steps)}
        self.log_dict({"train/lr": lr, **flags}, on_step=True, batch_size=1)
        if not finite:
            check_skip_limits(
                self.skipped_steps,
                self._consecutive_skips,
                self.cfg.trainer,
                self.named_parameters(),
                self.global_step,
            )
            return None
        self.log("loss", loss.detach(), prog_bar=True, logger=False, batch_size=bs)
        return loss

    def _mean_over_processes(self, logs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The logged values averaged over all processes (one all-reduce), not rank 0's alone."""
        if self.trainer.world_size == 1:
            return logs
        device = self.trainer.strategy.root_device
        stacked = torch.stack([torch.as_tensor(v, device=device).detach().float() for v in logs.values()])
        return dict(zip(logs, self.trainer.strategy.reduce(stacked, reduce_op="mean"), strict=True))

    def on_train_batch_end(self, outputs: Any, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Under DeepSpeed, log the gradient norm its engine measured in the optimizer step."""
        engine = getattr(self.trainer.strategy, "deepspeed_engine", None)
        norm = engine.get_global_grad_norm() if engine is not None else None
        if norm is not None:
            self.log("train/grad_norm", float(norm), on_step=True, on_epoch=False, batch_size=1)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Log the gradient norm (before clipping); under FSDP also clip here (Lightning cannot)."""
        if self.cfg.trainer.strategy == "fsdp":
            clip = self.cfg.optim.grad_clip
            model = self.trainer.strategy.model  # the root FSDP module: the norm covers all shards
            norm = model.clip_grad_norm_(clip if clip else float("inf"))
        else:
            grads = [p.grad for p in self.parameters() if p.requires_grad and p.grad is not None]
            if not grads:  # DeepSpeed keeps its gradients to itself (see on_train_batch_end)
                return
            norm = torch.stack([g.detach().float().square().sum() for g in grads]).sum().sqrt()
        self.log("train/grad_norm", norm, on_step=True, on_epoch=False, batch_size=1)

    def on_validation_epoch_start(self) -> None:
        self._val_sums = None

    def validation_step(self, batch: TokenBatch, batch_idx: int) -> None:
        self._place_teacher()
        h_s, h_t, targets = self._hidden(batch)
        mask = position_mask(batch["labels"], batch["attention_mask"])
        labels = batch["labels"].masked_fill(~mask, IGNORE_INDEX)
        if self.cfg.loss.kd.chunk_size and targets is None:
            sums = self._validation_sums_chunked(h_s, h_t, labels, mask)
        else:
            sums = self._validation_sums(h_s, h_t, labels, mask, targets)
        self._val_sums = sums if self._val_sums is None else self._val_sums + sums

    def _validation_sums(
        self,
        h_s: torch.Tensor,
        h_t: torch.Tensor | None,
        labels: torch.Tensor,
        mask: torch.Tensor,
        targets: CachedTargets | None,
    ) -> torch.Tensor:
        """[CE sum, KD sum, top-1 agreements, positions] from the full logits (or the teacher cache)."""
        logits_s = self.student.get_output_embeddings()(h_s)
        n = mask.sum()
        ce_sum = F.cross_entropy(
            logits_s.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        kd, teacher_top1 = self._kd(logits_s, h_t, mask, targets)
        kd_sum = kd * n
        agree = ((logits_s.argmax(-1) == teacher_top1) & mask).sum()
        return torch.stack([ce_sum.float(), kd_sum.float(), agree.float(), n.float()])

    def _validation_sums_chunked(
        self, h_s: torch.Tensor, h_t: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """The same sums, ``loss.kd.chunk_size`` positions at a time, as in training: neither model's
        full-vocabulary logits exist (7 GB at batch 1, 2048 tokens, V = 128k)."""
        s_head, t_head = self.student.get_output_embeddings(), self.teacher.get_output_embeddings()
        with _gathered(s_head):
            return validation_sums_chunked(
                h_s,
                s_head.weight,
                h_t,
                t_head.weight,
                labels,
                mask,
                kd=self.cfg.loss.kd,
                student_bias=s_head.bias,
                teacher_bias=t_head.bias,
            )

    def on_validation_epoch_end(self) -> None:
        if self._val_sums is None:
            return
        sums = self.trainer.strategy.reduce(self._val_sums, reduce_op="sum")
        ce_sum, kd_sum, agree, n = sums.tolist()
        n = max(n, 1.0)
        ce, kd = ce_sum / n, kd_sum / n
        self.log_dict(
            {
                "val/loss": self.cfg.loss.ce_weight * ce + kd,
                "val/ce": ce,
                "val/kd": kd,
                "val/ppl": math.exp(min(ce, 50.0)),
                "val/top1_agreement": agree / n,
            },
            on_epoch=True,
            batch_size=1,
            sync_dist=True,  # already reduced: every process holds the same values
        )

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self) -> dict[str, Any]:
        o = self.cfg.optim
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ConfigError(
                "The student has no trainable parameters; raise student.trainable_top_layers above 0."
            )
        lr = o.lr * (self.trainer.world_size if o.scale_lr else 1)
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=o.weight_decay)
        self.total_steps = total_optimizer_steps(self.trainer, self.cfg)
        factor = warmup_cosine(round(o.warmup_ratio * self.total_steps), self.total_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from dskd.config.loading import config_to_yaml
        from dskd.training.resume import fingerprint

        config = config_to_yaml(self.cfg)
        checkpoint["dskd"] = {
            "config": config,
            "fingerprint": fingerprint(config),
            "student_config": self.student.config.to_dict(),
            "tokenizer": str(self.tokenizer_spec),
            "skipped_steps": self.skipped_steps,
            "train_batches": self.train_batches,
            "generation_config": self.generation_config,
        }
        t = self.cfg.trainer
        if t.checkpoint_weights == "trainable" and not t.strategy.startswith("deepspeed"):
            self._drop_frozen(checkpoint)

    def _drop_frozen(self, checkpoint: dict[str, Any]) -> None:
        """Leave the student's frozen weights out of ``checkpoint`` and record where they come from."""
        state = checkpoint.get("state_dict", {})
        for key in self._frozen_keys:
            state.pop(key, None)
        checkpoint["dskd"]["frozen"] = {
            "keys": sorted(self._frozen_keys),
            "teacher": self.cfg.teacher.model,
            "revision": self.cfg.teacher.revision,
            "dtype": self._frozen_dtype,
        }

    @property
    def strict_loading(self) -> bool:
        """Lightning loads checkpoints strictly only when the student freezes nothing: a trainable-only
        checkpoint leaves the frozen weights out (FSDP loads the weights before ``on_load_checkpoint``
        runs), and :meth:`on_load_checkpoint` checks which keys a checkpoint holds instead."""
        return not self._frozen_keys

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the counters; check the checkpoint holds every weight but, in a trainable-only one,
        exactly this student's frozen weights (which it keeps: the teacher's copies, built from the
        same teacher in the same dtype)."""
        info = checkpoint.get("dskd", {})
        self.skipped_steps = int(info.get("skipped_steps", 0))
        self.train_batches = int(info.get("train_batches", 0))
        frozen = info.get("frozen")
        left_out = set(frozen["keys"]) if frozen else set()
        if frozen and (left_out != self._frozen_keys or frozen["dtype"] != self._frozen_dtype):
            raise ConfigError(
                f"The checkpoint leaves out {len(left_out)} frozen weights copied from the teacher in "
                f"{frozen['dtype']}; this run's student freezes {len(self._frozen_keys)}, copied in "
                f"{self._frozen_dtype}. Resume with the student and teacher.dtype the checkpoint was "
                "written with."
            )
        if "state_dict" in checkpoint:  # not yet loaded (FSDP loads it before this hook)
            held = set(checkpoint["state_dict"])
            wrong = (self._state_keys - left_out - held) | (held - self._state_keys)
            if wrong:
                raise ConfigError(
                    f"The checkpoint's weights do not fit this model (missing or unexpected: "
                    f"{sorted(wrong)[:3]}); it is damaged or from another experiment."
                )
