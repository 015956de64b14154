"""Reading rows from a data source: the generated smoke set, an offline asset, local files, or the hub."""
from __future__ import annotations

import json
import random
from pathlib import Path

from engine.errors import PostError

FILE_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet", ".tsv")


class Row(dict):
    """One record, and where it came from ("data.csv row 12"), so an error can name it."""
    origin: str = ""


def _rows(records, where: str) -> list[Row]:
    """Records as Rows named "<where> row <1-based number>"."""
    out = []
    for number, record in enumerate(records, 1):
        row = Row(record)
        row.origin = f"{where} row {number}"
        out.append(row)
    return out


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


def from_hub(source: str) -> bool:
    """Whether read_split reads `source` from the Hugging Face hub: not smoke, a local path or an offline asset.
    A hub set's name does not fix its content (a new revision), so what depends on one is keyed by its rows."""
    from engine.data.generated import GENERATED  # written by the large model, never read from a source
    if source in ("smoke", GENERATED) or Path(source).expanduser().exists():
        return False
    if source.startswith((".", "/", "~")) or source.endswith(FILE_SUFFIXES):
        return False
    try:
        from engine.assets import CATALOGUE
    except ImportError:
        return True
    return source not in CATALOGUE


def _smoke(split: str, seed: int) -> list[dict]:
    from engine.data.smoke import smoke_corpus, smoke_splits
    if split == "corpus":
        return _rows([{"text": t} for t in smoke_corpus(seed)], "smoke corpus")
    splits = smoke_splits(seed)
    if split not in splits:
        raise PostError(f"smoke data has splits train, validation, test and corpus, not {split!r}")
    return _rows(splits[split], f"smoke split {split}")


def _read_file(path: Path) -> list[Row]:
    import pandas as pd
    # Only an empty cell is missing: a text "NA" or "null" stays text.
    readers = {".csv": lambda p: pd.read_csv(p, keep_default_na=False, na_values=[""]),
               ".tsv": lambda p: pd.read_csv(p, sep="\t", keep_default_na=False, na_values=[""]),
               ".parquet": pd.read_parquet, ".jsonl": _read_jsonl, ".json": pd.read_json}
    if path.suffix not in readers:
        raise PostError(f"cannot read {path}: use a .csv, .tsv, .jsonl, .json or .parquet file")
    if path.stat().st_size == 0:
        raise PostError(f"data file {path} is empty: it needs a header line and one row per example")
    try:
        data = readers[path.suffix](path)
    except PostError:
        raise
    except UnicodeDecodeError:
        raise PostError(f"data file {path} is not UTF-8 text ({_first_bad_line(path)}): save it as UTF-8") from None
    except Exception as err:  # pandas raises many types for malformed files
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise PostError(f"cannot read {path}: {first}") from None
    if path.suffix in (".csv", ".tsv") and not isinstance(data.index, pd.RangeIndex):
        # pandas makes the first field of each row the index when rows have one field more than the header
        raise PostError(f"{path}: rows have more fields than the header ({', '.join(map(str, data.columns))}): "
                        "quote texts that hold the separator (\"a, b\"), or name every column in the header")
    if isinstance(data, list):
        rows = data
    else:
        rows = _rows(data.to_dict("records"), str(path))
    if not rows:
        raise PostError(f"data file {path} has no rows (only a header?): it needs one row per example")
    return rows


def _first_bad_line(path: Path) -> str:
    """Where the first byte that is not UTF-8 is (the decoder's own offset counts from a chunk, not the file)."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                return f"line {number}, byte {err.start + 1} of the line"
    return "a character split across lines"


def _read_jsonl(path: Path) -> list[Row]:
    """One JSON object per line; a torn or malformed line is named by its number."""
    rows = []
    with path.open(encoding="utf-8-sig") as handle:  # a BOM (Windows editors) is not part of line 1
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as err:
                raise PostError(f"{path} line {number} is not valid JSON ({err.msg}, column {err.colno}): "
                                f"fix or remove that line") from None
            if not isinstance(value, dict):
                raise PostError(f"{path} line {number} is not a JSON object: each line must be like "
                                f'{{"text": "...", "label": 0}}')
            row = Row(value)
            row.origin = f"{path} line {number}"
            rows.append(row)
    return rows


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
    return _rows(data.to_list(), f"{name} split {split}")


def _dataset_cached(name: str) -> bool:
    from huggingface_hub import scan_cache_dir
    try:
        return any(repo.repo_id == name and repo.repo_type == "dataset" for repo in scan_cache_dir().repos)
    except Exception:  # no cache folder yet
        return False
