"""The owner's side reads public data only: a public set or distillation corpus that holds the private texts.

POST's promise is that nothing but the noised prompt leaves the user's side. The transfer trains on the
public set and the distillation on its corpus, without noise and outside the privacy accountant, so the
same texts given there (the private file named twice, a copy of it, its test split) would train the
large model's prompt on private data while the run still reports the tune's ε. The check compares
text values, not file names, and runs where the private data is open anyway (the stages that tune on
it), so a stage of the owner's never has to open it.

A few short texts may be shared by chance between unrelated sets ("great movie!", a one-word tweet), so
texts shorter than MIN_WORDS words do not count, and a handful of longer shared texts are reported, not
refused. Refused: more than PRIVATE_SHARE of the texts (that is the private data, however small the set),
or FEW texts or more when they are over SHARED_LIMIT of them (too many to be chance).
"""
from __future__ import annotations

import hashlib

from engine.errors import PostError

MIN_WORDS = 5         # a text this short can be anyone's
PRIVATE_SHARE = 0.10  # of the texts (long enough to count) found in the private data: refused above it
FEW, SHARED_LIMIT = 3, 0.01  # and refused from FEW such texts up when they are over SHARED_LIMIT of them


def _fingerprint(text: str) -> str:
    return hashlib.sha256(" ".join(text.split()).casefold().encode("utf-8")).hexdigest()[:16]


def _countable(texts) -> set[str]:
    return {_fingerprint(t) for t in texts if isinstance(t, str) and len(t.split()) >= MIN_WORDS}


def private_texts(task_cfg, seed: int) -> set[str]:
    """Fingerprints of every text of the private task's splits (train, validation, test): each string cell,
    not only the task's text fields (a title column the task does not read is private too)."""
    from engine.data.sources import read_split
    splits = [task_cfg.train_split, task_cfg.test_split, task_cfg.validation_split]
    found: set[str] = set()
    for split in dict.fromkeys(s for s in splits if s):
        rows = read_split(task_cfg.source, split, task_cfg.subset, seed)
        found |= _countable(value for row in rows for value in row.values())
    return found


def shared(texts: list[str], private: set[str]) -> tuple[int, int]:
    """(texts of `texts` also in the private data, texts long enough to count)."""
    mine = [_fingerprint(t) for t in texts if isinstance(t, str) and len(t.split()) >= MIN_WORDS]
    return sum(f in private for f in mine), len(mine)


def check(what: str, key: str, texts: list[str], private: set[str], log) -> None:
    """Refuse `texts` (the public set, the distillation corpus) when they are the private data; say so
    when a few are shared."""
    hits, counted = shared(texts, private)
    if not hits:
        return
    if hits > PRIVATE_SHARE * counted or (hits >= FEW and hits > SHARED_LIMIT * counted):
        raise PostError(f"{hits} of the {counted} texts of {what} ({key}) are texts of the private task data: the "
                        f"owner's side would train on private data, outside the privacy accounting — give "
                        f"{key} public data that is not the task's (any split of it)")
    log(f"{hits} of the {counted} texts of {what} ({key}) are also in the private task data (few: taken as "
        "chance); the owner's side trains on them without noise", "warning")
