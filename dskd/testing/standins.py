"""Offline stand-ins for a rehearsal (`dskd reproduce --rehearse`): hub data sets, a tokenizer, a teacher.

* **Data**: small synthetic records in the field layout of each hub data set a preset reads (ARC,
  CommonsenseQA, PIQA, MMLU, SQuAD v2, any text data set such as Wikipedia), for every split the
  training data, the sense corpus and the ``paper/<task>`` evaluation read, written as a
  ``DSKD_HUB_MIRROR`` folder (:func:`dskd.corpora.sources.mirror_file`). Sentences are drawn from
  common, polysemous English words, so a WordNet lexicon finds its head words in them.
* **Tokenizer**: a byte-level BPE trained on those records, with a chat template in the Llama-3
  layout (header tokens, ``<|eot_id|>`` as end of turn and EOS).
* **Teacher**: a random model of the teacher's architecture family (Llama, Mistral) of a tiny width,
  with more layers than the preset's truncated student keeps (so the student is built as written).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, PreTrainedTokenizerFast

from dskd.core.io import write_text_atomic
from dskd.core.outputs import artifact_dir
from dskd.corpora.sources import HUB_QA
from dskd.evaluation.online import MC_SOURCES

NOUNS = (
    "bank plant bat spring cell crane light key bark seal match bass pitch ring date fan nail rock "
    "watch train bow letter organ record scale suit table wave bridge court field glass iron palm "
    "river water tree stone paper school window garden music book house road market"
).split()
ADJECTIVES = (
    "bright dark hot cold big small fast slow old new strong weak rich poor happy sad clean dirty".split()
)
VERBS = "hold move open close find keep break build turn follow raise pull".split()
SUBJECTS = ("astronomy", "biology", "world history", "economics")


def _adjective(rng: random.Random) -> str:
    return ("very " if rng.random() < 0.25 else "") + rng.choice(ADJECTIVES)


def _sentence(rng: random.Random) -> str:
    a, b = rng.sample(NOUNS, 2)
    return f"The {_adjective(rng)} {a} {rng.choice(VERBS)}s the {_adjective(rng)} {b}."


def _question(rng: random.Random) -> str:
    return f"What {rng.choice(VERBS)}s the {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}?"


def _lettered(rng: random.Random, i: int, n: int, digits: bool = False) -> dict[str, Any]:
    labels = [str(k + 1) for k in range(n)] if digits else [chr(65 + k) for k in range(n)]
    gold = rng.randrange(n)
    choices = {"text": rng.sample(NOUNS, n), "label": labels}
    return {"id": f"q{i}", "question": _question(rng), "choices": choices, "answerKey": labels[gold]}


def arc(rng: random.Random, i: int) -> dict[str, Any]:
    """allenai/ai2_arc: 4 options, labels letters (a few digit labels, as in ARC)."""
    return _lettered(rng, i, 4, digits=i % 7 == 3)


def commonsense_qa(rng: random.Random, i: int) -> dict[str, Any]:
    """tau/commonsense_qa: 5 lettered options and a question concept."""
    return {**_lettered(rng, i, 5), "question_concept": rng.choice(NOUNS)}


def piqa(rng: random.Random, i: int) -> dict[str, Any]:
    """ybisk/piqa: a goal, two solutions, label 0/1."""
    goal = f"To {rng.choice(VERBS)} a {rng.choice(NOUNS)},"
    return {"goal": goal, "sol1": _sentence(rng), "sol2": _sentence(rng), "label": rng.randrange(2)}


def mmlu(rng: random.Random, i: int) -> dict[str, Any]:
    """cais/mmlu: question, subject, 4 choices, answer index."""
    choices = rng.sample(NOUNS, 4)
    return {
        "question": _question(rng),
        "subject": SUBJECTS[i % len(SUBJECTS)],
        "choices": choices,
        "answer": rng.randrange(4),
    }


def squad_v2(rng: random.Random, i: int) -> dict[str, Any]:
    """rajpurkar/squad_v2: a context of a few sentences; every third question unanswerable."""
    sentences = [_sentence(rng) for _ in range(3)]
    context = " ".join(sentences)
    words = sentences[1].rstrip(".").split()
    answer = " ".join(words[-2:])
    answers = {"text": [], "answer_start": []}
    if i % 3:
        answers = {"text": [answer], "answer_start": [context.index(answer, len(sentences[0]))]}
    question = f"What does the {words[2]} {words[3].removesuffix('s')}?"
    return {"id": f"s{i}", "title": words[2], "context": context, "question": question, "answers": answers}


def text(rng: random.Random, i: int) -> dict[str, Any]:
    """A text data set (wikimedia/wikipedia): title and a paragraph of a few sentences."""
    return {"id": str(i), "title": rng.choice(NOUNS), "text": " ".join(_sentence(rng) for _ in range(6))}


MAKERS: dict[str, Callable[[random.Random, int], dict[str, Any]]] = {
    "allenai/ai2_arc": arc,
    "tau/commonsense_qa": commonsense_qa,
    "ybisk/piqa": piqa,
    "cais/mmlu": mmlu,
    "rajpurkar/squad_v2": squad_v2,
}
"""Record makers by hub data set id; any other id gets :func:`text` records."""


def hub_datasets(configs: list[Any]) -> set[tuple[str, str | None, str]]:
    """(dataset id, subset, split) of every hub read of ``configs``: training and validation data,
    the sense corpus and the ``paper/<task>`` evaluation (shot and evaluation splits)."""
    reads = set()
    for cfg in configs:
        for src in [*cfg.data.train, *cfg.data.val, *cfg.senses.sources]:
            if src.kind in HUB_QA:
                dataset, subset, split = HUB_QA[src.kind]
                reads.add((src.path or dataset, src.subset or subset, src.split or split))
            elif src.kind == "hf":
                reads.add((src.path, src.subset, src.split or "train"))
        for task in cfg.eval.tasks:
            family, _, name = task.partition("/")
            if family == "paper" and name in MC_SOURCES:
                path, subset, shots, split, _ = MC_SOURCES[name]
                reads |= {(path, subset, shots), (path, subset, split)}
            elif family == "paper" and name == "squad_v2":
                reads |= {("rajpurkar/squad_v2", None, s) for s in ("train", "validation")}
    return reads


def write_hub_mirror(root: Path, reads: set[tuple[str, str | None, str]], train: int, held_out: int) -> Path:
    """Stand-in JSONL files for ``reads`` under ``root`` (the ``DSKD_HUB_MIRROR`` layout): ``train``
    records for a train split, ``held_out`` for any other split, seeded by the file name."""
    for dataset, subset, split in sorted(reads, key=str):
        name = f"{dataset}/{subset or 'default'}/{split}.jsonl"
        rng = random.Random(name)
        make = MAKERS.get(dataset, text)
        n = train if split in ("train", "auxiliary_train") else held_out
        lines = (json.dumps(make(rng, i)) for i in range(n))
        write_text_atomic(root / name, "\n".join(lines) + "\n")
    return root


def _corpus(mirror: Path) -> Iterator[str]:
    """The tokenizer's training texts: the stand-in files and paragraphs of the same words (so that a
    preset without hub data still gets whole words as tokens)."""
    for path in sorted(mirror.rglob("*.jsonl")):
        yield path.read_text(encoding="utf-8")
    rng = random.Random(0)
    yield from (text(rng, i)["text"] for i in range(200))


CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]


def standin_tokenizer(corpus: Path, vocab_size: int = 2048):
    """A byte-level BPE trained on the stand-in files under ``corpus`` (and more of the same words), with a
    Llama-3-style chat template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(corpus), trainer=trainer)
    out = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|end_of_text|>",
    )
    out.chat_template = CHAT_TEMPLATE
    return out


