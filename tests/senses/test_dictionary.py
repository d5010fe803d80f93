"""SenseDictionary storage, loading, lookup and refusal of bad input."""

import json

import pytest
import torch

from dskd.core.errors import ArtifactMismatchError, DSKDError
from dskd.senses.dictionary import META_FILE, SENSES_FILE, SenseDictionary

META = {"teacher": "tiny", "tokenizer_fingerprint": "abc", "keying": "predicted", "table_size": 12}


def _padded() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(centroids [3, k=4, d=5] padded with zero rows, counts, key ids): keys 2, 5, 11 with 4, 2, 1 senses."""
    gen = torch.Generator().manual_seed(0)
    cents = torch.randn(3, 4, 5, generator=gen)
    counts = torch.tensor([4, 2, 1])
    cents[1, 2:] = 0
    cents[2, 1:] = 0
    return cents, counts, torch.tensor([2, 5, 11])


def _dictionary() -> SenseDictionary:
    return SenseDictionary.from_padded(*_padded(), dict(META))


def _save_version_1(directory, cents, counts, key_ids, meta) -> None:
    """A dictionary file as format version 1 wrote it: centroids padded to k rows per key."""
    from safetensors.torch import save_file

    tensors = {"centroids": cents, "counts": counts.int(), "key_ids": key_ids}
    meta = dict(meta, format_version=1, dtype="float32", keys=len(key_ids), k=cents.shape[1], hidden_size=5)
    save_file(tensors, str(directory / SENSES_FILE), metadata={"dskd_senses_meta": json.dumps(meta)})


def test_lookup_shapes_values_and_unknown_keys():
    d = _dictionary()
    keys = torch.tensor([[5, 0, 2], [11, -100, 99]])
    senses, mask = d.lookup(keys)
    assert senses.shape == (2, 3, 4, 5) and mask.shape == (2, 3, 4)
    cents = _padded()[0]
    assert torch.equal(senses[0, 0], cents[1]) and mask[0, 0].tolist() == [True, True, False, False]
    assert torch.equal(senses[0, 2], cents[0]) and mask[0, 2].all()
    assert torch.equal(senses[1, 0], cents[2]) and mask[1, 0].tolist() == [True, False, False, False]
    for i, j in [(0, 1), (1, 1), (1, 2)]:  # missing, negative (ignore index), beyond the table
        assert not mask[i, j].any() and not senses[i, j].any()
    s1, m1 = d.lookup(torch.tensor(5))
    assert s1.shape == (4, 5) and m1.sum() == 2


def test_save_load_roundtrip_and_restrict(tmp_path):
    d = _dictionary()
    d.save(tmp_path)
    assert json.loads((tmp_path / META_FILE).read_text())["format_version"] == 2
    back = SenseDictionary.load(tmp_path, device="cpu")
    assert back.k == 4 and back.hidden_size == 5 and len(back) == 3
    assert back.meta["dtype"] == "float32" and back.meta["teacher"] == "tiny"
    keys = torch.tensor([2, 5, 11, 7])
    for a, b in zip(d.lookup(keys), back.lookup(keys), strict=True):
        assert torch.equal(a, b)
    small = SenseDictionary.load(tmp_path, keys=torch.tensor([11, 7, 400]))
    assert small.key_ids.tolist() == [11]
    s, m = small.lookup(torch.tensor([5, 11]))
    assert not m[0].any() and torch.equal(s[1], _padded()[0][2])


def test_mismatch_is_refused_naming_the_field(tmp_path):
    d = _dictionary()
    d.save(tmp_path)
    back = SenseDictionary.load(tmp_path)
    back.check_compatible("tiny", "abc", 5)
    with pytest.raises(ArtifactMismatchError, match="tokenizer_fingerprint"):
        back.check_compatible("tiny", "other", 5)
    with pytest.raises(ArtifactMismatchError, match="'teacher'"):
        back.check_compatible("big", "abc", 5)
    with pytest.raises(ArtifactMismatchError, match="hidden_size"):
        back.check_compatible(hidden_size=4096)


def test_truncated_or_corrupt_file_gives_a_clear_error(tmp_path):
    _dictionary().save(tmp_path)
    path = tmp_path / SENSES_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20])
    with pytest.raises(DSKDError, match="truncated or corrupt"):
        SenseDictionary.load(tmp_path)
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(DSKDError, match="truncated or corrupt"):
        SenseDictionary.load(tmp_path)
    with pytest.raises(DSKDError, match="dskd senses build"):
        SenseDictionary.load(tmp_path / "missing")


def test_interrupted_write_leaves_no_file_under_the_final_name(tmp_path, monkeypatch):
    import dskd.senses.dictionary

    def fail(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(dskd.senses.dictionary, "save_file", fail)
    with pytest.raises(KeyboardInterrupt):
        _dictionary().save(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_old_format_version_is_refused(tmp_path):
    from safetensors.torch import save_file

    cents, counts, key_ids = _padded()
    meta = dict(META, format_version=0, k=4)
    save_file(
        {"centroids": cents, "counts": counts.int(), "key_ids": key_ids},
        str(tmp_path / SENSES_FILE),
        metadata={"dskd_senses_meta": json.dumps(meta)},
    )
    with pytest.raises(DSKDError, match="has format version 0, this dskd reads 1 and 2; rebuild it"):
        SenseDictionary.load(tmp_path)


def _rewrite(tmp_path, edit) -> None:
    """Change the saved tensors in place with ``edit(tensors)``, keeping the saved metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = str(tmp_path / SENSES_FILE)
    with safe_open(path, framework="pt") as f:
        header = f.metadata()
    tensors = {k: v.clone() for k, v in load_file(path).items()}
    edit(tensors)
    save_file(tensors, path, metadata=header)


