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
# # Sense clusters in the teacher's hidden states (Figure 1 of the paper)
#
# Two views of the teacher's last hidden state (after the final norm, the LM-head input), projected
# with t-SNE (scikit-learn):
#
# 1. **Word groups.** Occurrences of synonyms of *red* (ruby, crimson, scarlet, vermilion), of vehicles
#    and of fruits, in WordNet example sentences (the `wordnet-corpus` asset) and a few hand-written
#    contexts. The state is taken at the word's last token (the word in its context). Synonyms should
#    share a region; the groups should separate.
# 2. **A polysemous word and its senses.** Contexts of *bank* (river bank vs money bank), with the state
#    taken at the position that *predicts* the word -- the state the sense dictionary files under the
#    word's key -- together with the word's k sense centroids from the tiny sense dictionary
#    (`dskd senses build experiments/tiny/dskd.yaml`). When that dictionary has fewer than 2 senses
#    of *bank*, another polysemous word is shown (e.g. *light*, contexts labelled by WordNet synset).
#
# Figures are written as PNG files to `output_dir` (a papermill-style parameter: the cell tagged
# `parameters`).

# %%
import json
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits

from dskd.assets import asset_path
from dskd.models.loading import load_causal_lm, load_tokenizer
from dskd.senses import SenseDictionary

# %% tags=["parameters"]
teacher = "smollm2-135m-instruct"
senses_dir = "artifacts/tiny/senses"
output_dir = "results/notebooks/"
polysemous_word = "bank"
max_examples_per_word = 8
seed = 0

# %%
# Relative paths are taken from the repository root (the notebook may run from notebooks/).
ROOT = next(
    (p for p in (Path.cwd(), *Path.cwd().parents) if (p / "dskd" / "__init__.py").is_file()), Path.cwd()
)
out_dir = ROOT / output_dir
out_dir.mkdir(parents=True, exist_ok=True)
senses_dir = ROOT / senses_dir
if not (senses_dir / "meta.json").is_file():
    raise FileNotFoundError(
        f"No sense dictionary at {senses_dir}. Build the tiny one first: "
        "`dskd senses build experiments/tiny/dskd.yaml` (or pass senses_dir=... as a parameter)."
    )
tokenizer = load_tokenizer(teacher)
model = load_causal_lm(teacher, dtype="float32").eval().requires_grad_(False)
senses = SenseDictionary.load(senses_dir, device="cpu")
print(f"teacher {teacher}; sense dictionary {senses_dir}: {len(senses)} keys, k={senses.k}")

# %% [markdown]
# ## Contexts
# WordNet example sentences whose marked lemma is one of the words, plus hand-written sentences
# (the word's character span is known in both).

# %%
GROUPS = {
    "red": ["red", "ruby", "crimson", "scarlet", "vermilion"],
    "vehicle": ["car", "truck", "bus", "bicycle", "motorcycle"],
    "fruit": ["apple", "banana", "cherry", "grape", "lemon"],
}
TEMPLATES = {
    "red": ["She wore a {} dress to the party.", "The sky turned {} at sunset.", "He painted the door {}."],
    "vehicle": [
        "The {} was parked outside the station.",
        "We took the {} to the city.",
        "A new {} costs a lot of money.",
    ],
    "fruit": ["She ate a {} after lunch.", "The {} was ripe and sweet.", "He bought a {} at the market."],
}
SENSE_CONTEXTS = {
    "river": [
        "We sat on the bank of the river and fished all afternoon.",
        "The boat drifted toward the muddy bank of the stream.",
        "Reeds grew thick along the bank where the water was shallow.",
        "The flood washed away part of the bank near the bridge.",
        "Children played on the grassy bank beside the lake.",
        "He pulled the canoe onto the sandy bank before dark.",
    ],
    "money": [
        "She deposited her salary at the bank on Monday.",
        "The bank approved the loan for the new house.",
        "He withdrew cash from the bank to pay the rent.",
        "Interest rates at the bank rose again this year.",
        "My savings account at the bank earns very little.",
        "The robbers broke into the bank at night.",
    ],
}
FALLBACK_POLYSEMOUS = ["light", "point", "line", "state", "form"]
"""Shown instead when the dictionary has fewer than 2 senses of polysemous_word (tiny corpora)."""
SYNSET_SENSE = {
    "bank.n.01": "river",
    "bank.n.03": "river",
    "depository_financial_institution.n.01": "money",
    "bank.n.09": "money",
}


