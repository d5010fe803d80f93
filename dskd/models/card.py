"""The model card (``README.md``) of an exported student, and its optional upload to the Hugging Face hub.

The card's metadata (``base_model``, ``library_name``, ``pipeline_tag``, tags) is what the hub reads;
its text gives the recipe, the experiment config and, once ``dskd eval`` has scored the student, the
evaluation table. It is rendered from the folder's ``export_meta.json``, so ``dskd eval`` can render it
again with the table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

from dskd.core.errors import DSKDError
from dskd.core.io import write_text_atomic

CARD = "README.md"
META = "export_meta.json"


def _base_model(teacher: str) -> str | None:
    """The teacher as a hub id (``org/name``), or None for a local folder or an asset name."""
    local = Path(teacher).expanduser().exists() or Path(teacher).is_absolute()
    return teacher if not local and teacher.count("/") == 1 else None


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


def render_card(export_dir: str | Path, evaluation: str | None = None) -> str:
    """The card of the export in ``export_dir`` (from its ``export_meta.json``); ``evaluation``: a
    Markdown results table."""
    meta = json.loads((Path(export_dir) / META).read_text())
    cfg_yaml = meta["experiment_config"]
    cfg = yaml.safe_load(cfg_yaml)
    teacher = cfg["teacher"]["model"]
    data = ModelCardData(
        base_model=_base_model(teacher),
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["dskd", "knowledge-distillation", cfg["method"]],
    )
    body = f"""
# {cfg["name"]} (seed {cfg["seed"]})

A student distilled from `{teacher}` with Decoder-based Sense Knowledge Distillation (`dskd`), step
{meta["inputs"].get("global_step")}. It is a plain causal LM; the sense dictionary is not needed at inference.

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

## Config

```yaml
{cfg_yaml.strip()}
```
"""
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{body}"))


def write_card(export_dir: str | Path, evaluation: str | None = None) -> Path:
    """Write ``README.md`` (the model card) into ``export_dir``."""
    path = Path(export_dir) / CARD
    write_text_atomic(path, render_card(export_dir, evaluation))
    return path


def push_to_hub(export_dir: str | Path, repo_id: str, private: bool = True) -> str:
    """Upload ``export_dir`` to the hub model repo ``repo_id`` (created if missing); returns its URL."""
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
