"""Classification as cloze: class score = mean next-token logit of the class's label words."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.errors import PostError


_ANCHOR = "a"  # any short word: the label word is tokenized as it appears after text ("… It was great")


def first_token(tokenizer, word: str) -> int | None:
    """The first token of `word` as it appears after a space inside a text.

    Tokenizing " word" alone is not enough: SentencePiece tokenizers that prepend a word-boundary
    marker (Llama-2 style) give " great" → ["▁", "▁great"], whose shared first token "▁" would score
    every label word alike. So the word is tokenized after an anchor, the anchor's tokens are
    removed, and tokens that are only whitespace / boundary markers are skipped.
    """
    base = tokenizer(_ANCHOR, add_special_tokens=False).input_ids
    ids = tokenizer(f"{_ANCHOR} {word.strip()}", add_special_tokens=False).input_ids
    k = 0
    while k < min(len(base), len(ids)) and base[k] == ids[k]:
        k += 1
    for tid in ids[k:]:
        if tokenizer.decode([tid]).replace("\u2581", " ").strip():
            return tid
    return None


@dataclass
class Verbalizer:
    words: list[list[str]]
    token_ids: list[list[int]]  # per class, first sub-token of each label word (deduplicated)

    @classmethod
    def build(cls, tokenizer, label_words: list[list[str]]) -> "Verbalizer":
        if len(label_words) < 2:
            raise PostError("task.label_words needs at least two classes, e.g. [[\"bad\"], [\"good\"]]")
        token_ids, owner = [], {}
        for c, words in enumerate(label_words):
            ids = []
            for word in words:
                tid = first_token(tokenizer, word)
                if tid is None or not word.strip():
                    raise PostError(f"label word {word!r} (class {c}) tokenizes to nothing: use a real word")
                if tid in owner and owner[tid] != c:
                    raise PostError(f"label words collide: {word!r} (class {c}) and a word of class {owner[tid]} "
                                    f"share the first token {tokenizer.decode([tid])!r}; choose distinct words")
                owner[tid] = c
                if tid not in ids:
                    ids.append(tid)
            if not ids:
                raise PostError(f"class {c} has no label words: give at least one in task.label_words")
            token_ids.append(ids)
        return cls(words=[list(w) for w in label_words], token_ids=token_ids)

    @property
    def num_classes(self) -> int:
        return len(self.token_ids)

    def _mixing(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(label-token ids, class-averaging weights), built once per device: class_scores is on every step."""
        cache = self.__dict__.setdefault("_mixing_cache", {})
        if str(device) not in cache:
            cache[str(device)] = self._build_mixing(device)
        return cache[str(device)]

    @property
    def flat_token_ids(self) -> list[int]:
        """Every class's label tokens, class after class (the columns class_scores reads)."""
        return [t for ids in self.token_ids for t in ids]

    @torch.inference_mode(False)  # built under eval's inference_mode, they must still serve training steps
    def _build_mixing(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        flat = self.flat_token_ids
        weights = torch.zeros(self.num_classes, len(flat))
        k = 0
        for c, ids in enumerate(self.token_ids):
            weights[c, k:k + len(ids)] = 1.0 / len(ids)
            k += len(ids)
        return torch.tensor(flat, device=device), weights.to(device)

    def class_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, V) next-token logits → (B, C) class scores."""
        flat, weights = self._mixing(logits.device)
        return logits[:, flat].float() @ weights.T
