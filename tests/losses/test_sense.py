"""The vectorized sense loss against a plain per-position loop written from docs/method.md §3.2-3.3."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dskd.core.errors import ConfigError, DSKDError
from dskd.losses.config import SenseLossConfig
from dskd.losses.sense import sense_loss


class TableLookup:
    """A sense table ``key -> [k_key, d]`` with the agreed lookup interface (padding to k rows)."""

    def __init__(self, table: dict[int, torch.Tensor], k: int, d: int, n_keys: int):
        self.table = table
        self.rows = torch.zeros(len(table) + 1, k, d)
        self.mask = torch.zeros(len(table) + 1, k, dtype=torch.bool)
        self.row_of = torch.zeros(n_keys, dtype=torch.long)  # row 0: unknown key
        for i, (key, senses) in enumerate(table.items(), start=1):
            self.rows[i, : len(senses)] = senses
            self.mask[i, : len(senses)] = True
            self.row_of[key] = i

    def __call__(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        row = self.row_of[keys]
        return self.rows[row], self.mask[row]


def reference_sense_loss(hs, ht, batch, table, cfg) -> dict[str, torch.Tensor]:
    """docs/method.md §3.2 one sequence and one position at a time."""

    def nearest(cands: list[torch.Tensor], anchor: torch.Tensor) -> list[torch.Tensor]:
        rows = [r for c in cands for r in c]
        return sorted(rows, key=lambda r: float(torch.linalg.vector_norm(r - anchor)))[: cfg.kappa]

    def mse(a, b):
        return ((a - b) ** 2).mean()

    def senses(key: int) -> list[torch.Tensor]:
        return [table[key]] if key in table else []

    def pull(h_s, h_t, s):
        gap = mse(h_s, s) - mse(h_t, s)
        return {"absolute": mse(h_s, s), "floor": torch.relu(gap), "match": gap**2}[cfg.pull]

    def push(h_s, h_t, a):  # absolute or teacher hinge on one antonym row
        if cfg.hinge == "teacher":
            return torch.relu(mse(h_t, a) - cfg.teacher_slack - mse(h_s, a))
        return torch.relu(cfg.margin - mse(h_s, a))

    parts = {"pos": [], "neg": [], "rand": []}
    for b in range(hs.shape[0]):
        terms = []  # (pos, neg, rand) of each counted term
        for m in range(batch["sense_pos"].shape[1]):
            if not batch["sense_pos_mask"][b, m] or not (cfg.positives or cfg.negatives):
                continue
            p = int(batch["sense_pos"][b, m])
            t = int(batch["labels"][b, p])
            syn = [s for j, key in enumerate(batch["syn_keys"][b, m].tolist()) if batch["syn_mask"][b, m, j]
                   for s in senses(key)]  # fmt: skip
            ant = [s for j, key in enumerate(batch["ant_keys"][b, m].tolist()) if batch["ant_mask"][b, m, j]
                   for s in senses(key)]  # fmt: skip
            own = senses(t)
            pos_set = nearest(syn + own, ht[b, p])
            neg_set = nearest(ant + own if cfg.own_senses_in_negatives else ant, ht[b, p])
            pos = neg = hs.new_zeros(())
            if cfg.positives and pos_set:
                pos = cfg.w_pos * torch.stack([pull(hs[b, p], ht[b, p], s) for s in pos_set]).mean()
            if cfg.negatives and cfg.hinge == "triplet" and pos_set and neg_set:
                near = torch.stack([mse(hs[b, p], s) for s in pos_set]).mean()
                far = torch.stack([mse(hs[b, p], a) for a in neg_set]).mean()
                neg = cfg.w_neg * torch.relu(cfg.margin + near - far)
            elif cfg.negatives and cfg.hinge != "triplet" and neg_set:
                neg = cfg.w_neg * torch.stack([push(hs[b, p], ht[b, p], a) for a in neg_set]).mean()
            terms.append((pos, neg, hs.new_zeros(())))
        for m in range(batch["rand_pos"].shape[1]):
            if not batch["rand_pos_mask"][b, m] or not cfg.random_positions:
                continue
            p = int(batch["rand_pos"][b, m])
            t = int(batch["labels"][b, p])
            near = nearest(senses(t) if t != -100 else [], ht[b, p])
            rand = (
                torch.stack([pull(hs[b, p], ht[b, p], s) for s in near]).mean() if near else hs.new_zeros(())
            )
            terms.append((hs.new_zeros(()), hs.new_zeros(()), rand))
        if terms:
            for i, name in enumerate(parts):
                parts[name].append(torch.stack([term[i] for term in terms]).mean())
    out = {name: torch.stack(v).mean() if v else hs.new_zeros(()) for name, v in parts.items()}
    out["total"] = out["pos"] + out["neg"] + out["rand"]
    return out


N_KEYS, K, D = 20, 4, 6


def _problem(seed: int, widths: tuple[int, int] = (3, 3)):
    """Random states, a table missing some keys, and a batch with every edge case of docs/method.md §3.3;
    ``widths``: the synonym and antonym slots per position."""
    g = torch.Generator().manual_seed(seed)
    in_dict = [key for key in range(N_KEYS) if key % 4 != 3]  # keys 3, 7, 11, 15, 19 have no senses
    table = {
        key: torch.randn(int(torch.randint(1, K + 1, (1,), generator=g)), D, generator=g) for key in in_dict
    }
    B, L, M = 4, 10, 5
    S, A = widths
    labels = torch.randint(0, N_KEYS, (B, L), generator=g)
    labels[:, -1] = -100
    labels[0, 2] = 3  # a P1 target without senses
    batch = {
        "labels": labels,
        "sense_pos": torch.randint(0, L - 1, (B, M), generator=g),
        "sense_pos_mask": torch.rand(B, M, generator=g) < 0.8,
        "syn_keys": torch.randint(0, N_KEYS, (B, M, S), generator=g),
        "syn_mask": torch.rand(B, M, S, generator=g) < 0.7,
        "ant_keys": torch.randint(0, N_KEYS, (B, M, A), generator=g),
        "ant_mask": torch.rand(B, M, A, generator=g) < 0.5,
        "rand_pos": torch.randint(0, L, (B, M), generator=g),
        "rand_pos_mask": torch.rand(B, M, generator=g) < 0.8,
    }
    batch["sense_pos"][0, 0] = 2
    batch["sense_pos_mask"][0, 0] = True
    batch["syn_mask"][0, 1] = False  # no synonyms
    batch["ant_mask"][0, 2] = False  # no antonyms
    batch["syn_keys"][0, 0] = 7  # synonyms without senses
    batch["syn_mask"][1, 0] = False  # neither synonyms nor antonyms
    batch["ant_mask"][1, 0] = False
    batch["rand_pos"][0, 0] = L - 1  # a P2 position without a target
    batch["rand_pos_mask"][0, 0] = True
    batch["sense_pos_mask"][2] = False  # a sequence with m = 0
    batch["rand_pos_mask"][2] = False
    hs = torch.randn(B, L, D, generator=g)
    ht = hs + 0.5 * torch.randn(B, L, D, generator=g)
    return hs, ht, batch, table


SWITCHES = [
    {},
    {"positives": False},
    {"negatives": False},
    {"random_positions": False},
    {"own_senses_in_negatives": False},
    {"positives": False, "negatives": False},
    {"kappa": 1, "w_pos": 0.5, "w_neg": 2.0},
    {"kappa": 50},
    {"hinge": "teacher"},
    {"hinge": "teacher", "teacher_slack": 0.3, "own_senses_in_negatives": False},
    {"hinge": "triplet"},
    {"hinge": "triplet", "positives": False, "kappa": 1},
    {"pull": "floor"},
    {"pull": "floor", "hinge": "teacher", "random_positions": False},
    {"pull": "match"},
    {"pull": "match", "hinge": "teacher", "own_senses_in_negatives": False},
]


@pytest.mark.parametrize(
    "switches", SWITCHES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "default"
)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_per_position_loop_values_and_gradients(switches, seed):
    hs, ht, batch, table = _problem(seed)
    cfg = SenseLossConfig(**{"kappa": 2, "margin": 2.5, **switches})  # margin: some hinges active
    hs_ref = hs.double().requires_grad_(True)
    want = reference_sense_loss(hs_ref, ht.double(), batch, {k: v.double() for k, v in table.items()}, cfg)
    (want_grad,) = torch.autograd.grad(want["total"], [hs_ref])
    hs_vec = hs.clone().requires_grad_(True)
    got = sense_loss(hs_vec, ht, batch, TableLookup(table, K, D, N_KEYS), cfg)
    (got_grad,) = torch.autograd.grad(got["total"], [hs_vec])
    for name in ("total", "pos", "neg", "rand"):
        assert got[name].item() == pytest.approx(want[name].item(), rel=1e-5, abs=1e-6), name
    torch.testing.assert_close(got_grad.double(), want_grad, rtol=1e-5, atol=1e-6)
    assert want["total"].item() > 0  # every switch set leaves some term


@pytest.mark.parametrize(
    "switches", SWITCHES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "default"
)
@pytest.mark.parametrize("seed", [0, 1])
def test_the_sparse_dictionary_gives_the_dense_tables_values_and_gradients(switches, seed):
    """The sparse dictionary (only real senses stored) against a dense padded table: bit for bit."""
    from dskd.senses.dictionary import SenseDictionary

    hs, ht, batch, table = _problem(seed)
    keys = sorted(table)
    centroids = torch.zeros(len(keys), K, D)
    for i, key in enumerate(keys):
        centroids[i, : len(table[key])] = table[key]
    counts = torch.tensor([len(table[key]) for key in keys])
    senses = SenseDictionary.from_padded(centroids, counts, torch.tensor(keys), {"table_size": N_KEYS})
    assert len(senses.rows) == int(counts.sum()) < len(keys) * K  # no padding rows stored
    cfg = SenseLossConfig(**{"kappa": 2, "margin": 2.5, **switches})
    results = []
    for lookup in (senses.lookup, TableLookup(table, K, D, N_KEYS)):
        h = hs.clone().requires_grad_(True)
        out = sense_loss(h, ht, batch, lookup, cfg)
        results.append((out, torch.autograd.grad(out["total"], [h])[0]))
    (sparse, sparse_grad), (dense, dense_grad) = results
    for name in ("total", "pos", "neg", "rand", "n_pos_candidates", "n_neg_candidates"):
        assert torch.equal(sparse[name], dense[name]), name
    assert all(torch.equal(sparse["diagnostics"][n], v) for n, v in dense["diagnostics"].items())
    assert torch.equal(sparse_grad, dense_grad)
    want = reference_sense_loss(
        hs.double(), ht.double(), batch, {k: v.double() for k, v in table.items()}, cfg
    )
    assert sparse["total"].item() == pytest.approx(want["total"].item(), rel=1e-5, abs=1e-6)


def test_hinge_is_active_in_the_default_problem():
    hs, ht, batch, table = _problem(0)
    out = sense_loss(hs, ht, batch, TableLookup(table, K, D, N_KEYS), SenseLossConfig(kappa=2, margin=2.5))
    assert out["neg"].item() > 0 and out["pos"].item() > 0 and out["rand"].item() > 0


def _one_position_batch(labels: list[int], p2: bool) -> dict[str, torch.Tensor]:
    """One sequence whose position 0 is its P1 position (no synonyms or antonyms) and, with ``p2``,
    its P2 position too."""
    return {
        "labels": torch.tensor([labels]),
        "sense_pos": torch.tensor([[0]]),
        "sense_pos_mask": torch.tensor([[True]]),
        "syn_keys": torch.zeros(1, 1, 0, dtype=torch.long),
        "syn_mask": torch.zeros(1, 1, 0, dtype=torch.bool),
        "ant_keys": torch.zeros(1, 1, 0, dtype=torch.long),
        "ant_mask": torch.zeros(1, 1, 0, dtype=torch.bool),
        "rand_pos": torch.tensor([[0]]),
        "rand_pos_mask": torch.tensor([[p2]]),
    }


def test_hand_computed_single_position():
    # D[t=1] = {0, 2} (d = 1); H_T = 0.1 -> nearest sense 0; H_S = 1 -> MSE 1
    table = {1: torch.tensor([[0.0], [2.0]])}
    batch = _one_position_batch([1, -100], p2=True)
    hs, ht = torch.tensor([[[1.0], [0.0]]]), torch.tensor([[[0.1], [0.0]]])
    cfg = SenseLossConfig(kappa=1, margin=1.5)
    out = sense_loss(hs, ht, batch, TableLookup(table, 2, 1, 3), cfg)
    # P1: pos = MSE 1; neg (own senses only) = max(0, 1.5 - 1) = 0.5; P2: MSE 1; mean of 2 terms
    assert out["total"].item() == pytest.approx((1.0 + 0.5 + 1.0) / 2)
    assert out["pos"].item() == pytest.approx(0.5) and out["neg"].item() == pytest.approx(0.25)
    assert out["n_pos_candidates"].item() == 2.0
    no_own = sense_loss(
        hs, ht, batch, TableLookup(table, 2, 1, 3), dataclasses.replace(cfg, own_senses_in_negatives=False)
    )
    assert no_own["neg"].item() == 0.0 and no_own["n_neg_candidates"].item() == 0.0
    batch["labels"][0, 0] = 2  # t not in D: both terms still count, as 0
    assert sense_loss(hs, ht, batch, TableLookup(table, 2, 1, 3), cfg)["total"].item() == 0.0


def test_empty_batch_is_zero_and_connected():
    hs, ht, batch, table = _problem(3)
    batch["sense_pos_mask"][:] = False
    batch["rand_pos_mask"][:] = False
    h = hs.clone().requires_grad_(True)
    out = sense_loss(h, ht, batch, TableLookup(table, K, D, N_KEYS), SenseLossConfig())
    out["total"].backward()
    assert out["total"].item() == 0.0 and h.grad is not None and h.grad.abs().sum().item() == 0.0


def test_sequences_without_terms_leave_the_mean():
    hs, ht, batch, table = _problem(4)
    lookup, cfg = TableLookup(table, K, D, N_KEYS), SenseLossConfig()
    one = {k: v[:1] for k, v in batch.items()}
    two = {k: torch.cat([v[:1], v[2:3]]) for k, v in batch.items()}  # sequence 2 has m = 0
    a = sense_loss(hs[:1], ht[:1], one, lookup, cfg)["total"]
    b = sense_loss(torch.cat([hs[:1], hs[2:3]]), torch.cat([ht[:1], ht[2:3]]), two, lookup, cfg)["total"]
    assert a.item() == pytest.approx(b.item())


def test_student_only_receives_gradient_and_teacher_is_constant():
    hs, ht, batch, table = _problem(5)
    h_s, h_t = hs.clone().requires_grad_(True), ht.clone().requires_grad_(True)
    sense_loss(h_s, h_t, batch, TableLookup(table, K, D, N_KEYS), SenseLossConfig())["total"].backward()
    assert h_t.grad is None and h_s.grad.abs().sum() > 0


def test_bad_inputs_are_explained():
    hs, ht, batch, table = _problem(6)
    lookup = TableLookup(table, K, D, N_KEYS)
    with pytest.raises(DSKDError, match="syn_keys"):
        sense_loss(hs, ht, {k: v for k, v in batch.items() if k != "syn_keys"}, lookup, SenseLossConfig())
    with pytest.raises(DSKDError, match="project"):
        sense_loss(hs[..., :3], ht, batch, lookup, SenseLossConfig())
    with pytest.raises(DSKDError, match="hidden size"):
        sense_loss(hs[..., :3], ht[..., :3], batch, lookup, SenseLossConfig())


def reference_diagnostics(hs, ht, batch, table, cfg) -> dict[str, float]:
    """The diagnostics one P1 position at a time: every candidate row tagged with its source."""

    def tagged(keys, mask, tag):
        return [(r, tag) for key, on in zip(keys.tolist(), mask.tolist()) if on for r in table.get(key, [])]

    def nearest(cands, anchor):
        return sorted(cands, key=lambda c: float(torch.linalg.vector_norm(c[0] - anchor)))[: cfg.kappa]

    def active(states, h_t, pos_set, neg_set):  # the hinges of one position active at ``states``
        def mse(h, row):
            return float(((h - row) ** 2).mean())

        if cfg.hinge == "triplet":
            if not (pos_set and neg_set):
                return []
            near = sum(mse(states, r) for r, _ in pos_set) / len(pos_set)
            far = sum(mse(states, r) for r, _ in neg_set) / len(neg_set)
            return [cfg.margin + near - far > 0]
        if cfg.hinge == "teacher":
            return [mse(h_t, r) - cfg.teacher_slack - mse(states, r) > 0 for r, _ in neg_set]
        return [cfg.margin - mse(states, r) > 0 for r, _ in neg_set]

    hinges = {"student": [], "teacher": []}
    counts = dict.fromkeys(("p1", "syn", "ant", "coincide", "pos", "pos_own", "neg", "neg_own", "pull"), 0)
    sums = dict.fromkeys(("s_pos", "t_pos", "s_neg", "t_neg"), 0.0)
    for b, m in batch["sense_pos_mask"].nonzero().tolist():
        p = int(batch["sense_pos"][b, m])
        t = int(batch["labels"][b, p])
        own = [(r, "own") for r in table.get(t, [])]
        syn = tagged(batch["syn_keys"][b, m], batch["syn_mask"][b, m], "nb")
        ant = tagged(batch["ant_keys"][b, m], batch["ant_mask"][b, m], "nb")
        pos_set = nearest(syn + own, ht[b, p])
        neg_set = nearest(ant + own if cfg.own_senses_in_negatives else ant, ht[b, p])
        counts["p1"] += 1
        counts["syn"] += bool(syn)
        counts["ant"] += bool(ant)
        counts["coincide"] += bool(
            cfg.own_senses_in_negatives
            and pos_set
            and neg_set
            and all(tag == "own" for _, tag in pos_set + neg_set)
        )
        for name, chosen in (("pos", pos_set), ("neg", neg_set)):
            for row, tag in chosen:
                s, t_ = float(((hs[b, p] - row) ** 2).mean()), float(((ht[b, p] - row) ** 2).mean())
                counts[name] += 1
                counts[f"{name}_own"] += tag == "own"
                sums[f"s_{name}"] += s
                sums[f"t_{name}"] += t_
                counts["pull"] += name == "pos" and s > t_
        hinges["student"] += active(hs[b, p], ht[b, p], pos_set, neg_set)
        hinges["teacher"] += active(ht[b, p], ht[b, p], pos_set, neg_set)
    counts["hinge_active"], counts["hinge_active_teacher"] = len(hinges["student"]), len(hinges["teacher"])
    return {
        "hinge_active": sum(hinges["student"]) / len(hinges["student"]),
        "hinge_active_teacher": sum(hinges["teacher"]) / len(hinges["teacher"]),
        "pull_active": counts["pull"] / counts["pos"],
        "pos_distance_ratio": sums["s_pos"] / sums["t_pos"],
        "neg_distance_ratio": sums["s_neg"] / sums["t_neg"],
        "syn_row_fraction": counts["syn"] / counts["p1"],
        "ant_row_fraction": counts["ant"] / counts["p1"],
        "own_in_positives": counts["pos_own"] / counts["pos"],
        "own_in_negatives": counts["neg_own"] / counts["neg"],
        "selections_coincide": counts["coincide"] / counts["p1"],
        "student_mse_pos": sums["s_pos"] / counts["pos"],
        "teacher_mse_pos": sums["t_pos"] / counts["pos"],
        "student_mse_neg": sums["s_neg"] / counts["neg"],
        "teacher_mse_neg": sums["t_neg"] / counts["neg"],
        "margin": cfg.teacher_slack if cfg.hinge == "teacher" else cfg.margin,
    }, counts


@pytest.mark.parametrize("widths", [(3, 3), (5, 3), (3, 5)])  # synonym and antonym slots
@pytest.mark.parametrize(
    "switches",
    [
        {},
        {"own_senses_in_negatives": False},
        {"kappa": 1},
        {"kappa": 50},
        {"hinge": "teacher"},
        {"hinge": "teacher", "teacher_slack": 0.2},
        {"hinge": "triplet"},
    ],
    ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "default",
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_diagnostics_match_a_per_position_loop(switches, seed, widths):
    hs, ht, batch, table = _problem(seed, widths)
    targets = batch["labels"].gather(1, batch["sense_pos"]).unsqueeze(-1)
    for name in ("syn", "ant"):  # a neighbour equal to the target would tie with its own senses
        batch[f"{name}_mask"] &= batch[f"{name}_keys"] != targets
    cfg = SenseLossConfig(**{"kappa": 2, "margin": 2.5, **switches})
    out = sense_loss(hs, ht, batch, TableLookup(table, K, D, N_KEYS), cfg)
    got, got_counts = out["diagnostics"], out["diagnostic_counts"]
    want, counts = reference_diagnostics(hs, ht, batch, table, cfg)
    assert set(got) == set(want)
    for name, value in want.items():
        assert got[name].item() == pytest.approx(value, rel=1e-5, abs=1e-6), name
    # of how many entries each value is the mean (validation pools them over batches with these)
    assert set(got_counts) == set(got) - {"pos_distance_ratio", "neg_distance_ratio"}
    for name, ref in (
        ("hinge_active", "hinge_active"),
        ("hinge_active_teacher", "hinge_active_teacher"),
        ("student_mse_pos", "pos"),
        ("own_in_negatives", "neg"),
        ("ant_row_fraction", "p1"),
    ):
        assert got_counts[name].item() == counts[ref], name  # fmt: skip
    assert want["hinge_active"] > 0 and want["own_in_positives"] > 0  # the problem exercises both


def test_margin_argument_overrides_the_config_margin():
    hs, ht, batch, table = _problem(0)
    lookup = TableLookup(table, K, D, N_KEYS)
    cfg = SenseLossConfig(kappa=2, margin=1.0)
    moved = sense_loss(hs, ht, batch, lookup, cfg, margin=2.5)
    want = sense_loss(hs, ht, batch, lookup, dataclasses.replace(cfg, margin=2.5))
    assert moved["neg"].item() == pytest.approx(want["neg"].item())
    assert moved["diagnostics"]["margin"].item() == 2.5
    assert moved["neg"].item() > sense_loss(hs, ht, batch, lookup, cfg)["neg"].item()


def test_the_margin_diagnostic_is_the_teacher_slack_under_the_teacher_hinge():
    """hinge=teacher measures against teacher_slack; its diagnostic showed the unused margin (1.0)."""
    hs, ht, batch, table = _problem(0)
    cfg = SenseLossConfig(kappa=2, margin=1.0, hinge="teacher", teacher_slack=0.3)
    got = sense_loss(hs, ht, batch, TableLookup(table, K, D, N_KEYS), cfg, margin=2.5)
    assert got["diagnostics"]["margin"].item() == pytest.approx(0.3)


def test_bf16_true_default_dtype_gives_the_fp32_loss():
    """Lightning's bf16-true runs the step with bfloat16 as torch's default dtype; the loss's own
    buffers keep their dtypes (it crashed: a bf16 distance buffer filled with fp32 distances)."""
    hs, ht, batch, table = _problem(0)
    lookup, cfg = TableLookup(table, K, D, N_KEYS), SenseLossConfig(kappa=2, margin=2.5)
    want = sense_loss(hs, ht, batch, lookup, cfg)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        got = sense_loss(hs, ht, batch, lookup, cfg)
    finally:
        torch.set_default_dtype(default)
    torch.testing.assert_close(got["total"], want["total"])
    assert got["diagnostics"]["margin"].dtype == torch.float32


@pytest.mark.parametrize("pull", ["floor", "match"])
def test_teacher_hinge_and_teacher_relative_pulls_are_zero_with_zero_gradient_at_the_teacher(pull):
    """Correct: exactly 0 at the teacher's state; selective: the hinge acts once the student comes
    closer to an antonym row than the teacher, and the pulls (P1 and P2) once it moves off the teacher."""
    hs, ht, batch, table = _problem(0)
    lookup = TableLookup(table, K, D, N_KEYS)
    cfg = SenseLossConfig(kappa=2, hinge="teacher", pull=pull)
    h = ht.clone().requires_grad_(True)
    out = sense_loss(h, ht, batch, lookup, cfg)
    (grad,) = torch.autograd.grad(out["total"], [h])
    assert out["pos"].item() == out["neg"].item() == out["rand"].item() == 0.0
    assert grad.abs().sum().item() == 0.0
    diag = out["diagnostics"]
    assert diag["hinge_active"].item() == diag["hinge_active_teacher"].item() == 0.0
    assert diag["pull_active"].item() == 0.0 and diag["pos_distance_ratio"].item() == 1.0
    moved = sense_loss(hs, ht, batch, lookup, cfg)  # the student's own states: both act somewhere
    assert moved["pos"].item() > 0 and moved["neg"].item() > 0 and moved["rand"].item() > 0
    assert 0 < moved["diagnostics"]["hinge_active"].item() < 1
    assert moved["diagnostics"]["hinge_active_teacher"].item() == 0.0


@pytest.mark.parametrize("student", [0.5, 3.5])
def test_pull_forms_by_hand_on_either_side_of_the_teacher(student):
    """One P1 position, one positive row s = 0 (d = 1), the teacher at 2 (MSE_T = 4); the student closer
    (0.5: MSE_S = 0.25) or farther (3.5: 12.25). absolute pulls in on both sides; floor only from
    farther; match pulls in from farther and pushes out from closer, in proportion to the gap."""
    table = {1: torch.tensor([[0.0]])}
    batch = _one_position_batch([1], p2=False)
    mse_s, farther = student**2, student > 2
    want = {"absolute": (mse_s, 2 * student), "floor": (max(0.0, mse_s - 4), 2 * student * farther)}
    want["match"] = ((mse_s - 4) ** 2, 2 * (mse_s - 4) * 2 * student)
    for pull, (value, slope) in want.items():
        h = torch.tensor([[[student]]], requires_grad=True)
        cfg = SenseLossConfig(kappa=1, pull=pull, negatives=False, random_positions=False)
        out = sense_loss(h, torch.tensor([[[2.0]]]), batch, TableLookup(table, 1, 1, 2), cfg)
        (grad,) = torch.autograd.grad(out["total"], [h])
        assert out["pos"].item() == pytest.approx(value), pull
        assert grad.item() == pytest.approx(slope), pull  # d/dh of (h - 0)^2 is 2h; its sign: in or out


def test_absolute_and_triplet_hinges_act_at_the_teacher_and_say_so():
    """The paper's hinge and the triplet are not teacher-relative: with a margin above the teacher's
    distances they act at the teacher's own state, and hinge_active_teacher reports it."""
    _, ht, batch, table = _problem(1)
    lookup = TableLookup(table, K, D, N_KEYS)
    for hinge in ("absolute", "triplet"):
        out = sense_loss(ht, ht, batch, lookup, SenseLossConfig(kappa=2, margin=2.5, hinge=hinge))
        assert out["neg"].item() > 0, hinge
        diag = out["diagnostics"]
        assert diag["hinge_active_teacher"].item() == diag["hinge_active"].item() > 0, hinge


def test_teacher_slack_lets_the_student_come_closer():
    hs, ht, batch, table = _problem(2)
    lookup = TableLookup(table, K, D, N_KEYS)
    negs = [
        sense_loss(hs, ht, batch, lookup, SenseLossConfig(kappa=2, hinge="teacher", teacher_slack=s))[
            "neg"
        ].item()
        for s in (0.0, 0.5, 1e3)
    ]
    assert negs[0] > negs[1] > negs[2] == 0.0


@pytest.mark.parametrize(
    ("key", "value"), [("hinge", "relative"), ("teacher_slack", -0.1), ("pull", "ceiling")]
)
def test_bad_hinge_and_pull_settings_are_refused(key, value):
    with pytest.raises(ConfigError, match=f"loss.sense.{key}"):
        SenseLossConfig(**{key: value})
