"""The model card (``README.md``) of an exported student, and its optional upload to the Hugging Face hub.

The card's metadata is what the hub reads: ``base_model`` (the teacher's hub id; for an asset teacher, the
repo the asset copies), ``base_model_relation``, ``license`` (the teacher's, with the link and the notice
its terms ask for), ``datasets`` (the hub data sets of the training and sense sources), ``model-index``
(the scores of ``dskd eval``), ``library_name``, ``pipeline_tag`` and tags. Its text gives the recipe,
the experiment config and, once ``dskd eval`` has scored the student, the evaluation table. It is rendered
from the folder's ``export_meta.json``, so ``dskd eval`` can render it again with the results.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

from dskd.assets import ASSETS
from dskd.core.errors import DSKDError
from dskd.core.io import write_text_atomic

CARD = "README.md"
META = "export_meta.json"
BASE_MODEL_RELATION = "finetune"
"""The hub knows adapter, merge, quantized and finetune; a student trained from the teacher's weights and
signal is closest to a finetune (the hub has no ``distillation``)."""


@dataclass(frozen=True)
class Licence:
    """A teacher's licence as a model card states it."""

    id: str
    """The hub's licence id (``license:``)."""
    link: str = ""
    """The licence text (``license_link:``), where its terms ask that it travel with derivatives."""
    notice: str = ""
    """What the licence asks a derivative's card to say."""
    name_prefix: str = ""
    """What a derivative's hub repo name must start with (case, ``-``, ``_`` and spaces aside)."""


LLAMA3_LICENCE = "https://huggingface.co/meta-llama/Meta-Llama-3-8B/blob/main/LICENSE"
LICENCES = {
    "HuggingFaceTB/SmolLM2-": Licence("apache-2.0"),
    "mistralai/Mistral-7B-Instruct-v0.1": Licence("apache-2.0"),
    "meta-llama/Meta-Llama-3-": Licence(
        "llama3",
        LLAMA3_LICENCE,
        "Built with Meta Llama 3. Meta Llama 3 is licensed under the Meta Llama 3 Community License, "
        f"Copyright © Meta Platforms, Inc. All Rights Reserved ([licence]({LLAMA3_LICENCE})). Its terms ask "
        'that this licence go with the model and that the model\'s name begin with "Llama 3".',
        "Llama-3",
    ),
}
"""Hub id prefix of a teacher -> its licence (the presets' teachers; others are left to the user)."""


def base_model(teacher: str) -> str | None:
    """The teacher as a hub id (``org/name``; an asset: the repo it copies), or None for a local folder."""
    if teacher in ASSETS:
        return ASSETS[teacher].hub_id or None
    local = Path(teacher).expanduser().exists() or Path(teacher).is_absolute()
    return teacher if not local and teacher.count("/") == 1 else None


def teacher_licence(hub_id: str | None) -> Licence | None:
    """The licence of the teacher ``hub_id`` (None: not one :data:`LICENCES` knows)."""
    return next((lic for prefix, lic in LICENCES.items() if hub_id and hub_id.startswith(prefix)), None)


def eval_results(results: list[dict[str, Any]]) -> list[EvalResult]:
    """The model-index entries of ``dskd eval``'s records of one student (benchmark, metric, value)."""
    return [
        EvalResult(
            task_type="text-generation",
            dataset_type=r["benchmark"],
            dataset_name=r["benchmark"],
            metric_type=r["metric"],
            metric_value=float(r["value"]),
        )
        for r in results
    ]


def _licence_text(teacher: str, licence: Licence | None) -> str:
    if licence is None:
        return (
            f"The teacher's licence applies (`{teacher}`); this card names none: add `license:` to its "
            "front matter before publishing."
        )
    return f"`{licence.id}`, the teacher's licence. {licence.notice}".strip()


def _recipe(cfg: dict[str, Any]) -> str:
    s, loss, t = cfg["student"], cfg["loss"], cfg["trainer"]
    if s["kind"] == "truncated":
        student = (
            f"the teacher's embeddings, first {s['num_layers']} decoder layers, final norm and LM head, "
            f"of which the top {s['trainable_top_layers']} layers were trained"
        )
    else:
        student = f"`{s['model']}`, all parameters trained"
    kd, data = loss["kd"], cfg["data"]
    total = f"max_steps {t['max_steps']}" if t["max_steps"] > 0 else f"{t['max_epochs']} epochs"
    sense = f" + {loss['sense']['weight']} x sense loss (the teacher's sense dictionary)"
    lines = [
        f"- **Method**: {cfg['method'].upper()} (`dskd`), teacher `{cfg['teacher']['model']}` frozen.",
        f"- **Student**: {student}.",
        f"- **Loss**: {loss['ce_weight']} x CE + KD ({kd['divergence']}, alpha {kd['alpha']}, "
        f"tau {kd['tau']}){sense if cfg['method'] == 'dskd' else ''}.",
        f"- **Training**: {total}, lr {cfg['optim']['lr']}, batch size {data['batch_size']} x sequence "
        f"length {data['seq_len']}, seed {cfg['seed']}, precision {t['precision']}.",
    ]
    return "\n".join(lines)


