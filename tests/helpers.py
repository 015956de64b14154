"""Shared builders for tests: tiny models with a tokenizer made in the test."""
from __future__ import annotations

import torch

from engine.tiny import build_model, build_tokenizer

LABEL_WORDS = [["terrible", "bad", "awful"], ["great", "good", "amazing"]]


def tiny_pair(family: str, layers: int = 4, seed: int = 0):
    tokenizer = build_tokenizer()
    return build_model(family, len(tokenizer), layers=layers, seed=seed), tokenizer


def batch(tokenizer, texts, side="right"):
    enc = tokenizer(texts, padding=True, return_tensors="pt", padding_side=side, add_special_tokens=False)
    return enc.input_ids, enc.attention_mask


TEXTS = ["the movie was great and we talked about it It was", "bad It was", "this film felt dull It was"]


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def sentencepiece_style_tokenizer(vocab_size: int = 600):
    """A Llama-2-style tokenizer: "▁" prepended to the text and spaces turned into "▁" by the
    normalizer, no pre-tokenizer — so " great" tokenizes to ["▁", "▁great"] (a shared "▁" first)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from engine.data.smoke import vocabulary_text
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")  # training only
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tok.train_from_iterator(vocabulary_text(), trainer=trainer)
    tok.pre_tokenizer = None
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="</s>", add_bos_token=True)


def run_with_sets(out, sets, preset: str = "smoke"):
    """`post run --preset PRESET --out OUT --set S ...` through the CLI; the typer Result."""
    from typer.testing import CliRunner

    from post_tui.cli import app
    args = ["run", "--preset", preset, "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    return CliRunner().invoke(app, args)


# A smoke run cut to seconds: the tests that compare two runs of it (split model, GPU vs CPU).
FAST = ["tune.steps=12", "transfer.steps=10", "distill.steps=20", "eval.full_pt=false"]


def saved_tiny(family: str, folder, seed: int = 0):
    """A tiny model and its tokenizer saved as a Hugging Face folder (what a real model ref points at);
    the in-memory model in eval mode and the folder's path."""
    from engine.tiny import tiny
    model, tokenizer = tiny(f"tiny:{family}", seed=seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model.eval(), str(folder)
