"""Reading rows from a data source: the generated smoke set, an offline asset, local files, or the hub."""
from __future__ import annotations

import random
from pathlib import Path

from engine.errors import PostError

FILE_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet", ".tsv")


def read_split(source: str, split: str, subset: str = "", seed: int = 0) -> list[dict]:
    """All rows of one split of `source` as dicts."""
    if source == "smoke":
        return _smoke(split, seed)
    path = Path(source).expanduser()
    if path.is_file():
        return _carve(_read_file(path), split, seed, str(path))
    if path.is_dir():
        return _read_folder(path, split)
    asset = _asset_folder(source)
    if asset is not None:
        return _read_folder(asset, split)
    if source.startswith((".", "/", "~")) or source.endswith(FILE_SUFFIXES):
        raise PostError(f"data file {source} not found: give an existing CSV, JSONL or parquet file or folder")
    return _hub(source, subset, split)


def _smoke(split: str, seed: int) -> list[dict]:
    from engine.data.smoke import smoke_corpus, smoke_splits
    if split == "corpus":
        return [{"text": t} for t in smoke_corpus(seed)]
    splits = smoke_splits(seed)
    if split not in splits:
        raise PostError(f"smoke data has splits train, validation, test and corpus, not {split!r}")
    return splits[split]


def _read_file(path: Path) -> list[dict]:
    import pandas as pd
    readers = {".csv": pd.read_csv, ".tsv": lambda p: pd.read_csv(p, sep="\t"),
               ".parquet": pd.read_parquet, ".jsonl": lambda p: pd.read_json(p, lines=True),
               ".json": pd.read_json}
    if path.suffix not in readers:
        raise PostError(f"cannot read {path}: use a .csv, .tsv, .jsonl, .json or .parquet file")
    try:
        frame = readers[path.suffix](path)
    except Exception as err:  # pandas raises many types for malformed files
        raise PostError(f"cannot read {path}: {str(err).splitlines()[0]}") from None
    return frame.to_dict("records")


def _read_folder(folder: Path, split: str) -> list[dict]:
    for suffix in FILE_SUFFIXES:
        candidate = folder / f"{split}{suffix}"
        if candidate.is_file():
            return _read_file(candidate)
    raise PostError(f"{folder} has no {split} split: expected {split}.csv, {split}.jsonl or {split}.parquet there")


def _carve(rows: list[dict], split: str, seed: int, name: str) -> list[dict]:
    """One file holds everything: a seeded 80/10/10 train/validation/test split."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n = len(rows)
    bounds = {"train": (0, int(0.8 * n)), "validation": (int(0.8 * n), int(0.9 * n)), "test": (int(0.9 * n), n)}
    if split not in bounds:
        raise PostError(f"{name} is a single file: its splits are train, validation and test, not {split!r}")
    lo, hi = bounds[split]
    return [rows[i] for i in order[lo:hi]]


def _asset_folder(source: str) -> Path | None:
    try:
        from engine.assets import CATALOGUE, ensure
    except ImportError:
        return None
    if source not in CATALOGUE:
        return None
    if CATALOGUE[source].kind != "dataset":
        raise PostError(f"{source!r} is a model asset, not a data set")
    return Path(ensure(source))


def _hub(name: str, subset: str, split: str) -> list[dict]:
    from engine.hub import require_hub
    require_hub("data set", name, cached=_dataset_cached(name))
    import datasets
    try:
        data = datasets.load_dataset(name, subset or None, split=split)
    except Exception as err:  # datasets raises many types: report the first line
        raise PostError(f"cannot load data set {name!r} ({subset or 'default'}, split {split}): "
                        f"{str(err).splitlines()[0]}") from None
    return data.to_list()


def _dataset_cached(name: str) -> bool:
    from huggingface_hub import scan_cache_dir
    try:
        return any(repo.repo_id == name and repo.repo_type == "dataset" for repo in scan_cache_dir().repos)
    except Exception:  # no cache folder yet
        return False