def _big_dictionary(n: int = 30) -> SenseDictionary:
    gen = torch.Generator().manual_seed(1)
    meta = dict(META, table_size=n)
    cents = torch.randn(n, 4, 5, generator=gen)
    return SenseDictionary.from_padded(cents, torch.full((n,), 4), torch.arange(n), meta)


def test_a_third_of_the_rows_overwritten_by_nan_is_refused_at_load(tmp_path):
    _big_dictionary().save(tmp_path)

    def poison(t):
        t["rows"].view(30, 4, 5)[::3] = float("nan")  # every sense of keys 0, 3, 6, ...

    _rewrite(tmp_path, poison)
    with pytest.raises(DSKDError, match=r"non-finite \(NaN/inf\) senses in 10 of the 30 keys loaded") as err:
        SenseDictionary.load(tmp_path)
    assert "key ids [0, 3, 6, 9, 12]..." in str(err.value) and "\n" not in str(err.value)
    clean = SenseDictionary.load(tmp_path, keys=torch.tensor([1, 2, 4]))  # the rows a run uses are clean
    assert clean.key_ids.tolist() == [1, 2, 4]


def test_an_infinite_padding_row_of_a_version_1_file_is_refused_too(tmp_path):
    cents, counts, key_ids = _padded()
    cents[2, 3, 0] = float("inf")  # beyond key 11's count of 1: dropped at load, yet a sign of damage
    _save_version_1(tmp_path, cents, counts, key_ids, META)
    with pytest.raises(DSKDError, match=r"in 1 of the 3 keys loaded \(key ids \[11\]\)"):
        SenseDictionary.load(tmp_path)


