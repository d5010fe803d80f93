"""load_senses: compatibility check and `senses.restrict_to_lexicon` (keys from a lexicon artifact)."""

from __future__ import annotations

import json

import numpy as np
import torch
from safetensors.numpy import save_file

from dskd.lexicon import Lexicon
from dskd.models.loading import load_causal_lm
from dskd.senses import SenseDictionary
from dskd.training.run import load_senses

from .tinyrun import VOCAB, make_tokenizer, tiny_config


def _write_lexicon(directory, vocab: int) -> None:
    """A lexicon artifact by hand: 4 -> syn {8, VID vocab+0}, 10 -> ant {12}; synset lemmas {20, 22};
    two VIDs."""
    directory.mkdir(parents=True)

    def csr(rows: dict[int, list[int]], n: int) -> tuple[np.ndarray, np.ndarray]:
        lengths = [len(rows.get(i, [])) for i in range(n)]
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return indptr, np.array([j for i in range(n) for j in rows.get(i, [])], dtype=np.int64)

    arrays = {}
    for rel, rows in (("syn", {4: [8, vocab]}), ("ant", {10: [12]}), ("hyp", {})):
        indptr, indices = csr(rows, vocab)
        arrays |= {
            f"{rel}_indptr": indptr,
            f"{rel}_indices": indices,
            f"{rel}_sources": np.ones_like(indices),
        }
    arrays |= {"vid_indptr": np.array([0, 2, 4]), "vid_token_ids": np.array([30, 31, 40, 41])}
    for name, rows in (("lemma", {0: [20, 22]}), ("antonym", {})):
        arrays[f"synset_{name}_indptr"], arrays[f"synset_{name}_indices"] = csr(rows, 1)
    save_file({k: v.astype(np.int64) for k, v in arrays.items()}, str(directory / "lexicon.safetensors"))
    meta = {"format_version": 1, "tokenizer": {"name": "test", "vocab_size": vocab, "fingerprint": "x"}}
    (directory / "meta.json").write_text(json.dumps(meta))


def test_sense_keys_of_a_hand_built_lexicon(tmp_path):
    _write_lexicon(tmp_path / "lex", VOCAB)
    keys = Lexicon.load(tmp_path / "lex").sense_keys()
    assert keys.tolist() == [4, 8, 10, 12, 20, 22, VOCAB, VOCAB + 1]


def test_restrict_to_lexicon_keeps_only_the_lexicons_keys(run_tmp, teacher_dir):
    _write_lexicon(run_tmp / "lex", VOCAB)
    over = {"senses.restrict_to_lexicon": True, "lexicon.output_dir": str(run_tmp / "lex")}
    cfg = tiny_config(run_tmp, teacher_dir, "dskd", over)
    tokenizer, teacher = make_tokenizer(), load_causal_lm(str(teacher_dir))
    full = SenseDictionary.load(run_tmp / "senses")
    small = load_senses(cfg.senses, cfg.lexicon.output_dir, tokenizer, teacher)
    # the random dictionary holds the even keys below VOCAB + 4
    assert small.key_ids.tolist() == [4, 8, 10, 12, 20, 22, VOCAB]
    keys = torch.tensor([4, 8, 6, VOCAB, VOCAB + 2])
    (s_full, m_full), (s_small, m_small) = full.lookup(keys), small.lookup(keys)
    kept = torch.tensor([True, True, False, True, False])
    assert torch.equal(s_small[kept], s_full[kept]) and torch.equal(m_small[kept], m_full[kept])
    assert not m_small[~kept].any() and m_full[~kept].any()
    cfg.senses.restrict_to_lexicon = False
    assert len(load_senses(cfg.senses, cfg.lexicon.output_dir, tokenizer, teacher)) == len(full)
