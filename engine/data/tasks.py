"""Tasks: rows → templated, tokenized examples, and batches of them.

The private task has labels and a verbalizer; the public set and the KD corpus have text only
(their labels are never read).
"""
from __future__ import annotations

import random
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


def _text(row: dict, field: str) -> str:
    if field not in row:
        raise PostError(f"data has no text column {field!r}; columns are: {', '.join(map(str, row))} "
                        f"(set task.text_fields)")
    value = row[field]
    return "" if value is None else str(value)


def encode(tokenizer, template: str, row: dict, fields: list[str], max_length: int) -> list[int]:
    """Tokenize the templated row; an over-long text is cut so the template's cloze survives."""
    text, whole = fill(template, row, fields)
    ids = tokenizer(whole, add_special_tokens=False).input_ids
    if len(ids) <= max_length:
        return ids
    text_ids = tokenizer(text, add_special_tokens=False).input_ids
    keep = max(len(text_ids) - (len(ids) - max_length), 0)
    shorter = dict(row)
    shorter[fields[0]] = tokenizer.decode(text_ids[:keep])
    ids = tokenizer(fill(template, shorter, fields)[1], add_special_tokens=False).input_ids
    return ids[-max_length:]  # re-tokenizing may shift a token or two: keep the end (the cloze)


# ---------------------------------------------------------------- the private task

def _labels(rows: list[dict], field: str, num_classes: int, where: str) -> list[int]:
    if rows and field not in rows[0]:
        raise PostError(f"{where} has no label column {field!r}; columns are: {', '.join(map(str, rows[0]))} "
                        f"(set task.label_field)")
    labels = []
    for row in rows:
        try:
            label = int(row[field])
        except (TypeError, ValueError):
            raise PostError(f"{where}: label {row[field]!r} is not a class index 0..{num_classes - 1}") from None
        if not 0 <= label < num_classes:
            raise PostError(f"{where}: label {label} is outside 0..{num_classes - 1} "
                            f"(task.label_words has {num_classes} classes)")
        labels.append(label)
    return labels


def load_task(cfg: TaskConfig, tokenizer, seed: int) -> dict[str, Examples]:
    """The private task's train / validation / test splits, tokenized."""
    raw = {"train": read_split(cfg.source, cfg.train_split, cfg.subset, seed),
           "test": read_split(cfg.source, cfg.test_split, cfg.subset, seed)}
    if cfg.validation_split:
        raw["validation"] = read_split(cfg.source, cfg.validation_split, cfg.subset, seed)
    else:  # no validation split in the source: hold out 10% of train, seeded
        order = list(range(len(raw["train"])))
        random.Random(seed).shuffle(order)
        cut = max(len(order) // 10, 1)
        raw["validation"] = [raw["train"][i] for i in order[:cut]]
        raw["train"] = [raw["train"][i] for i in order[cut:]]
    limits = {"train": cfg.max_train, "validation": cfg.max_eval, "test": cfg.max_eval}
    splits = {}
    for name in ("train", "validation", "test"):
        rows = _seeded_head(raw[name], limits[name], seed)
        where = f"{cfg.source} split {name}"
        if not rows:
            raise PostError(f"{where} is empty: check task.{name}_split and the data")
        ids = [encode(tokenizer, cfg.template, r, cfg.text_fields, cfg.max_length) for r in rows]
        splits[name] = Examples(ids, _labels(rows, cfg.label_field, len(cfg.label_words), where))
    return splits


def _seeded_head(rows: list[dict], limit: int, seed: int) -> list[dict]:
    if not limit or limit >= len(rows):
        return rows
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    return [rows[i] for i in sorted(order[:limit])]


def load_public(cfg: PublicConfig, tokenizer, seed: int) -> Examples:
    """`size` public examples in their own template; only text fields are read."""
    rows = read_split(cfg.source, cfg.split, cfg.subset, seed)
    if not rows:
        raise PostError(f"public data {cfg.source} split {cfg.split} is empty")
    rows = _seeded_head(rows, cfg.size, seed + 1)
    return Examples([encode(tokenizer, cfg.template, r, cfg.text_fields, cfg.max_length) for r in rows])


def load_corpus(source: str, subset: str, split: str, field: str, limit: int, seed: int) -> list[str]:
    """Plain text for knowledge distillation."""
    rows = _seeded_head(read_split(source, split, subset, seed), limit, seed + 2)
    texts = [_text(r, field) for r in rows]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise PostError(f"distillation corpus {source} split {split} has no text in column {field!r}")
    return texts
