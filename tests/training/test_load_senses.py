"""load_senses: compatibility check and `senses.restrict_to_lexicon` (keys from a lexicon artifact)."""

from __future__ import annotations

import torch

from dskd.lexicon import Lexicon
from dskd.models.loading import load_causal_lm
from dskd.senses import SenseDictionary
from dskd.training.run import load_senses

from .tinyrun import VOCAB, make_tokenizer, tiny_config, write_lexicon


def test_sense_keys_of_a_hand_built_lexicon(tmp_path):
    write_lexicon(tmp_path / "lex", VOCAB)
    keys = Lexicon.load(tmp_path / "lex").sense_keys()
    assert keys.tolist() == [4, 8, 10, 12, 20, 22, VOCAB, VOCAB + 1]


def test_restrict_to_lexicon_keeps_only_the_lexicons_keys(run_tmp, teacher_dir):
    write_lexicon(run_tmp / "lex", VOCAB)
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
