"""Result tables: one row per model (mean ± std over seeds), a chance row, one column per benchmark metric.

Records are plain dicts (as stored in ``results.json``) with ``benchmark``, ``metric``, ``model``,
``seed``, ``value``, ``n_items``, ``chance``, ``seconds``, ``in_average``, ``higher_is_better`` and
``in_table`` (optional, default true).
The ``average`` column is the mean of a row's ``in_average`` columns (for a model with several
seeds: the mean and std over seeds of each seed's average); a table without such columns has none.
The chance row gives a column's ``chance`` when all its records agree (empty otherwise: the perplexity
of models with different vocabularies). The note under table.md explains the columns present
(:data:`COLUMN_NOTES`).

A task that could not be evaluated (its asset unavailable: ``unavailable``, ``task -> reason``, as in
results.json) gets a column of ``unavailable`` cells and its reason under the table; the average is
then over the available columns, and the note says so.

The difference table compares every model to a baseline (``KD``) on each metric whose records carry
per-item values (``items``, ``statistic``, ``reference``): the difference of the means over seeds
with a 95% paired-bootstrap interval over items (:mod:`dskd.evaluation.stats`).
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from typing import Any

from dskd.core.errors import DSKDError
from dskd.evaluation.stats import Difference, paired_bootstrap, statistic

CHANCE_ROW = "chance"
AVERAGE = "average"
BASELINE = "KD"
PAIRS = (("DSKD+", "DSKD+ pull-only"),)
"""(model, reference) pairs whose paired differences table.md adds below the baseline's, where both
models are present: what DSKD+'s push adds over its pull-only ablation."""
UNAVAILABLE = "unavailable"
COLUMN_NOTES = {
    "heldout perplexity": "per token of the teacher's tokenizer, which cut the held-out blocks (chance: "
    "that vocabulary's size, a uniform guess)",
    "heldout perplexity_own_tokens": "a cross-tokenizer student's perplexity per token of its own "
    "tokenizer on the blocks' text; it compares only models with the same tokenizer, not with `heldout "
    "perplexity` (chance: the student's vocabulary size, a uniform guess)",
    "heldout nats_per_byte": "next-token NLL per UTF-8 byte of the blocks' text; it compares models "
    "whatever their tokenizers",
    "heldout span_uld": "a cross-tokenizer student's ULD distance to the teacher per aligned span "
    "(sorted-mass L1 in [0, 2], blind to which token carries which mass)",
    "heldout span_kl": "KL(teacher ‖ student) at the first position of each aligned span, over the token "
    "strings both vocabularies share, each side renormalised over them",
    "heldout span_kl_scored": "span starts scored by `span_kl` per next-token prediction of the student",
    "heldout span_kl_teacher_mass": "the teacher's mean probability on the shared strings where `span_kl` "
    "is scored (the rest of its mass is not compared)",
    "heldout span_kl_student_mass": "the student's mean probability on the shared strings there",
}
"""What a column means, for the note under table.md (written for the columns present)."""


def _column(r: dict[str, Any]) -> str:
    return f"{r['benchmark']} {r['metric']}"


