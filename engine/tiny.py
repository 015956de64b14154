"""Tiny randomly initialised models with a tokenizer built on the spot.

`tiny:gpt2` and `tiny:llama` need no download: the `smoke` preset and the tests use them to run
the whole pipeline in seconds. Same seed, same weights and tokenizer.
"""
from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
                          PreTrainedTokenizerFast)

from engine.data.smoke import vocabulary_text

FAMILIES = ("gpt2", "llama")
LAYERS = 4  # blocks of a tiny:* model
EOS = "<|endoftext|>"


def build_tokenizer(texts: list[str] | None = None, vocab_size: int = 700) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts` (GPT-2 style: a word carries its leading space)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts or vocabulary_text(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, unk_token=EOS, pad_token=EOS)


def build_model(family: str, vocab_size: int, layers: int = 4, dim: int = 64, seed: int = 0,
                init_std: float = 0.02):
    torch.manual_seed(seed)
    if family == "gpt2":
        cfg = GPT2Config(vocab_size=vocab_size, n_positions=256, n_embd=dim, n_layer=layers, n_head=4, initializer_range=init_std,
                         bos_token_id=0, eos_token_id=0, pad_token_id=0)
        return GPT2LMHeadModel(cfg).eval()
    if family == "llama":
        cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=dim, intermediate_size=2 * dim,
                          num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=256, tie_word_embeddings=True, initializer_range=init_std,
                          bos_token_id=0, eos_token_id=0, pad_token_id=0)
        return LlamaForCausalLM(cfg).eval()
    raise ValueError(f"unknown tiny family {family!r}; use one of {FAMILIES}")


def tiny(ref: str, seed: int = 0):
    """`tiny:gpt2` / `tiny:llama` → (model, tokenizer).

    Weights are drawn 10× wider than GPT-2's usual init: a model initialised at 0.02 gives nearly
    input-independent outputs, leaving a prompt nothing to steer and the smoke run nothing to show.
    """
    family = ref.split(":", 1)[1]
    tokenizer = build_tokenizer()
    return build_model(family, len(tokenizer), layers=LAYERS, seed=seed, init_std=0.2), tokenizer
