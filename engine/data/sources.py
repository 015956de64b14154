"""Reading rows from a data source: the generated smoke set, an offline asset, local files, or the hub."""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from engine.errors import PostError

FILE_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet", ".tsv")


class Row(dict):
    """One record, and where it came from ("data.csv row 12"), so an error can name it."""
    origin: str = ""


class Split(list):
    """A split's rows, and what the reader changed on the way that the user should hear about (notes)."""
    notes: tuple[str, ...] = ()


def _rows(records, where: str) -> list[Row]:
    """Records as Rows named "<where> row <1-based number>"; a binary cell (a parquet column of bytes) that
    is UTF-8 as its text, here where rows enter, so the loader, the privacy ledger and the boundary check
    all read one string (str() of bytes is "b'...'": the same data saved as CSV would look like other rows).
    Bytes that are not UTF-8 stay bytes: refused by the loader if a setting reads that column."""
    out = []
    for number, record in enumerate(records, 1):
        row = Row({key: _as_text(value) for key, value in record.items()})
        row.origin = f"{where} row {number}"
        out.append(row)
    return out


def _as_text(value):
    if not isinstance(value, (bytes, bytearray)):
        return value
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        return value


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
    readers = {".csv": _read_csv, ".tsv": _read_tsv,
               ".parquet": pd.read_parquet, ".jsonl": _read_jsonl, ".json": _read_json}
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
        raise PostError(f"{path}: rows have more fields than the header ({', '.join(map(repr, data.columns))}): "
                        "quote texts that hold the separator (\"a, b\"), or name every column in the header")
    if isinstance(data, list):
        rows = data
    else:
        rows = _rows(data.to_dict("records"), str(path))
    if path.suffix in (".csv", ".tsv"):
        _refuse_repeated_columns(path, "\t" if path.suffix == ".tsv" else ",")
        _refuse_repeated_header(rows, list(data.columns))
    if path.suffix == ".csv":
        _refuse_swallowed_rows(rows, len(data.columns) - 1)
    if not rows:
        raise PostError(f"data file {path} has no rows (only a header?): it needs one row per example")
    return rows


def _read_csv(path: Path):
    import pandas as pd
    _check_quotes(path)
    # Only an empty cell is missing: a text "NA" or "null" stays text.
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def _read_tsv(path: Path):
    """TSV has no one quoting convention. A file quoted the way pandas and Python's csv write it (a cell that
    holds a quote enclosed in quotes, its quotes doubled, no quoted cell over several lines) is read so;
    otherwise a double quote is part of the text (pandas would join the rows up to the next quote into one
    text) and a tab can never be inside a text."""
    import pandas as pd
    quoting = _tsv_quoting(path)
    if quoting == csv.QUOTE_NONE:
        _check_tabs(path)
    return pd.read_csv(path, sep="\t", quoting=quoting, keep_default_na=False, na_values=[""])


def _tsv_quoting(path: Path) -> int:
    """How to read a TSV as it was written: QUOTE_NONE (each line a record, quotes part of the text) unless
    only the quoted reading gives every record the header's fields — a cell quoted over several lines, as
    pandas and Python's csv write it — or every line parses strictly as one quoted-or-plain record."""
    import io
    with path.open(encoding="utf-8-sig", newline="") as handle:
        lines = [line for line in handle.read().splitlines() if line.strip()]
    if not any('"' in line for line in lines):
        return csv.QUOTE_NONE  # nothing quoted: both read alike
    try:
        records = list(csv.reader(io.StringIO("\n".join(lines)), delimiter="\t", strict=True))
    except csv.Error:  # a quote inside a text ("Titanic" is great): text, not quoting
        return csv.QUOTE_NONE
    if len(records) == len(lines):
        return csv.QUOTE_MINIMAL
    fields = lines[0].count("\t") + 1
    plain_fits = all(line.count("\t") + 1 == fields for line in lines)
    quoted_fits = all(len(record) == fields for record in records)
    return csv.QUOTE_MINIMAL if quoted_fits and not plain_fits else csv.QUOTE_NONE


def _check_tabs(path: Path) -> None:
    """A line with more tabs than the header: without quoting, a tab inside a text splits it."""
    with path.open(encoding="utf-8-sig") as handle:
        header_tabs = handle.readline().count("\t")
        for number, line in enumerate(handle, 2):
            if line.count("\t") > header_tabs:
                raise PostError(f"{path} line {number} has {line.count(chr(9)) + 1} tab-separated fields, the "
                                f"header {header_tabs + 1}: a TSV text cannot hold a tab (it has no quoting): "
                                "replace the tab with a space, or save the data as CSV or JSONL")