def columns(records: list[dict[str, Any]]) -> list[str]:
    """Benchmark columns in first-seen order, ``in_average`` ones first."""
    seen: dict[str, bool] = {}
    for r in records:
        seen.setdefault(_column(r), bool(r["in_average"]))
    return [c for c, avg in seen.items() if avg] + [c for c, avg in seen.items() if not avg]


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def aggregate(records: list[dict[str, Any]]) -> dict[str, dict[str, tuple[float, float | None]]]:
    """model -> column (and ``average``) -> (mean, std over seeds)."""
    per_seed: dict[str, dict[Any, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    averaged = {_column(r) for r in records if r["in_average"]}
    for r in records:
        per_seed[r["model"]][r["seed"]][_column(r)] = float(r["value"])
    out: dict[str, dict[str, tuple[float, float | None]]] = {}
    for model, seeds in per_seed.items():
        cols = {c for s in seeds.values() for c in s}
        out[model] = {c: mean_std([s[c] for s in seeds.values() if c in s]) for c in cols}
        avgs = [
            statistics.fmean(v for c, v in s.items() if c in averaged)
            for s in seeds.values()
            if averaged & set(s)
        ]
        if avgs:
            out[model][AVERAGE] = mean_std(avgs)
    return out


def chance_row(records: list[dict[str, Any]]) -> dict[str, float | None]:
    """Chance level per column (None where the models' records disagree, as a perplexity's vocabulary
    sizes can); its average over the ``in_average`` columns."""
    levels: dict[str, set[float | None]] = defaultdict(set)
    for r in records:
        levels[_column(r)].add(r["chance"])
    row = {c: next(iter(v)) if len(v) == 1 else None for c, v in levels.items()}
    averaged = [
        row[c] for c in columns(records) if c in row and _in_average(records, c) and row[c] is not None
    ]
    row[AVERAGE] = statistics.fmean(averaged) if averaged else None
    return row


def _in_average(records: list[dict[str, Any]], column: str) -> bool:
    return any(r["in_average"] for r in records if _column(r) == column)


def item_counts(records: list[dict[str, Any]]) -> dict[str, int]:
    return {_column(r): int(r["n_items"]) for r in records}


def fmt(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "–"
    text = f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
    return text if std is None else f"{text} ± {std:.3f}"


def table_rows(
    records: list[dict[str, Any]],
    model_order: list[str] | None = None,
    unavailable: dict[str, str] | None = None,
) -> tuple[list[str], list[list[str]]]:
    """Header and rows (strings): models in ``model_order`` (default first-seen), then the chance row.

    Records with ``in_table`` false (secondary metrics) stay out of the table; each ``unavailable``
    task is a column of ``unavailable`` cells before the average.
    """
    records = [r for r in records if r.get("in_table", True)]
    missing = list(unavailable or {})
    cols = [*columns(records), *missing]
    has_avg = any(r["in_average"] for r in records)
    header = ["model", *cols, *([AVERAGE] if has_avg else [])]
    agg = aggregate(records)
    order = model_order or list(dict.fromkeys(r["model"] for r in records))

    def cell(m: str, c: str) -> str:
        return UNAVAILABLE if c in missing else fmt(*agg[m][c]) if c in agg[m] else "–"

    rows = [[m, *(cell(m, c) for c in header[1:])] for m in order if m in agg]
    chance = chance_row(records)
    rows.append([CHANCE_ROW, *(fmt(chance.get(c)) for c in header[1:])])
    counts = item_counts(records)
    rows.append(["items", *(str(counts[c]) if c in counts else "" for c in header[1:])])
    return header, rows


def differences(
    records: list[dict[str, Any]], baseline: str = BASELINE, n_resamples: int = 2000, seed: int = 0
) -> dict[str, dict[str, Difference]]:
    """model -> column -> difference to ``baseline`` with its 95% paired-bootstrap interval.

    Only table columns whose records of both models carry per-item values; every seed of a model
    is one row of items (the items are the same for all models and seeds).
    """
    by: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r.get("in_table", True) and r.get("items"):
            by[(r["model"], _column(r))].append(r)
    out: dict[str, dict[str, Difference]] = defaultdict(dict)
    for (model, col), recs in by.items():
        base = by.get((baseline, col))
        if model != baseline and base:
            out[model][col] = _difference(recs, base, col, n_resamples, seed)
    return dict(out)


def _pairing(r: dict[str, Any]) -> tuple[str, Any]:
    return r.get("statistic", "mean"), r.get("reference")


def _difference(
    recs: list[dict[str, Any]], base: list[dict[str, Any]], col: str, n_resamples: int, seed: int
) -> Difference:
    name, reference = _pairing(base[0])
    odd = next((r for r in recs + base if _pairing(r) != (name, reference)), None)
    if odd is not None:
        raise DSKDError(
            f"'{col}': models {odd['model']} and {base[0]['model']} were scored on different items, so "
            "they cannot be paired; evaluate them together in one `dskd eval`."
        )
    a, b = [r["items"] for r in recs], [r["items"] for r in base]
    return paired_bootstrap(a, b, statistic(name), n_resamples, seed, reference)


def _signed(x: float) -> str:
    return f"{x:+.3f}" if abs(x) < 1000 else f"{x:+.0f}"


def fmt_difference(d: Difference) -> str:
    """``+0.012 [-0.031, +0.055]``, with ``*`` appended when the interval excludes 0."""
    return f"{_signed(d.diff)} [{_signed(d.lo)}, {_signed(d.hi)}]" + ("*" if d.significant else "")


def difference_rows(
    records: list[dict[str, Any]],
    model_order: list[str] | None = None,
    baseline: str = BASELINE,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[list[str], list[list[str]]]:
    """Header and rows (strings) of the difference table: one row per model that has a difference to
    ``baseline`` (in ``model_order``, default first-seen), one column per metric. No rows without one."""
    diffs = differences(records, baseline, n_resamples, seed)
    cols = [
        c
        for c in columns([r for r in records if r.get("in_table", True)])
        if any(c in d for d in diffs.values())
    ]
    order = model_order or list(dict.fromkeys(r["model"] for r in records))
    rows = [
        [m, *(fmt_difference(diffs[m][c]) if c in diffs[m] else "–" for c in cols)]
        for m in order
        if m in diffs
    ]
    return ["model", *cols], rows


def _markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def _column_notes(records: list[dict[str, Any]], header: list[str], unavailable: bool) -> str:
    """The note's sentences for the columns in ``header`` (``average``, :data:`COLUMN_NOTES`), and for a
    chance cell left empty because the models' chance levels differ."""
    notes = [f"`{c}`: {COLUMN_NOTES[c]}. " for c in header if c in COLUMN_NOTES]
    if AVERAGE in header:
        available = " of the available tasks" if unavailable else ""
        notes.insert(
            0,
            f"`{AVERAGE}`: mean of the accuracy-like columns{available} (multiple-choice accuracy, WiC "
            "accuracy, synonym/antonym AUC). ",
        )
    chance = chance_row(records)
    differ = [c for c in header[1:] if c != AVERAGE and c in chance and chance[c] is None]
    differ = [c for c in differ if any(r["chance"] is not None for r in records if _column(r) == c)]
    if differ:
        notes.append(f"`chance` is left empty where the models' chance levels differ ({', '.join(differ)}). ")
    return "\n" + "".join(notes)


def _unavailable_note(unavailable: dict[str, str]) -> str:
    """The reason of each unavailable task, one line each (empty when every task was evaluated)."""
    lines = "".join(f"- {task}: {UNAVAILABLE} — {reason}\n" for task, reason in unavailable.items())
    return f"\nNot evaluated (asset unavailable):\n\n{lines}" if lines else ""


def render_markdown(
    records: list[dict[str, Any]],
    model_order: list[str] | None = None,
    baseline: str = BASELINE,
    n_resamples: int = 2000,
    seed: int = 0,
    unavailable: dict[str, str] | None = None,
) -> str:
    """Markdown table with a chance row and an item-count row (mean ± std for several seeds), the reason
    of each ``unavailable`` task, then the table of differences to ``baseline`` with 95% paired-bootstrap
    intervals (when there are any)."""
    unavailable = unavailable or {}
    header, rows = table_rows(records, model_order, unavailable)
    seeds = {m: len({r["seed"] for r in records if r["model"] == m}) for m in {r["model"] for r in records}}
    note = (
        _column_notes(records, header, bool(unavailable))
        + "`items`: evaluated items per benchmark. Seeds per model: "
        + f"{', '.join(f'{m} {n}' for m, n in sorted(seeds.items()))}.\n"
    )
    text = "\n".join(_markdown(header, rows)) + "\n" + note + _unavailable_note(unavailable)
    header, rows = difference_rows(records, model_order, baseline, n_resamples, seed)
    if not rows:
        return text
    lower = sorted({_column(r) for r in records if not r["higher_is_better"]} & set(header))
    legend = (
        f"\nEach cell: model − {baseline} on the same items (mean over seeds), and the 95% percentile "
        f"interval of {n_resamples} paired bootstrap resamples of the items; `*`: the interval excludes 0. "
        + (f"Lower is better for {', '.join(lower)}.\n" if lower else "\n")
    )
    diff_table = "\n".join(_markdown(header, rows))
    pairs = "".join(_pair_table(records, pair, n_resamples, seed) for pair in PAIRS)
    title = f"### Difference to {baseline} (95% paired-bootstrap interval)"
    return f"{text}\n{title}\n\n{diff_table}\n{legend}{pairs}"


def _pair_table(records: list[dict[str, Any]], pair: tuple[str, str], n_resamples: int, seed: int) -> str:
    """The paired differences of ``pair``'s model to its reference (see :data:`PAIRS`); "" unless both
    have per-item values."""
    model, reference = pair
    both = [r for r in records if r["model"] in pair]
    header, rows = difference_rows(both, [model], reference, n_resamples, seed)
    if not rows:
        return ""
    table = "\n".join(_markdown(header, rows))
    return f"\n### {model} − {reference} (95% paired-bootstrap interval, as above)\n\n{table}\n"


def render_csv(
    records: list[dict[str, Any]],
    model_order: list[str] | None = None,
    unavailable: dict[str, str] | None = None,
) -> str:
    """table.md's first table as CSV (an unavailable task's cells read ``unavailable``)."""
    header, rows = table_rows(records, model_order, unavailable)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()
