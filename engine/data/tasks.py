"""Tasks: rows → templated, tokenized examples, and batches of them.

The private task has labels and a verbalizer; the public set and the KD corpus have text only
(their labels are never read).
"""
from __future__ import annotations

import copy
import json
import numbers
import random
import re
import warnings
from dataclasses import dataclass

import torch

from engine.config import PublicConfig, TaskConfig
from engine.data.sources import read_split
from engine.errors import PostError


@dataclass
class Examples:
    """A tokenized split: one id list per example (no special tokens, no padding)."""
    input_ids: list[list[int]]
    labels: list[int] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    def subset(self, indices: list[int]) -> "Examples":
        labels = [self.labels[i] for i in indices] if self.labels is not None else None
        return Examples([self.input_ids[i] for i in indices], labels)

    def head(self, n: int) -> "Examples":
        return self if n <= 0 or n >= len(self) else self.subset(list(range(n)))


def collate(examples: Examples, indices: list[int], pad_id: int, device) -> dict[str, torch.Tensor]:
    """Right-padded batch (the prompted forward re-lays it out anyway)."""
    rows = [examples.input_ids[i] for i in indices]
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), max(width, 1)), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, row in enumerate(rows):
        ids[b, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[b, :len(row)] = 1
    batch = {"input_ids": ids.to(device), "attention_mask": mask.to(device), "index": torch.tensor(indices)}
    if examples.labels is not None:
        batch["labels"] = torch.tensor([examples.labels[i] for i in indices], dtype=torch.long, device=device)
    return batch


def length_grouped(indices: list[int], examples: Examples, batch_size: int) -> list[list[int]]:
    """Batches of similar length (little compute on padding); order of batches kept shuffled."""
    chunk = batch_size * 32
    batches = []
    for lo in range(0, len(indices), chunk):
        block = sorted(indices[lo:lo + chunk], key=lambda i: len(examples.input_ids[i]))
        batches += [block[k:k + batch_size] for k in range(0, len(block), batch_size)]
    return batches


def eval_batches(examples: Examples, batch_size: int) -> list[list[int]]:
    order = sorted(range(len(examples)), key=lambda i: len(examples.input_ids[i]))
    return [order[k:k + batch_size] for k in range(0, len(order), batch_size)]


# ---------------------------------------------------------------- templating

def fill(template: str, row: dict, fields: list[str]) -> tuple[str, str]:
    """(text part, whole templated string); `{text}` means the first field."""
    values = {f: _text(row, f) for f in fields}
    values.setdefault("text", values[fields[0]])
    try:
        return values[fields[0]], template.format(**values)
    except KeyError as err:
        raise PostError(f"template {template!r} names {{{err.args[0]}}}, which is not a text field "
                        f"({', '.join(fields)})") from None


def _origin(row: dict, fallback: str = "data") -> str:
    return getattr(row, "origin", "") or fallback


def _missing(value) -> bool:
    """None, NaN (pandas' empty cell) or pandas' NA."""
    if value is None:
        return True
    try:
        return bool(value != value)
    except (TypeError, ValueError):  # pandas.NA refuses bool()
        return True


def _text(row: dict, field: str, allow_empty: bool = False) -> str:
    if field not in row:
        raise PostError(f"{_origin(row)} has no text column {field!r}; columns are: {', '.join(map(repr, row))} "
                        f"(set task.text_fields)")
    value = _decoded(row, field)
    if _missing(value) or (isinstance(value, str) and not value.strip()):
        if allow_empty:
            return ""
        raise PostError(f"{_origin(row)}: the {field!r} cell is empty: fill it in or remove the row")
    if isinstance(value, (list, dict)):  # str() would make '["a", "b"]' the text, silently
        raise PostError(f"{_origin(row)}: the {field!r} cell is a JSON {'list' if isinstance(value, list) else 'object'}, "
                        f"not text: give one string per row")
    return str(value)


def _decoded(row: dict, field: str):
    """The cell, a binary one (a parquet column of bytes) as its UTF-8 text: str() would make it "b'...'"."""
    value = row[field]
    if not isinstance(value, (bytes, bytearray)):
        return value
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError as err:
        raise PostError(f"{_origin(row)}: the {field!r} cell is bytes that are not UTF-8 text (byte {err.start + 1}): "
                        "store that column as UTF-8 strings") from None


def encode(tokenizer, template: str, row: dict, fields: list[str], max_length: int,
           section: str = "task") -> list[int]:
    """Tokenize the templated row; an over-long text is cut so the template's cloze survives. `section` is
    the config section the template and max_length come from (task or public), for the error."""
    return _encode(tokenizer, template, row, fields, max_length, section)[0]


def _encode(tokenizer, template: str, row: dict, fields: list[str], max_length: int,
            section: str) -> tuple[list[int], int | None]:
    """(ids, tokens of text kept when it was cut, else None)."""
    text, whole = fill(template, row, fields)
    ids = tokenizer(whole, add_special_tokens=False).input_ids
    if len(ids) <= max_length:
        return ids, None
    text_ids = tokenizer(text, add_special_tokens=False).input_ids
    rest = len(ids) - len(text_ids)  # the template and any other text fields
    keep = max_length - rest
    if keep <= 0:  # an empty text would be blamed on the data
        what = f"{section}.template" + (" with the other text fields" if len(fields) > 1 else "")
        raise PostError(f"{what} takes {rest} tokens ({_origin(row)}), so {section}.max_length = {max_length} "
                        f"leaves no room for the text: raise {section}.max_length or shorten {section}.template")
    shorter = copy.copy(row)  # a Row keeps its origin, so a later error still names the row
    shorter[fields[0]] = tokenizer.decode(text_ids[:keep])
    ids = tokenizer(fill(template, shorter, fields)[1], add_special_tokens=False).input_ids
    return ids[-max_length:], keep  # re-tokenizing may shift a token or two: keep the end (the cloze)


# ---------------------------------------------------------------- the private task

_NUMBER = re.compile(r"[+-]?\d+(\.\d*)?")


def _label_key(value) -> str:
    """A label as text: 1, 1.0, "1" and "1.0" are all "1"; true is "true"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return _label_key(float(value))
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def _label_index(value, row: dict, num_classes: int) -> int | None:
    """A class index from a number or a numeral; None for a name (a string label)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        if not float(value).is_integer():
            raise PostError(f"{_origin(row)}: label {value} is not a whole number: labels are class indices "
                            f"0..{num_classes - 1}, or names with task.label_names")
        return int(value)
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):  # "1" or "1.0" from a JSON string
        return _label_index(float(value), row, num_classes)
    return None