def family_config(teacher_id: str, vocab: int, hidden: int = 64, layers: int = 32):
    """A tiny config of the teacher's architecture family: Mistral for a Mistral id, else Llama."""
    shape = {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": False,
    }
    if "mistral" in teacher_id.lower():
        return MistralConfig(**shape, sliding_window=4096)
    return LlamaConfig(**shape)


def write_standin_teacher(
    out_dir: Path, teacher_id: str, tokenizer, hidden: int = 64, layers: int = 32
) -> Path:
    """Save a random model of ``teacher_id``'s family with ``tokenizer`` as a Hugging Face folder."""
    config = family_config(teacher_id, len(tokenizer), hidden, layers)
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(0)
    with artifact_dir(out_dir, "standin-teacher") as tmp:
        AutoModelForCausalLM.from_config(config).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out_dir


SYNONYMS = (
    ("rock", "stone"),
    ("road", "bridge"),
    ("book", "letter"),
    ("house", "school"),
    ("river", "water"),
    ("field", "garden"),
    ("market", "bank"),
    ("tree", "plant"),
    ("watch", "ring"),
    ("table", "record"),
)
"""Synonym pairs of the stand-in words (a made-up lexicon: only its shape matters)."""


def write_standin_lexicon(path: Path) -> Path:
    """A ``tsv`` lexicon source over the stand-in words, for a run without the WordNet asset: the
    adjective pairs of :data:`ADJECTIVES` as antonyms and :data:`SYNONYMS` as synonyms, each also
    with a two-word neighbour (``very dark``, ``the stone``: the paper presets take multi-token
    neighbours only, ``lexicon.single_token_neighbours: false``)."""
    pairs = []
    for a, b in zip(ADJECTIVES[::2], ADJECTIVES[1::2]):
        pairs += [
            (a, b, "antonym"),
            (b, a, "antonym"),
            (a, f"very {b}", "antonym"),
            (b, f"very {a}", "antonym"),
        ]
    for a, b in SYNONYMS:
        pairs += [
            (a, b, "synonym"),
            (b, a, "synonym"),
            (a, f"the {b}", "synonym"),
            (b, f"the {a}", "synonym"),
        ]
    write_text_atomic(path, "".join(f"{a}\t{b}\t{rel}\n" for a, b, rel in pairs))
    return path
