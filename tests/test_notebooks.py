"""The analysis notebooks: paired .py/.ipynb in sync, and executed (nbclient) to produce their figures."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ("sense_clusters", "ablations")


def _cells(nb) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ()))) for c in nb.cells]


def execute_notebook(name: str, params: dict, cwd: Path, timeout: int = 600):
    """Run ``notebooks/<name>.ipynb``, ``params`` injected after its ``parameters`` cell (papermill style)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", ()))
    source = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()
    return nb


def assert_png(path: Path, min_bytes: int = 10_000) -> None:
    """A real figure: a PNG of some size whose pixels are not all one colour."""
    import matplotlib.image as mpimg

    assert path.is_file(), f"{path} was not written"
    assert path.stat().st_size > min_bytes, f"{path} is only {path.stat().st_size} bytes"
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 200
    assert float(pixels[..., :3].std()) > 0.05, f"{path} is (almost) blank"


@pytest.mark.parametrize("name", NAMES)
def test_paired_notebook_matches_its_percent_script(name):
    import jupytext
    import nbformat

    script = jupytext.read(NOTEBOOKS / f"{name}.py")
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert _cells(notebook) == _cells(script), (
        f"notebooks/{name}.ipynb is out of sync with notebooks/{name}.py (the source of truth): run "
        f"`jupytext --to ipynb notebooks/{name}.py`"
    )
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code"), (
        "commit without outputs"
    )
    assert sum("parameters" in c[2] for c in _cells(notebook)) == 1
    assert notebook.metadata["jupytext"]["formats"] == "ipynb,py:percent"


def _write_run(root: Path, family: str, name: str, kappa: int, losses: list[float], val: float) -> None:
    """A run folder as `dskd train` writes it: config.yaml and a Lightning metrics.csv."""
    run = root / family / name / "seed-0"
    run.mkdir(parents=True)
    config = {"name": name, "preset": family, "seed": 0, "runs_dir": f"{root}/{family}"}
    (run / "config.yaml").write_text(json.dumps({**config, "loss": {"sense": {"kappa": kappa}}}))
    with open(run / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(
            f, fieldnames=["epoch", "step", "train/loss", "train/ce", "train/sense", "val/loss"]
        )
        w.writeheader()
        for step, loss in enumerate(losses, 1):
            w.writerow(
                {"epoch": 0, "step": step, "train/loss": loss, "train/ce": loss / 2, "train/sense": 0.1}
            )
        w.writerow({"epoch": 0, "step": len(losses), "val/loss": val})


def test_ablations_notebook_plots_every_family_of_csv_runs(tmp_path):
    runs = tmp_path / "runs"
    _write_run(runs, "abl", "kappa1", 1, [4.0, 3.0, 2.5, 2.0], 2.2)
    _write_run(runs, "abl", "kappa3", 3, [4.0, 3.5, 3.0, 2.8], 2.9)
    _write_run(runs, "other", "solo", 5, [1.0, 0.5], 0.7)
    out = tmp_path / "figures"
    nb = execute_notebook("ablations", {"runs_root": str(runs), "output_dir": str(out)}, tmp_path)
    assert_png(out / "ablation_abl.png")
    assert_png(out / "ablation_other.png")
    text = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert "kappa1, kappa3" in text  # the runs of family abl were found
    # run, loss.sense.kappa, steps, train/loss (mean of the last 25% of 4 steps: the last one),
    # train/ce, train/sense, val/loss
    assert "| kappa1 | 1 | 4 | 2 | 1 | 0.1 | 2.2 |" in text
    assert "| kappa3 | 3 | 4 | 2.8 | 1.4 | 0.1 | 2.9 |" in text


def test_ablations_notebook_says_what_to_run_without_runs(tmp_path):
    """Run from notebooks/ as in Jupyter: relative paths are taken from the repository root."""
    from nbclient.exceptions import CellExecutionError

    with pytest.raises(CellExecutionError) as err:
        execute_notebook("ablations", {"runs_root": "no-such-runs", "output_dir": str(tmp_path)}, NOTEBOOKS)
    assert f"No runs with metrics under {ROOT / 'no-such-runs'}" in str(err.value)
    assert "dskd ablate experiments/sweeps/tiny_kappa_weight.yaml" in str(err.value)


@pytest.fixture(scope="module")
def tiny_senses(tmp_path_factory) -> Path:
    """A tiny sense dictionary of the real teacher (real builder) over a small corpus with 'bank'."""
    from dskd.assets import asset_path
    from dskd.config.loading import load_config
    from dskd.senses.build import build as build_senses

    tmp = tmp_path_factory.mktemp("senses")
    lines = (asset_path("wordnet-corpus") / "examples.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [json.loads(x)["text"] for x in lines[:150]]
    texts += [json.loads(x)["text"] for x in lines if '"lemma": "bank"' in x]
    (tmp / "corpus.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    cfg = load_config(
        ROOT / "experiments/tiny/dskd.yaml",
        [
            f"artifacts_dir={tmp}",
            f"senses.sources=[{{kind: jsonl, path: {tmp}/corpus.jsonl}}]",
            "senses.keying=observed",
            "senses.compose_vids=false",
            "senses.k=3",
        ],
    )
    build_senses(cfg, progress=False)
    return Path(cfg.senses.output_dir)


@pytest.mark.integration
def test_sense_clusters_notebook_draws_both_figures(tmp_path, tiny_senses):
    out = tmp_path / "figures"
    nb = execute_notebook(
        "sense_clusters",
        {"senses_dir": str(tiny_senses), "output_dir": str(out), "max_examples_per_word": 3},
        tmp_path,
    )
    assert_png(out / "sense_clusters_words.png")
    assert_png(out / "sense_clusters_polysemy.png")
    text = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert "k=3" in text and "contexts of 'bank'" in text  # the fixture's corpus gives 'bank' >= 2 senses


@pytest.mark.integration
def test_sense_clusters_notebook_says_how_to_build_a_missing_dictionary(tmp_path):
    from nbclient.exceptions import CellExecutionError

    with pytest.raises(CellExecutionError, match="dskd senses build experiments/tiny/dskd.yaml"):
        execute_notebook(
            "sense_clusters", {"senses_dir": str(tmp_path / "none"), "output_dir": str(tmp_path)}, tmp_path
        )
