"""Batch index streams for training (DP's Poisson sampling lives in engine.privacy)."""
from __future__ import annotations

import random
from typing import Iterator

from engine.data.tasks import Examples, length_grouped


def shuffled_batches(examples: Examples, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Endless epochs: shuffle, group by length, shuffle the batches."""
    rng = random.Random(seed)
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        batches = length_grouped(order, examples, batch_size)
        rng.shuffle(batches)
        yield from batches


def steps_for(n_examples: int, batch_size: int, steps: int, epochs: float) -> int:
    """Explicit steps win; otherwise epochs × batches per epoch."""
    if steps:
        return steps
    return max(1, round(epochs * n_examples / batch_size))