def _labels(rows: list[dict], field: str, num_classes: int, where: str, names: list[str] = ()) -> list[int]:
    """Class indices; with `names` (task.label_names) the data's labels are names, mapped in label-word order."""
    if rows and field not in rows[0]:
        raise PostError(f"{where} has no label column {field!r}; columns are: {', '.join(map(repr, rows[0]))} "
                        f"(set task.label_field)")
    by_name = {name.strip(): c for c, name in enumerate(names)}
    labels: list[int | None] = []
    strings: set[str] = set()
    for row in rows:
        value = _decoded(row, field) if field in row else None
        if _missing(value) or (isinstance(value, str) and not value.strip()):
            raise PostError(f"{_origin(row, where)}: no label in column {field!r}: fill it in or remove the row")
        if by_name:
            key = _label_key(value)
            if key not in by_name:
                _refuse_case_variant(key, by_name, _origin(row, where))
                hint = ("; if the data's labels are class indices, remove task.label_names"
                        if _label_index(value, row, len(names)) is not None else "")
                raise PostError(f"{_origin(row, where)}: label {key!r} is not one of task.label_names "
                                f"({', '.join(names)}): add it there, or fix the row{hint}")
            labels.append(by_name[key])
            continue
        label = _label_index(value, row, num_classes)
        if label is None:
            strings.add(_label_key(value))
        elif not 0 <= label < num_classes:
            raise PostError(f"{_origin(row, where)}: label {label} is outside 0..{num_classes - 1} "
                            f"(task.label_words has {num_classes} classes)")
        labels.append(label)
    if strings:
        _refuse_case_variants(strings, where, field)
        found = sorted(strings)
        shown = ", ".join(found[:10]) + (f", ... ({len(found)} in all)" if len(found) > 10 else "")
        if len(found) > 20:
            raise PostError(f"{where}: column {field!r} holds {len(found)} different names ({shown}), not class "
                            f"indices: is task.label_field the label column?")
        line = f"label_names = {json.dumps(found, ensure_ascii=False)}"
        raise PostError(f"{where}: labels are names ({shown}), not class indices: add {line} under [task], "
                        f"ordered like task.label_words (class 0 first)")
    return labels


