"""Would the user's side undo a carried lean by calibration? (issue 12; a measurement, not a stage)

    python bench/calibration.py RUN [RUN ...] [--out FILE]

RUN: a finished run folder. The transferred prompts (output, post, shift: α = 0, 0.5, 1), the student's
prompt (CPT) and zero-shot are scored on the task's validation and test splits. Each is then calibrated
with one bias per class, added to its class log-probabilities, chosen on the *validation inputs* by one of
two rules:
- `student`: the biases that make its class shares on validation the shares the student's prompt (CPT)
  gives the same inputs — no label is read; what POST is meant to carry is how the student reads the
  inputs, and a transfer that carried the student's lean on the public texts gives other shares;
- `labels`: the shares of the validation labels (the counts only).
The biases are applied unchanged to test. Reported per method: test and validation accuracy, raw and under
each rule, and what `transfer.alpha = "select"` would keep among the three candidates (best validation
accuracy) raw and calibrated. Task data is read: a developer's measurement on a benchmark task.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench.common  # noqa: F401,E402 — HF_HUB_OFFLINE before transformers loads

CANDIDATES = {"output": 0.0, "post": 0.5, "shift": 1.0}


class BadRun(Exception):
    """One line for the user: what is wrong with a run folder and how to fix it."""


def share_biases(log_probs, target, steps: int = 200):
    """Biases b (b[0] = 0) such that argmax(log_probs + b) puts `target` shares of the inputs in each class:
    with two classes the exact threshold on the margin (a quantile), else a few hundred multiplicative
    steps on the soft shares (prior matching)."""
    import torch
    classes = log_probs.shape[1]
    target = torch.as_tensor(target, dtype=torch.float64)
    if classes == 2:
        margin = (log_probs[:, 1] - log_probs[:, 0]).double()
        ones = int(round(target[1].item() * len(margin)))  # inputs to put in class 1
        if ones <= 0:
            cut = margin.max().item() + 1.0
        elif ones >= len(margin):
            cut = margin.min().item() - 1.0
        else:
            ordered = margin.sort(descending=True).values
            cut = (ordered[ones - 1] + ordered[ones]).item() / 2  # between the ones-th and the next margin
        return torch.tensor([0.0, -cut], dtype=torch.float64)
    b = torch.zeros(classes, dtype=torch.float64)
    for _ in range(steps):
        soft = torch.softmax(log_probs.double() + b, -1).mean(0)
        b += torch.log(target.clamp_min(1e-6) / soft.clamp_min(1e-6))
        b -= b[0].clone()
    return b


def shares(log_probs, classes: int):
    predicted = log_probs.argmax(-1)
    return [(predicted == c).double().mean().item() for c in range(classes)]


def accuracy(log_probs, labels, bias=None) -> float:
    scores = log_probs.double() + (0 if bias is None else bias)
    return round((scores.argmax(-1) == labels).double().mean().item(), 4)


def measure(run: Path) -> dict:
    import shutil
    import tempfile

    from bench.transfer_agreement import class_log_probs
    from engine import loading
    from engine.context import RunContext
    from engine.evaluate import method_logit_fns
    from engine.presets import load_config
    cfg = load_config(config_file=run / "config.toml")
    scratch = tempfile.TemporaryDirectory()  # a copy: loading may rewrite files of the folder
    copy = Path(scratch.name) / run.name
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("*.checkpoint.pt", "events.jsonl"))
    ctx = RunContext(cfg, copy)
    fns, tokenizer = method_logit_fns(ctx, only=["full_zs", "cpt", *CANDIDATES])
    verbalizer = loading.verbalizer(ctx, tokenizer)
    splits = loading.task(ctx, tokenizer)
    val, val_labels = class_log_probs(fns, tokenizer, verbalizer, splits["validation"])
    test, test_labels = class_log_probs(fns, tokenizer, verbalizer, splits["test"])
    classes = val["cpt"].shape[1]
    targets = {"student": shares(val["cpt"], classes),
               "labels": [(val_labels == c).double().mean().item() for c in range(classes)]}
    methods = {}
    for name in fns:
        row = {"test": accuracy(test[name], test_labels), "validation": accuracy(val[name], val_labels),
               "test_shares": [round(s, 3) for s in shares(test[name], classes)]}
        for rule, target in targets.items():
            bias = share_biases(val[name], target)
            row[f"test_{rule}"] = accuracy(test[name], test_labels, bias)
            row[f"validation_{rule}"] = accuracy(val[name], val_labels, bias)
            row[f"test_shares_{rule}"] = [round(s, 3) for s in shares(test[name].double() + bias, classes)]
        methods[name] = row
    if not any(m in methods for m in CANDIDATES):
        raise BadRun(f"{run} has no transferred prompt to calibrate (output, post or shift in transfer.methods): "
                     "give a run whose transfer trained one")
    kept = {}
    for suffix in ("", "_student", "_labels"):
        found = [m for m in CANDIDATES if m in methods]
        best = max(found, key=lambda m: (methods[m][f"validation{suffix}"], -CANDIDATES[m]))  # a tie: the lower α
        kept[suffix.strip("_") or "raw"] = {"method": best, "alpha": CANDIDATES[best],
                                            "test": methods[best][f"test{suffix}"]}
    return {"run": str(run), "classes": classes, "targets": {k: [round(x, 3) for x in v] for k, v in targets.items()},
            "test_label_shares": [round((test_labels == c).double().mean().item(), 3) for c in range(classes)],
            "methods": methods, "select": kept}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    for run in args.runs:
        if not (run / "config.toml").is_file() or not (run / "eval" / "done.json").is_file():
            print(f"error: {run} is not a finished run folder (no config.toml or eval/done.json): give a run "
                  "whose eval finished", file=sys.stderr)
            return 2
    found = []
    for run in args.runs:
        try:
            result = measure(run)
        except BadRun as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        found.append(result)
        print(json.dumps({"run": result["run"], "select": result["select"], "targets": result["targets"]}))
    if args.out:
        from engine import artifacts
        artifacts.write_json(args.out, found if len(found) > 1 else found[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
