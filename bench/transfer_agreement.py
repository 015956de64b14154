"""What did the transfer carry: the student's reading of the inputs, or its lean? (issue 12)

    python bench/transfer_agreement.py RUN [--split validation] [--out FILE]

RUN: a finished run folder. Every method whose prompt is in it (the eval's set: full_zs, full_pt, cpt,
direct, inference and the trained transfers) is scored on the task's split and on the run's public set,
and per method the script prints and writes:
- `class_shares`: the share of the inputs it puts in each class (the split's labels' too);
- `agree_cpt`: how often its class is the student's prompted class (CPT), input by input;
- `margin_corr_cpt`: the correlation of its class-1-minus-class-0 log-probability margin with CPT's
  (two classes only).
A transfer that matches CPT on the public set but not on the task's inputs carried what the student's
prompt does on the public texts, not what it does on the task's (BENCHMARKS.md, "A transfer that carried a
lean"). Task data is read: a developer's measurement on a benchmark task, not a stage of the owner's.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench.common  # noqa: F401,E402 — HF_HUB_OFFLINE before transformers loads


def class_log_probs(fns, tokenizer, verbalizer, examples, batch_size: int = 32):
    """method → (inputs, classes) log-probabilities, and the labels (None for the public set)."""
    import torch
    from engine.data.tasks import collate, eval_batches
    out, labels = {name: [] for name in fns}, []
    with torch.inference_mode():
        for indices in eval_batches(examples, batch_size):
            batch = collate(examples, indices, tokenizer.pad_token_id or 0, torch.device("cpu"))
            for name, fn in fns.items():
                out[name].append(torch.log_softmax(verbalizer.class_scores(fn(batch)).float(), -1))
            if "labels" in batch:
                labels.append(batch["labels"])
    return {name: torch.cat(parts) for name, parts in out.items()}, (torch.cat(labels) if labels else None)


def summary(scores: dict, labels) -> dict:
    import torch
    classes = next(iter(scores.values())).shape[1]
    predicted = {name: s.argmax(-1) for name, s in scores.items()}
    if labels is not None:
        predicted_and_labels = {**predicted, "labels": labels}
    else:
        predicted_and_labels = predicted
    out = {"inputs": len(next(iter(predicted.values()))),
           "class_shares": {name: [round((p == c).float().mean().item(), 3) for c in range(classes)]
                            for name, p in predicted_and_labels.items()},
           "agree_cpt": {name: round((p == predicted["cpt"]).float().mean().item(), 3) for name, p in predicted.items()}}
    if labels is not None:
        out["accuracy"] = {name: round((p == labels).float().mean().item(), 3) for name, p in predicted.items()}
    if classes == 2:
        margin = {name: s[:, 1] - s[:, 0] for name, s in scores.items()}
        out["margin_corr_cpt"] = {name: round(torch.corrcoef(torch.stack([m, margin["cpt"]]))[0, 1].item(), 3)
                                  for name, m in margin.items()}
    return out


def measure(run: Path, split: str) -> dict:
    from engine import loading
    from engine.context import RunContext
    from engine.evaluate import method_logit_fns
    from engine.presets import load_config
    import shutil
    import tempfile
    cfg = load_config(config_file=run / "config.toml")
    scratch = tempfile.TemporaryDirectory()  # a copy: loading a generated public set rewrites its file
    copy = Path(scratch.name) / run.name
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("*.checkpoint.pt", "events.jsonl"))
    ctx = RunContext(cfg, copy)
    fns, tokenizer = method_logit_fns(ctx)
    verbalizer = loading.verbalizer(ctx, tokenizer)
    task_scores, labels = class_log_probs(fns, tokenizer, verbalizer, loading.task(ctx, tokenizer)[split])
    public_scores, _ = class_log_probs(fns, tokenizer, verbalizer, loading.public(ctx, tokenizer))
    return {"run": str(run), "split": split, split: summary(task_scores, labels), "public": summary(public_scores, None)}


def table(part: dict) -> str:
    rows = [k for k in ("accuracy", "class_shares", "agree_cpt", "margin_corr_cpt") if k in part]
    methods = list(part["agree_cpt"])
    lines = ["| | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for row in rows:
        lines.append(f"| {row} | " + " | ".join(str(part[row][m]) for m in methods) + " |")
    if "labels" in part["class_shares"]:
        lines.append(f"\nthe labels' class shares: {part['class_shares']['labels']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished run folder")
    parser.add_argument("--split", default="validation", choices=["validation", "test"])
    parser.add_argument("--out", type=Path, help="where to write the JSON")
    args = parser.parse_args()
    if not (args.run / "config.toml").is_file() or not (args.run / "tune" / "prompt.safetensors").is_file():
        raise SystemExit(f"{args.run}: no config.toml or tune/prompt.safetensors: give a run folder whose tune is done")
    if args.out is not None and args.out.is_dir():
        raise SystemExit(f"--out {args.out} is a folder: give the JSON file's path")
    out = measure(args.run, args.split)
    for part in (args.split, "public"):
        print(f"\n{part} ({out[part]['inputs']} inputs)\n{table(out[part])}")
    if args.out:
        from engine.artifacts import write_json
        write_json(args.out, out)


if __name__ == "__main__":
    from bench.common import run_main
    run_main(main)