def _check_quotes(path: Path) -> None:
    """A quoted cell that goes on after its closing quote ("Titanic" is great): pandas drops both quotes,
    or joins the rows up to the next quote into one text. Python's strict reader names the record."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, strict=True)
        record, start = 0, 1  # record 0 is the header; blank lines are no rows (pandas skips them too)
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                if "expected after" not in str(err):  # not a quote (a huge cell, a NUL): pandas reads or names it
                    return
                raise PostError(f"{path} row {record} (from line {start}): a double quote opens a quoted text that "
                                "goes on after its closing quote: a stray double quote — double it (\"\") or remove "
                                "it, or quote the whole cell") from None
            record, start = record + bool(cells), reader.line_num + 1


def _refuse_swallowed_rows(rows: list[Row], header_commas: int) -> None:
    """A quote opened in one row and closed in a later one makes one cell of the rows between. A quoted
    cell may span lines, and prose holds commas, so a line looks like a swallowed row only when it has as
    many commas as the header AND ends in a value the last column holds in other rows (a label: "…,1")."""
    if not rows or header_commas < 1:
        return
    last = list(rows[0])[-1]
    endings = {str(row.get(last)).strip() for row in rows if row.get(last) is not None and "\n" not in str(row.get(last))}
    for row in rows:
        for column, value in row.items():
            if not isinstance(value, str) or "\n" not in value:
                continue
            if any(line.count(",") == header_commas and line.rsplit(",", 1)[1].strip() in endings
                   for line in value.split("\n")[1:]):
                raise PostError(f"{row.origin}: the {column!r} cell runs over several lines that look like rows "
                                "of their own: a stray double quote opens it — double it (\"\") or remove it")


def _refuse_repeated_columns(path: Path, sep: str) -> None:
    """A header that names one column twice: pandas renames the second ("text" → "text.1") and a setting
    that names it reads the first, silently (an id column read as the text)."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        header = next(csv.reader(handle, delimiter=sep), [])
    names = [name.strip() for name in header]
    twice = sorted({name for name in names if name and names.count(name) > 1})  # unnamed: pandas numbers them
    if twice:
        raise PostError(f"{path}: the header names column {', '.join(map(repr, twice))} more than once: give every "
                        "column its own name in the header line")


def _refuse_repeated_header(rows: list[Row], columns: list) -> None:
    """A row that is the header again (two files joined): its "label" would be read as a class name."""
    names = [str(column).strip() for column in columns]
    if len(names) < 2:  # one column: a text that reads "text" is only a text
        return
    for row in rows:
        if [str(value).strip() for value in row.values()] == names:
            raise PostError(f"{row.origin} repeats the header ({', '.join(names)}): remove that line "
                            "(were two files joined?)")


def _read_json(path: Path):
    import pandas as pd
    try:
        return pd.read_json(path)
    except ValueError:
        if _looks_like_json_lines(path):
            raise PostError(f"{path} looks like JSON Lines (one object per line): rename it to "
                            f"{path.with_suffix('.jsonl').name}") from None
        raise


def _looks_like_json_lines(path: Path) -> bool:
    """Its first two lines with anything on them are each a JSON object."""
    with path.open(encoding="utf-8-sig") as handle:
        lines = [line for line in handle if line.strip()][:2]
    try:
        return len(lines) == 2 and all(isinstance(json.loads(line), dict) for line in lines)
    except json.JSONDecodeError:
        return False


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


def _carve(rows: list[dict], split: str, seed: int, name: str) -> Split:
    """One file holds everything: a seeded 80/10/10 train/validation/test split, of its distinct rows (a row
    twice would otherwise often land in train and in test)."""
    rows, dropped = _distinct(rows)
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n = len(rows)
    bounds = {"train": (0, int(0.8 * n)), "validation": (int(0.8 * n), int(0.9 * n)), "test": (int(0.9 * n), n)}
    if split not in bounds:
        raise PostError(f"{name} is a single file: its splits are train, validation and test, not {split!r}")
    lo, hi = bounds[split]
    carved = Split(rows[i] for i in order[lo:hi])
    if dropped:
        carved.notes = (f"{name}: {dropped} duplicate row(s) (every cell the same as an earlier row) dropped "
                        "before splitting it into train, validation and test",)
    return carved


def _distinct(rows: list[dict]) -> tuple[list[dict], int]:
    """The rows without exact repeats, first kept, and how many were dropped. Every cell counts, not only
    the ones a config reads: the privacy ledger reads the same split without knowing the config's fields.
    A row with an empty cell is kept: it is an error for the loader to name, not a duplicate."""
    seen, kept = set(), []
    for row in rows:
        key = tuple(sorted((str(column), repr(value)) for column, value in row.items()))
        if key in seen and not any(_blank(value) for value in row.values()):
            continue
        seen.add(key)
        kept.append(row)
    return kept, len(rows) - len(kept)


def _blank(value) -> bool:
    """None, NaN (pandas' empty cell) or a text of blanks."""
    if isinstance(value, str):
        return not value.strip()
    return value is None or (isinstance(value, float) and value != value)


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
