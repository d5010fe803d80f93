# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Ablations
#
# Reads the training runs under `runs_root/<preset>/<name>/seed-S/` (Lightning's `metrics.csv`, or the
# final metrics of the W&B offline run when there is no CSV) and, per family (= one ablation, e.g. what
# `dskd ablate experiments/sweeps/tiny_kappa_weight.yaml` writes), plots each loss component over steps
# per setting and the final metrics per setting, and shows the summary table. A run's *setting* is the
# config keys that differ between the runs of its family (from each run's saved `config.yaml`).
# Figures are written as PNG files to `output_dir` (a papermill-style parameter: the cell tagged
# `parameters`).

# %%
from pathlib import Path

from IPython.display import Image, Markdown, display

from dskd.launch.ablate import discover, markdown_table, plot

# %% tags=["parameters"]
runs_root = "runs"
output_dir = "results/notebooks/"
families = None  # None: every family found under runs_root; or a list of family names

# %%
# Relative paths are taken from the repository root (the notebook may run from notebooks/).
ROOT = next(
    (p for p in (Path.cwd(), *Path.cwd().parents) if (p / "dskd" / "__init__.py").is_file()), Path.cwd()
)
out_dir = ROOT / output_dir
out_dir.mkdir(parents=True, exist_ok=True)
runs_root = ROOT / runs_root
found = discover(runs_root)
if families is not None:
    found = {f: found[f] for f in families if f in found}
if not found:
    raise FileNotFoundError(
        f"No runs with metrics under {runs_root}/<preset>/<name>/seed-*/. Run an ablation first, e.g. "
        "`dskd ablate experiments/sweeps/tiny_kappa_weight.yaml`, or pass runs_root=... as a parameter."
    )
for family, runs in found.items():
    print(f"{family}: {len(runs)} runs: {', '.join(r.name for r in runs)}")

# %% [markdown]
# ## Loss components over steps and final metrics, per ablation

# %%
for family, runs in found.items():
    png = plot(runs, out_dir / f"ablation_{family}.png", f"{family}: {len(runs)} settings")
    display(Image(filename=str(png)))
    display(Markdown(f"### {family}\n\n{markdown_table(runs)}"))
print(sorted(p.name for p in out_dir.glob("ablation_*.png")))
