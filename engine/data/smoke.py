"""The generated `smoke` data set: short two-class sentences with a lexical signal.

Deterministic in the seed, so tests and the `smoke` preset see the same data everywhere.
"""
from __future__ import annotations

import random

POSITIVE = ["great", "good", "wonderful", "brilliant", "amazing", "lovely", "superb", "fine"]
NEGATIVE = ["terrible", "bad", "awful", "poor", "boring", "dull", "horrible", "weak"]
SUBJECTS = ["the movie", "this film", "the plot", "the acting", "the story", "the music", "the ending", "the cast"]
VERBS = ["was", "felt", "seemed", "looked", "is", "became"]
FILLERS = ["really", "quite", "so", "very", "rather", "truly", "", ""]
EXTRA = ["and i left early", "and we talked about it", "from start to end", "for two hours",
         "in every scene", "on a rainy day", "with friends", "at the cinema"]


def sentence(rng: random.Random, label: int) -> str:
    word = rng.choice(POSITIVE if label else NEGATIVE)
    parts = [rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(FILLERS), word]
    if rng.random() < 0.6:
        parts.append(rng.choice(EXTRA))
    return " ".join(p for p in parts if p)


def make_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"text": sentence(rng, i % 2), "label": i % 2} for i in range(n)]


def smoke_splits(seed: int = 0) -> dict[str, list[dict]]:
    """Train / validation / test of the private smoke task."""
    return {"train": make_rows(256, seed), "validation": make_rows(64, seed + 1), "test": make_rows(128, seed + 2)}


def smoke_corpus(seed: int = 0, n: int = 400) -> list[str]:
    """Unlabelled text in the same domain: knowledge distillation and the public set."""
    rng = random.Random(seed + 100)
    return [sentence(rng, rng.randint(0, 1)) for _ in range(n)]


def vocabulary_text() -> list[str]:
    """Everything a tiny tokenizer must cover well (data, label words, templates)."""
    words = POSITIVE + NEGATIVE + SUBJECTS + VERBS + FILLERS + EXTRA
    words += ["positive", "negative", "it was", "predict if sentiment of this text is positive or negative."]
    return [" ".join(words)] * 4 + smoke_corpus(0, 400)
