"""A tiny Hugging Face encoder written to a folder (and a Hugging Face cache) for tests: no download."""

import json
import shutil
from pathlib import Path

import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

WORDS = [
    "the",
    "a",
    "film",
    "movie",
    "good",
    "bad",
    "great",
    "awful",
    "boring",
    "fun",
    "plot",
    "story",
    "is",
    "was",
    "not",
    "very",
    "and",
]


def write_tiny_encoder(folder, pooling=None, seed=0):
    """A 2-block BERT of width 16 with a word-piece tokenizer; ``pooling`` adds a sentence-transformers config."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *letters, *(f"##{c}" for c in letters)]
    (folder / "vocab.txt").write_text("\n".join(vocab))
    BertTokenizerFast(str(folder / "vocab.txt"), model_max_length=32).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    if pooling is not None:
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ]
        (folder / "modules.json").write_text(json.dumps(modules))
        (folder / "1_Pooling").mkdir(exist_ok=True)
        modes = {
            f"pooling_mode_{mode}": mode == pooling for mode in ("cls_token", "mean_tokens", "max_tokens")
        }
        (folder / "1_Pooling" / "config.json").write_text(
            json.dumps({"word_embedding_dimension": 16, **modes})
        )
        (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 24}))
    return folder


def write_hub_cache(cache, repo_id, folder):
    """``folder``'s files as the Hugging Face cache keeps a downloaded snapshot of ``repo_id``."""
    repo = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / "0123456789abcdef"
    shutil.copytree(folder, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123456789abcdef")
    return Path(cache)


REVIEWS = [
    "a great film",
    "the plot was boring",
    "very good and fun",
    "an awful movie",
    "",
    "the story is not bad",
    "great fun, a very good story and a great plot",
    "boring",
]
SENTIMENT = ["pos", "neg", "pos", "neg", "neg", "pos", "pos", "neg"]
