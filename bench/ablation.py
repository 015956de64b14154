"""One row of the student-recipe ablation: a finished run folder → its lever's numbers on *validation*.

    python bench/ablation.py RUN_DIR --name kd600 --lever "distill.steps 600" --command "post run ..."

Writes bench/results/ablation/<name>.json: every method's accuracy on the validation split (what a
default may be chosen on; cached in RUN_DIR/eval/validation.json), the test accuracies only as
reported by the run, minutes per stage and the student's KD tokens. The table in BENCHMARKS.md is
built from these files (`--table`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/ablation.py` from the repo root works

OUT = Path(__file__).parent / "results" / "ablation"
COLUMNS = ("full_zs", "cpt", "direct", "inference", "post")


def row(run_dir: Path, name: str, lever: str, command: str, threads: int, sets: list[str]) -> dict:
    from engine import records
    from engine.artifacts import read_json_dict, write_json
    from engine.config import apply_overrides, read_toml, validate
    from engine.suite import validation_accuracy
    # --set: e.g. the methods to score (inference-time transfer needs no training) and max_eval, so
    # rows made with other eval settings are scored on the same validation examples
    config = validate(apply_overrides(read_toml(run_dir / "config.toml"), [f"runtime.threads={threads}", *sets]))
    results = run_dir / "results.json"
    distill = run_dir / "distill" / "summary.json"
    tune = read_json_dict(run_dir / "tune" / "summary.json", "tune summary")
    minutes = {s: round(float((records.read(run_dir / s) or {}).get("seconds") or 0) / 60, 2)
               for s in ("distill", "tune", "transfer")}  # each stage's own record: works before eval has run
    path = OUT / f"{name}.json"
    earlier = json.loads(path.read_text()) if path.is_file() else {}
    validation = validation_accuracy(config, run_dir)
    if earlier.get("run_dir") == str(run_dir):  # scored in parts (e.g. CPT and inference before the transfer ran)
        validation = {**earlier.get("validation", {}), **validation}
    report = {"name": name, "lever": lever, "command": command, "run_dir": str(run_dir),
              "validation": validation, "validation_examples": config.task.max_eval,
              "test_reported": read_json_dict(results, "results")["accuracy"] if results.is_file() else None,
              "minutes": minutes,
              "distill": read_json_dict(distill, "distill summary") if distill.is_file() else None,
              "tune": {k: tune.get(k) for k in ("steps", "val_accuracy", "validation", "kept")}, "sets": sets}
    write_json(path, report)
    return report


def table(names: list[str]) -> str:
    lines = ["| lever | KD tokens | " + " | ".join(COLUMNS) + " | distill + tune + transfer minutes |",
             "|---|---|" + "---|" * len(COLUMNS) + "---|"]
    for name in names:
        r = json.loads((OUT / f"{name}.json").read_text())
        tokens = (r["distill"] or {}).get("tokens")
        minutes = sum(r["minutes"].get(s) or 0 for s in ("distill", "tune", "transfer"))
        lines.append(f"| {r['lever']} | {tokens or '—'} | " +
                     " | ".join(f"{100 * r['validation'][m]:.1f}" if m in r["validation"] else "—" for m in COLUMNS) +
                     f" | {minutes:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, nargs="?")
    parser.add_argument("--name")
    parser.add_argument("--lever", default="")
    parser.add_argument("--command", default="")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", dest="sets", action="append", default=[], help="config override for scoring, e.g. task.max_eval=300")
    parser.add_argument("--table", nargs="*", help="print the markdown table of these names instead")
    args = parser.parse_args()
    if args.table is not None:
        print(table(args.table))
        return
    print(json.dumps(row(args.run_dir, args.name, args.lever, args.command, args.threads, args.sets)["validation"], indent=1))


if __name__ == "__main__":
    main()
