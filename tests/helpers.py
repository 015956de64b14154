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