def _folded(label: str) -> str:
    return " ".join(label.split()).casefold()


def _refuse_case_variant(key: str, by_name: dict[str, int], origin: str) -> None:
    same = [name for name in by_name if _folded(name) == _folded(key)]
    if same:
        raise PostError(f"{origin}: label {key!r} differs from {same[0]!r} of task.label_names only in case or "
                        f"spaces: write that class one way, as {same[0]!r}, in the data")


def _refuse_case_variants(labels: set[str], where: str, field: str) -> None:
    """"Spam" and "spam" would otherwise be two classes in the label_names line suggested."""
    groups: dict[str, list[str]] = {}
    for label in sorted(labels):
        groups.setdefault(_folded(label), []).append(label)
    variants = [group for group in groups.values() if len(group) > 1]
    if variants:
        shown = "; ".join(" and ".join(map(repr, group)) for group in variants)
        raise PostError(f"{where}: labels {shown} in column {field!r} differ only in case or spaces: write each "
                        "class one way in the data (one spelling per class)")


def load_task(cfg: TaskConfig, tokenizer, seed: int, warn=None) -> dict[str, Examples]:
    """The private task's train / validation / test splits, tokenized. `warn` hears, one line each, what the
    user should know about the data that is no error (duplicates dropped, a text in two splits or under two
    labels, texts cut to task.max_length); without it, Python warnings."""
    raw = {"train": read_split(cfg.source, cfg.train_split, cfg.subset, seed),
           "test": read_split(cfg.source, cfg.test_split, cfg.subset, seed)}
    if cfg.validation_split:
        raw["validation"] = read_split(cfg.source, cfg.validation_split, cfg.subset, seed)
    notes = list(dict.fromkeys(note for rows in raw.values() for note in getattr(rows, "notes", ())))
    if not cfg.validation_split:  # no validation split in the source: hold out 10% of train, seeded
        order = list(range(len(raw["train"])))
        random.Random(seed).shuffle(order)
        cut = max(len(order) // 10, 1)
        raw["validation"] = [raw["train"][i] for i in order[:cut]]
        raw["train"] = [raw["train"][i] for i in order[cut:]]
    limits = {"train": cfg.max_train, "validation": cfg.max_eval, "test": cfg.max_eval}
    splits, used, kept = {}, {}, []
    for name in ("train", "validation", "test"):
        rows = _seeded_head(raw[name], limits[name], seed)
        where = f"{cfg.source} split {name}"
        if not rows:
            raise PostError(f"{where} is empty: check task.{name}_split and the data")
        encoded = [_encode(tokenizer, cfg.template, r, cfg.text_fields, cfg.max_length, "task") for r in rows]
        kept += [keep for _, keep in encoded]
        splits[name] = Examples([ids for ids, _ in encoded],
                                _labels(rows, cfg.label_field, len(cfg.label_words), where, cfg.label_names))
        used[name] = rows
    found = sorted(set(splits["train"].labels))
    if len(found) < 2:  # every method would score 100 % on such data, and the verdict would call it fine
        raise PostError(f"{cfg.source} split train holds only class {found[0]} ({len(splits['train'])} rows): a "
                        "prompt is tuned on examples of at least two classes: check task.label_field and the data")
    if cfg.source != "smoke":  # smoke's generated sentences repeat by design
        notes += _overlap_notes(cfg, used, splits)
    notes += _cut_notes(cfg, kept)
    for note in notes:
        (warn or _python_warning)(note)
    return splits


def _python_warning(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def _text_key(row: dict, fields: list[str]) -> tuple[str, ...]:
    return tuple(_text(row, field) for field in fields)


def _overlap_notes(cfg: TaskConfig, used: dict[str, list[dict]], splits: dict[str, Examples]) -> list[str]:
    """A text under two labels, and validation / test texts also in train: kept (the data says so), but
    said, since a score on texts tuned on is no score on new ones."""
    labels_of: dict[tuple[str, ...], set[int]] = {}
    for name, rows in used.items():
        for row, label in zip(rows, splits[name].labels):
            labels_of.setdefault(_text_key(row, cfg.text_fields), set()).add(label)
    notes = []
    conflicting = sum(1 for labels in labels_of.values() if len(labels) > 1)
    if conflicting:
        notes.append(f"{cfg.source}: {conflicting} text(s) appear with different labels (all rows kept): check "
                     f"column {cfg.label_field!r} for them")
    train = {_text_key(row, cfg.text_fields) for row in used["train"]}
    for name in ("validation", "test"):
        shared = sum(1 for row in used[name] if _text_key(row, cfg.text_fields) in train)
        if shared:
            notes.append(f"{cfg.source}: {shared} of {len(used[name])} {name} text(s) also appear in train (kept): "
                         f"the {name} score partly measures texts tuned on; remove them from one split")
    return notes


_FEW_TOKENS = 8  # fewer text tokens than this rarely say which class a text is


def _cut_notes(cfg: TaskConfig, kept: list[int | None]) -> list[str]:
    """Texts cut to task.max_length: a note when most are, or when the template leaves a text few tokens."""
    cut = [keep for keep in kept if keep is not None]
    if not cut or (len(cut) * 2 <= len(kept) and min(cut) >= _FEW_TOKENS):
        return []
    return [f"task.max_length = {cfg.max_length}: {len(cut)} of {len(kept)} texts are cut to fit it with "
            f"task.template (as few as {min(cut)} text tokens kept): raise task.max_length or shorten task.template"]


def _seeded_head(rows: list[dict], limit: int, seed: int) -> list[dict]:
    if not limit or limit >= len(rows):
        return rows
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    return [rows[i] for i in sorted(order[:limit])]


def load_public(cfg: PublicConfig, tokenizer, seed: int) -> Examples:
    """`size` public examples in their own template — `pool` of them to pick from with pick = "balanced"
    (engine.public_pick); only text fields are read."""
    rows = public_rows(cfg, seed)
    return Examples([encode(tokenizer, cfg.template, r, cfg.text_fields, cfg.max_length, "public") for r in rows])


def public_rows(cfg: PublicConfig, seed: int) -> list[dict]:
    """The public set's rows as read (before any tokenizer): `size` of them, or `pool` to pick from."""
    rows = read_split(cfg.source, cfg.split, cfg.subset, seed)
    if not rows:
        raise PostError(f"public data {cfg.source} split {cfg.split} is empty")
    if cfg.size > len(rows):
        raise PostError(f"public.size = {cfg.size} but public data {cfg.source} split {cfg.split} has only "
                        f"{len(rows)} rows: set public.size to at most {len(rows)}, or give more public data")
    return _seeded_head(rows, cfg.pool if cfg.pick == "balanced" else cfg.size, seed + 1)


def load_corpus(source: str, subset: str, split: str, field: str, limit: int, seed: int) -> list[str]:
    """Plain text for knowledge distillation."""
    rows = _seeded_head(read_split(source, split, subset, seed), limit, seed + 2)
    texts = [_text(r, field, allow_empty=True) for r in rows]  # a corpus may hold blank lines: skipped
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise PostError(f"distillation corpus {source} split {split} has no text in column {field!r}")
    return texts
