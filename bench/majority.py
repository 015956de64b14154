"""The suite's rows against the baseline that reads nothing: the training split's most common class, said for
every test example (engine.verdict.majority). Since 2026-12-06 every eval reports it (results.json's
`majority`); this computes it for reports written before, from the task's data alone (no model runs: the
splits are carved and tokenized as each row's eval did, with its seed and max_eval).

    python bench/majority.py DIR... [--suite offline] [--out FILE]

DIR: a folder of suite row reports (`bench/results/suite-applied-seedN`); each report's `runtime.seed` picks
its splits. Prints per row and seed POST, full PT and the baseline, and writes the JSON (--out).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench.common  # noqa: F401,E402 — HF_HUB_OFFLINE before transformers loads


def baseline(config, seed: int) -> dict:
    from engine import verdict
    from engine.data.tasks import load_task
    from engine.models import _local_folder, _ready
    from transformers import AutoTokenizer
    folder = _local_folder(config.models.large)  # the offline asset's folder: only its tokenizer is read
    tokenizer = _ready(AutoTokenizer.from_pretrained(folder or config.models.large))
    splits = load_task(config.task, tokenizer, seed)
    return verdict.majority(splits["train"].labels, splits["test"].labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--suite", default="offline")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from engine.suite import row_configs
    configs = row_configs(args.suite)
    found, cache = {}, {}
    for folder in args.dirs:
        for path in sorted(folder.glob("*.json")):
            report = json.loads(path.read_text())
            row = report.get("row")
            if row not in configs or "accuracy" not in report:
                continue
            seed = (report.get("runtime") or {}).get("seed", 0)
            key = (configs[row].task.source, configs[row].models.large, seed)
            if key not in cache:
                cache[key] = baseline(configs[row], seed)
            base, acc = cache[key], report["accuracy"]
            found.setdefault(row, {})[str(seed)] = {"majority": round(base["accuracy"], 4), "class": base["class"],
                                                    "post": acc.get("post"), "full_pt": acc.get("full_pt"),
                                                    "full_zs": acc.get("full_zs")}
            print(f"{row:16s} seed {seed}: majority {base['accuracy']:.3f} (class {base['class']}), full ZS "
                  f"{acc.get('full_zs', float('nan')):.3f}, POST {acc.get('post', float('nan')):.3f}, full PT "
                  f"{acc.get('full_pt', float('nan')):.3f}")
    if args.out:
        from engine.artifacts import write_json
        write_json(args.out, found)


if __name__ == "__main__":
    from bench.common import run_main
    run_main(main)