def render_card(
    export_dir: str | Path, evaluation: str | None = None, results: list[dict[str, Any]] | None = None
) -> str:
    """The card of the export in ``export_dir`` (from its ``export_meta.json``); ``evaluation``: a
    Markdown results table; ``results``: this student's result records (its model-index)."""
    meta = json.loads((Path(export_dir) / META).read_text())
    cfg_yaml = meta["experiment_config"]
    cfg = yaml.safe_load(cfg_yaml)
    teacher = cfg["teacher"]["model"]
    base = base_model(teacher)
    licence = teacher_licence(base)
    data = ModelCardData(
        model_name=f"{cfg['name']}-seed{cfg['seed']}",
        base_model=base,
        base_model_relation=BASE_MODEL_RELATION if base else None,
        license=licence.id if licence else None,
        license_link=licence.link if licence and licence.link else None,
        datasets=meta.get("datasets") or None,
        eval_results=eval_results(results) if results else None,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["dskd", "knowledge-distillation", cfg["method"]],
    )
    body = f"""
# {cfg["name"]} (seed {cfg["seed"]})

A student distilled from `{teacher}`{f" ({base})" if base and base != teacher else ""} with Decoder-based
Sense Knowledge Distillation (`dskd`), step {meta["inputs"].get("global_step")}. It is a plain causal LM;
the sense dictionary is not needed at inference.

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("PATH_OR_REPO")
tokenizer = AutoTokenizer.from_pretrained("PATH_OR_REPO")
```

The generation config (end-of-sequence ids, sampling defaults) and the chat template are the teacher's.

## Recipe

{_recipe(cfg)}

## Evaluation

{evaluation.strip() if evaluation else "Not evaluated yet: `dskd eval CONFIG` adds the results table here."}

## Licence

{_licence_text(teacher, licence)}

## Config

```yaml
{cfg_yaml.strip()}
```
"""
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{body}"))


def write_card(
    export_dir: str | Path, evaluation: str | None = None, results: list[dict[str, Any]] | None = None
) -> Path:
    """Write ``README.md`` (the model card) into ``export_dir`` (see :func:`render_card`)."""
    path = Path(export_dir) / CARD
    write_text_atomic(path, render_card(export_dir, evaluation, results))
    return path


def _bare(name: str) -> str:
    return re.sub(r"[-_ ]", "", name).lower()


def check_repo_name(export_dir: str | Path, repo_id: str) -> None:
    """Refuse ``repo_id`` when the licence of the card in ``export_dir`` asks for a name it lacks."""
    licence_id = ModelCard.load(Path(export_dir) / CARD).data.license
    licence = next((lic for lic in LICENCES.values() if lic.id == licence_id and lic.name_prefix), None)
    owner, _, name = repo_id.rpartition("/")
    if licence is not None and not _bare(name).startswith(_bare(licence.name_prefix)):
        raise DSKDError(
            f"{export_dir} derives from a model under the {licence.id} licence, whose terms ask that its "
            f"name begin with '{licence.name_prefix}' ({licence.link}); push it as e.g. "
            f"{owner + '/' if owner else ''}{licence.name_prefix}-{name}."
        )


def push_to_hub(export_dir: str | Path, repo_id: str, private: bool = True) -> str:
    """Upload ``export_dir`` to the hub model repo ``repo_id`` (created if missing); returns its URL."""
    check_repo_name(export_dir, repo_id)
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(export_dir), repo_id=repo_id, repo_type="model")
    except (HfHubHTTPError, LocalTokenNotFoundError, OSError) as e:
        raise DSKDError(
            f"Could not push {export_dir} to the hub repo {repo_id} ({type(e).__name__}: {e}); log in with "
            "`hf auth login` (or set HF_TOKEN) and check that the hub is reachable."
        ) from e
    return f"https://huggingface.co/{repo_id}"
