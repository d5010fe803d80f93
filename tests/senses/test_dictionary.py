"""SenseDictionary storage, loading, lookup and refusal of bad input."""

import json

import pytest
import torch

from dskd.core.errors import ArtifactMismatchError, DSKDError
from dskd.senses.dictionary import META_FILE, SENSES_FILE, SenseDictionary

META = {"teacher": "tiny", "tokenizer_fingerprint": "abc", "keying": "predicted", "table_size": 12}


def _dictionary() -> SenseDictionary:
    gen = torch.Generator().manual_seed(0)
    cents = torch.randn(3, 4, 5, generator=gen)
    counts = torch.tensor([4, 2, 1])
    cents[1, 2:] = 0
    cents[2, 1:] = 0
    return SenseDictionary(cents, counts, torch.tensor([2, 5, 11]), dict(META))


def test_lookup_shapes_values_and_unknown_keys():
    d = _dictionary()
    keys = torch.tensor([[5, 0, 2], [11, -100, 99]])
    senses, mask = d.lookup(keys)
    assert senses.shape == (2, 3, 4, 5) and mask.shape == (2, 3, 4)
    assert torch.equal(senses[0, 0], d.centroids[1]) and mask[0, 0].tolist() == [True, True, False, False]
    assert torch.equal(senses[0, 2], d.centroids[0]) and mask[0, 2].all()
    assert torch.equal(senses[1, 0], d.centroids[2]) and mask[1, 0].tolist() == [True, False, False, False]
    for i, j in [(0, 1), (1, 1), (1, 2)]:  # missing, negative (ignore index), beyond the table
        assert not mask[i, j].any() and not senses[i, j].any()
    s1, m1 = d.lookup(torch.tensor(5))
    assert s1.shape == (4, 5) and m1.sum() == 2


def test_save_load_roundtrip_and_restrict(tmp_path):
    d = _dictionary()
    d.save(tmp_path)
    assert json.loads((tmp_path / META_FILE).read_text())["format_version"] == 1
    back = SenseDictionary.load(tmp_path, device="cpu")
    assert back.k == 4 and back.hidden_size == 5 and len(back) == 3
    assert back.meta["dtype"] == "float32" and back.meta["teacher"] == "tiny"
    keys = torch.tensor([2, 5, 11, 7])
    for a, b in zip(d.lookup(keys), back.lookup(keys), strict=True):
        assert torch.equal(a, b)
    small = SenseDictionary.load(tmp_path, keys=torch.tensor([11, 7, 400]))
    assert small.key_ids.tolist() == [11]
    s, m = small.lookup(torch.tensor([5, 11]))
    assert not m[0].any() and torch.equal(s[1], d.centroids[2])


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
    d = _dictionary()
    d.meta["format_version"] = 0
    from safetensors.torch import save_file

    save_file(
        {"centroids": d.centroids, "counts": d.counts.int(), "key_ids": d.key_ids},
        str(tmp_path / SENSES_FILE),
        metadata={"dskd_senses_meta": json.dumps(d.meta)},
    )
    with pytest.raises(DSKDError, match="format version"):
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
    return SenseDictionary(torch.randn(n, 4, 5, generator=gen), torch.full((n,), 4), torch.arange(n), meta)


def test_a_third_of_the_rows_overwritten_by_nan_is_refused_at_load(tmp_path):
    _big_dictionary().save(tmp_path)

    def poison(t):
        t["centroids"][::3] = float("nan")

    _rewrite(tmp_path, poison)
    with pytest.raises(DSKDError, match=r"non-finite \(NaN/inf\) senses in 10 of the 30 keys loaded") as err:
        SenseDictionary.load(tmp_path)
    assert "key ids [0, 3, 6, 9, 12]..." in str(err.value) and "\n" not in str(err.value)
    clean = SenseDictionary.load(tmp_path, keys=torch.tensor([1, 2, 4]))  # the rows a run uses are clean
    assert clean.key_ids.tolist() == [1, 2, 4]


def test_an_infinite_padding_row_is_refused_too(tmp_path):
    _dictionary().save(tmp_path)

    def poison(t):
        t["centroids"][2, 3, 0] = float("inf")  # beyond key 11's count of 1: masked, yet a sign of damage

    _rewrite(tmp_path, poison)
    with pytest.raises(DSKDError, match=r"in 1 of the 3 keys loaded \(key ids \[11\]\)"):
        SenseDictionary.load(tmp_path)


def test_full_verification_checks_every_tensor_sha256(tmp_path, monkeypatch):
    import hashlib

    d = _dictionary()
    d.save(tmp_path)
    recorded = SenseDictionary.read_meta(tmp_path)["tensor_sha256"]
    assert recorded["key_ids"] == hashlib.sha256(torch.tensor([2, 5, 11]).numpy().tobytes()).hexdigest()

    def flip(t):
        t["centroids"][0, 0, 0] += 1.0  # finite, same size: only the sha256 tells

    _rewrite(tmp_path, flip)
    SenseDictionary.load(tmp_path)  # the default fast check does not hash
    monkeypatch.setenv("DSKD_VERIFY", "full")
    with pytest.raises(DSKDError, match="tensor 'centroids' does not match its sha256"):
        SenseDictionary.load(tmp_path)


def test_damaged_header_metadata_is_one_line(tmp_path):
    from safetensors.torch import save_file

    d = _dictionary()
    tensors = {"centroids": d.centroids, "counts": d.counts.int(), "key_ids": d.key_ids}
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
        SenseDictionary(d.centroids, d.counts, d.key_ids, dict(META, table_size=11))