def test_full_verification_checks_every_tensor_sha256(tmp_path, monkeypatch):
    import hashlib

    d = _dictionary()
    d.save(tmp_path)
    recorded = SenseDictionary.read_meta(tmp_path)["tensor_sha256"]
    assert recorded["key_ids"] == hashlib.sha256(torch.tensor([2, 5, 11]).numpy().tobytes()).hexdigest()

    def flip(t):
        t["rows"][0, 0] += 1.0  # finite, same size: only the sha256 tells

    _rewrite(tmp_path, flip)
    SenseDictionary.load(tmp_path)  # the default fast check does not hash
    monkeypatch.setenv("DSKD_VERIFY", "full")
    with pytest.raises(DSKDError, match="tensor 'rows' does not match its sha256"):
        SenseDictionary.load(tmp_path)


def test_damaged_header_metadata_is_one_line(tmp_path):
    from safetensors.torch import save_file

    d = _dictionary()
    tensors = {"rows": d.rows, "counts": d.counts.int(), "key_ids": d.key_ids}
    save_file(tensors, str(tmp_path / SENSES_FILE), metadata={"dskd_senses_meta": "{not json"})
    with pytest.raises(DSKDError, match="truncated or corrupt .JSONDecodeError"):
        SenseDictionary.load(tmp_path)


def test_nonfinite_rows_are_exact_when_sums_overflow():
    from dskd.senses.dictionary import nonfinite_rows

    big = torch.full((4, 2, 3), 3e38)  # finite values whose sum is not
    big[2, 1, 1] = float("-inf")
    assert nonfinite_rows(big).tolist() == [2]
    half = torch.full((3, 2, 4), 60000.0, dtype=torch.float16)  # each row sums past float16's range
    half[0, 0, 0] = float("nan")
    assert nonfinite_rows(half).tolist() == [0]
    mixed = torch.zeros(5, 1, 2)
    mixed[4, 0] = torch.tensor([float("inf"), float("-inf")])  # a sum of NaN
    assert nonfinite_rows(mixed).tolist() == [4]


@pytest.mark.parametrize(("ids", "bad"), [([2, 5, 12], 12), ([2, -1, 11], -1)])
def test_key_ids_outside_the_table_are_refused_at_load(tmp_path, ids, bad):
    _dictionary().save(tmp_path)
    _rewrite(tmp_path, lambda t: t["key_ids"].copy_(torch.tensor(ids)))  # same size: fast mode's check
    with pytest.raises(DSKDError) as err:
        SenseDictionary.load(tmp_path)
    message = str(err.value)
    assert "\n" not in message and f"{SENSES_FILE} is damaged" in message
    assert f"1 of its 3 key ids lie outside the key table 0..11 (table_size 12), e.g. {bad}" in message
    assert message.endswith("rebuild with `dskd senses build CONFIG`.")