def wordnet_examples(lemmas, limit):
    """(text, start, end, lemma, synset) of WordNet examples marking one of ``lemmas`` (``limit`` each)."""
    wanted, found = set(lemmas), {}
    with open(asset_path("wordnet-corpus") / "examples.jsonl", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            lemma = rec.get("lemma")
            if lemma in wanted and len(found.setdefault(lemma, [])) < limit:
                found[lemma].append((rec["text"], rec["start"], rec["end"], lemma, rec["synset"]))
    return [row for lemma in lemmas for row in found.get(lemma, [])]


def templated(word, templates):
    rows = []
    for t in templates:
        text = t.format(word)
        start = t.index("{}")
        rows.append((text, start, start + len(word), word, None))
    return rows


words = [w for ws in GROUPS.values() for w in ws]
group_of = {w: g for g, ws in GROUPS.items() for w in ws}
group_rows = wordnet_examples(words, max_examples_per_word)
group_rows += [row for g, ws in GROUPS.items() for w in ws for row in templated(w, TEMPLATES[g])]


def senses_of(word):
    """Rows of D[" " + word] (None when the word is not one token)."""
    ids = tokenizer(f" {word}", add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        return None
    cents, mask = senses.lookup(torch.tensor(ids))
    return cents[0][mask[0]].float().numpy()


candidates = [polysemous_word, *FALLBACK_POLYSEMOUS]
word = next((w for w in candidates if (c := senses_of(w)) is not None and len(c) >= 2), None)
if word is None:
    raise ValueError(
        f"The sense dictionary at {senses_dir} has fewer than 2 senses for each of {candidates}; build "
        "it over a larger corpus (`dskd senses build experiments/tiny/dskd.yaml`) or choose another word."
    )
if word != polysemous_word:
    print(f"' {polysemous_word}' has fewer than 2 senses in {senses_dir}; showing '{word}' instead")
cents = senses_of(word)
examples = wordnet_examples([word], 6 * max_examples_per_word)
top = [syn for syn, _ in Counter(row[4] for row in examples).most_common(4)]
poly_rows = [
    (
        text,
        s,
        e,
        lemma,
        SYNSET_SENSE.get(syn, "other") if word == "bank" else (syn if syn in top else "other"),
    )
    for text, s, e, lemma, syn in examples
]
if word == "bank":
    poly_rows += [
        (text, text.index(" bank") + 1, text.index(" bank") + 5, "bank", sense)
        for sense, texts in SENSE_CONTEXTS.items()
        for text in texts
    ]
print(f"{len(group_rows)} word-group contexts, {len(poly_rows)} contexts of '{word}', {len(cents)} senses")

# %% [markdown]
# ## Hidden states
# One forward pass per sentence; token positions of the word come from the tokenizer's offsets.


# %%
@torch.no_grad()
def states(rows, at, batch_size=16):
    """Final hidden state per row: at the word's last token (at="word") or before its first ("predicting")."""
    picked = []
    for row in rows:
        text, start, end = row[0], row[1], row[2]
        enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
        idx = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if a < end and b > start]
        pos = (idx[-1] if at == "word" else idx[0] - 1) if idx else -1
        if pos >= 0:
            picked.append((enc["input_ids"], pos, row))
    out = []
    for b in range(0, len(picked), batch_size):
        part = picked[b : b + batch_size]
        width = max(len(ids) for ids, _, _ in part)
        ids = torch.full((len(part), width), tokenizer.pad_token_id or 0)
        mask = torch.zeros_like(ids)
        for r, (seq, _, _) in enumerate(part):  # right padding: positions stay those of the sentence
            ids[r, : len(seq)], mask[r, : len(seq)] = torch.tensor(seq), 1
        h = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
        out += [h[r, pos].float().numpy() for r, (_, pos, _) in enumerate(part)]
    return np.stack(out), [row for _, _, row in picked]


def tsne(x):
    perplexity = max(2.0, min(30.0, (len(x) - 1) / 3))
    with threadpool_limits(1):  # small inputs: threads only add contention
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


group_states, group_kept = states(group_rows, at="word")
poly_states, poly_kept = states(poly_rows, at="predicting")
print(group_states.shape, poly_states.shape)

# %% [markdown]
# ## Figure 1a: word groups

# %%
xy = tsne(group_states)
colors = {"red": "tab:red", "vehicle": "tab:blue", "fruit": "tab:green"}
markers = dict(zip(range(5), "o^sDv", strict=True))
fig, ax = plt.subplots(figsize=(7, 6))
for (x, y), row in zip(xy, group_kept, strict=True):
    w = row[3]
    g = group_of[w]
    ax.scatter(x, y, color=colors[g], marker=markers[GROUPS[g].index(w)], alpha=0.75, s=36)
for g, ws in GROUPS.items():
    for i, w in enumerate(ws):
        ax.scatter([], [], color=colors[g], marker=markers[i], label=f"{g}: {w}")
ax.legend(fontsize=7, ncol=3, loc="best")
ax.set_title(f"t-SNE of {teacher} hidden states at the word")
fig.tight_layout()
fig.savefig(out_dir / "sense_clusters_words.png", dpi=120)
plt.show()

# %% [markdown]
# ## Figure 1b: contexts of a polysemous word and its sense centroids
# The centroids are D[key] of the word's token (`" " + word`); the context states are those filed
# under that key (the position predicting the word).

# %%
xy = tsne(np.concatenate([poly_states, cents]))
labels = sorted({row[4] for row in poly_kept}, key=lambda x: (x == "other", x))
palette = plt.get_cmap("tab10")
fig, ax = plt.subplots(figsize=(7, 6))
for i, label in enumerate(labels):
    sel = [j for j, row in enumerate(poly_kept) if row[4] == label]
    color = "tab:gray" if label == "other" else palette(i % 10)
    ax.scatter(xy[sel, 0], xy[sel, 1], color=color, label=f"context: {label}", alpha=0.8, s=40)
ax.scatter(
    xy[len(poly_kept) :, 0],
    xy[len(poly_kept) :, 1],
    color="black",
    marker="*",
    s=220,
    label=f"sense centroids D[' {word}'] (k={len(cents)})",
)
ax.legend(fontsize=8)
ax.set_title(f"'{word}': states predicting the word, and its sense centroids")
fig.tight_layout()
fig.savefig(out_dir / "sense_clusters_polysemy.png", dpi=120)
plt.show()
print(sorted(p.name for p in out_dir.glob("sense_clusters_*.png")))
