"""Which shadow trains on which example of the audit pool.

Each example is in exactly half of the shadows (a balanced design, seeded): with K shadows every
example has K/2 "in" and K/2 "out" models, so when one shadow plays the target, each example keeps
at least K/2 − 1 ≥ 2 of each group (K ≥ 6: a variance needs two) and LiRA's means are defined for every example.
"""
from __future__ import annotations

import torch

from engine.errors import PostError


def membership(n_examples: int, n_shadows: int, seed: int) -> torch.Tensor:
    """(K, N) bool: member[k, i] is True when shadow k trains on example i."""
    if n_shadows < 6 or n_shadows % 2:
        raise PostError(f"audit.shadows={n_shadows}: give an even number ≥ 6 (each example is in half of them, each "
                        "shadow in turn is the target of the others, and each group needs two to have a variance)")
    if n_examples < 2:
        raise PostError(f"the audit pool has {n_examples} example(s): it needs at least 2")
    gen = torch.Generator().manual_seed(int(seed))
    # per example, a random half of the shadows: the first K/2 of a random permutation
    order = torch.argsort(torch.rand(n_examples, n_shadows, generator=gen), dim=1)
    member = order < n_shadows // 2
    return member.T.contiguous()


def pool_indices(n_train: int, pool: int, seed: int) -> list[int]:
    """The audit pool: `pool` training examples drawn without replacement (all when pool is 0 or ≥ N), sorted."""
    if pool <= 0 or pool >= n_train:
        return list(range(n_train))
    gen = torch.Generator().manual_seed(int(seed) + 1)
    return sorted(torch.randperm(n_train, generator=gen)[:pool].tolist())