def test_a_table_size_smaller_than_the_key_ids_is_refused_at_load(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    _dictionary().save(tmp_path)
    path = str(tmp_path / SENSES_FILE)
    with safe_open(path, framework="pt") as f:
        header = f.metadata()
    meta = json.loads(header["dskd_senses_meta"])
    header["dskd_senses_meta"] = json.dumps(dict(meta, table_size=6))
    save_file(load_file(path), path, metadata=header)
    with pytest.raises(DSKDError, match=r"1 of its 3 key ids lie outside the key table 0..5 .*e.g. 11"):
        SenseDictionary.load(tmp_path)


def test_an_intact_dictionary_passes_the_key_check_and_a_bad_one_is_not_built(tmp_path):
    d = _dictionary()
    d.save(tmp_path)
    assert SenseDictionary.load(tmp_path).key_ids.tolist() == [2, 5, 11]  # no false alarm at the edge
    with pytest.raises(DSKDError, match=r"inconsistent: 1 of its 3 key ids .* e\.g\. 11"):
        SenseDictionary(d.rows, d.counts, d.key_ids, d.k, dict(META, table_size=11))


def _dense_lookup(cents: torch.Tensor, counts: torch.Tensor, key_ids: torch.Tensor, keys: torch.Tensor):
    """The dense path, one key at a time: a key's padded centroids and count, zeros for other keys."""
    senses, mask = torch.zeros(*keys.shape, *cents.shape[1:]), torch.zeros(*keys.shape, cents.shape[1]).bool()
    for at in torch.cartesian_prod(*(torch.arange(n) for n in keys.shape)).reshape(-1, keys.dim()):
        hit = (key_ids == keys[tuple(at)]).nonzero().flatten()
        if len(hit):
            senses[tuple(at)], mask[tuple(at)][: counts[hit[0]]] = cents[hit[0]], True
    return senses, mask


def test_only_real_senses_hold_rows_and_the_lookup_equals_the_dense_path():
    gen = torch.Generator().manual_seed(3)
    counts = torch.randint(0, 6, (40,), generator=gen)  # 0..k senses, some keys without any
    cents = torch.randn(40, 5, 7, generator=gen) * (torch.arange(5) < counts[:, None]).unsqueeze(-1)
    key_ids = torch.randperm(90, generator=gen)[:40].sort().values
    d = SenseDictionary.from_padded(cents, counts, key_ids, {"table_size": 100})
    assert d.rows.shape == (int(counts.sum()), 7) and d.k == 5
    assert d.nbytes == int(counts.sum()) * 7 * 4 + 16 * 100
    keys = torch.randint(-3, 105, (6, 9), generator=gen)
    for got, want in zip(d.lookup(keys), _dense_lookup(cents, counts, key_ids, keys), strict=True):
        assert torch.equal(got, want)
    part = torch.tensor([int(key_ids[4]), int(key_ids[17]), 99, -1])
    small = d.restrict(part)
    assert small.key_ids.tolist() == sorted({int(key_ids[4]), int(key_ids[17])} & set(key_ids.tolist()))
    for got, want in zip(small.lookup(keys), _dense_lookup(cents, counts, key_ids, keys), strict=True):
        keep = torch.isin(keys, part)
        assert torch.equal(got[keep], want[keep]) and not got[~keep].any()


def test_a_version_1_file_loads_as_the_same_sparse_dictionary(tmp_path):
    cents, counts, key_ids = _padded()
    _save_version_1(tmp_path, cents, counts, key_ids, META)
    old = SenseDictionary.load(tmp_path)
    assert old.meta["format_version"] == 1 and old.rows.shape == (7, 5)
    assert torch.equal(old.rows, _dictionary().rows)
    assert SenseDictionary.load(tmp_path, keys=torch.tensor([5])).rows.shape == (2, 5)
    old.save(tmp_path)  # written again in the current format
    assert SenseDictionary.read_meta(tmp_path)["format_version"] == 2
    assert torch.equal(SenseDictionary.load(tmp_path).rows, old.rows)


def test_stored_size_is_what_the_loaded_dictionary_takes(tmp_path):
    from dskd.senses.dictionary import stored_size

    (tmp_path / "new").mkdir()
    (tmp_path / "old").mkdir()
    _dictionary().save(tmp_path / "new")
    _save_version_1(tmp_path / "old", *_padded(), META)
    for directory in (tmp_path / "new", tmp_path / "old"):
        assert (
            stored_size(directory) == (7, SenseDictionary.load(directory).nbytes) == (7, 7 * 5 * 4 + 16 * 12)
        )
        keys = torch.tensor([5, 11, 3])
        assert (
            stored_size(directory, keys)
            == (3, SenseDictionary.load(directory, keys=keys).nbytes)
            == (3, 3 * 20 + 192)
        )


def test_counts_beyond_k_or_rows_that_disagree_are_refused():
    counts, key_ids = _padded()[1:]
    with pytest.raises(DSKDError, match=r"rows \(6, 5\), counts \(3,\) summing to 7"):
        SenseDictionary(torch.zeros(6, 5), counts, key_ids, 4, dict(META))
    with pytest.raises(DSKDError, match="0..k=4"):
        SenseDictionary.from_padded(torch.zeros(3, 4, 5), torch.tensor([5, 1, 1]), key_ids, dict(META))
