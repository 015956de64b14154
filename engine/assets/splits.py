"""Fixed, seeded, stratified train/validation/test splits.

The raw corpora ship as one flat list, so we cut our own splits once, at fetch time, and
store them: every run (and every teammate) then sees exactly the same test set.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}
SEED = 0


def clean_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Strip text, drop empty texts and exact duplicate texts (first occurrence wins).

    Duplicates are dropped so the same sentence cannot sit in both train and test.
    """
    frame = frame.assign(text=frame["text"].astype(str).str.strip())
    frame = frame[frame["text"] != ""]
    frame = frame.drop_duplicates(subset="text", keep="first")
    return frame.reset_index(drop=True)


def stratified_split(frame: pd.DataFrame, seed: int = SEED) -> dict[str, pd.DataFrame]:
    """Split `frame` (columns text, label) 80/10/10 within every label, reproducibly.

    Each label is shuffled with its own generator derived from (seed, label), so adding or
    removing rows of one class never reshuffles another. Validation and test get
    round(10% of the class) rows each and train the rest, so every class keeps its share.
    """
    parts: dict[str, list[pd.DataFrame]] = {split: [] for split in FRACTIONS}
    for label in sorted(frame["label"].unique()):
        rows = frame[frame["label"] == label]
        order = np.random.default_rng([seed, int(label)]).permutation(len(rows))
        n_val = _share(len(rows), FRACTIONS["validation"])
        n_test = _share(len(rows), FRACTIONS["test"])
        cuts = {
            "validation": order[:n_val],
            "test": order[n_val : n_val + n_test],
            "train": order[n_val + n_test :],
        }
        for split, positions in cuts.items():
            parts[split].append(rows.iloc[np.sort(positions)])
    return {split: _shuffle(pd.concat(chunks), seed) for split, chunks in parts.items()}


def _share(n: int, fraction: float) -> int:
    # Round half up (not Python's banker's rounding) so the result does not depend on parity.
    return math.floor(n * fraction + 0.5)


def _shuffle(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Interleave the classes so that a split read in order is not sorted by label."""
    order = np.random.default_rng([seed, 1_000_003]).permutation(len(frame))
    shuffled = frame.iloc[order].reset_index(drop=True)
    return pd.DataFrame(
        {"text": shuffled["text"].astype(str), "label": shuffled["label"].astype("int64")}
    )
