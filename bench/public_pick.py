"""A public set picked from a larger pool by the student's prompted class (issue 12, item 2).

    python bench/public_pick.py RUN POOL OUT [--size 128]

RUN: a run folder whose tune is done (its student and small prompt are what the owner holds).
POOL: a data source with a text column (an offline asset such as `news`, or a file).
OUT: a folder; it gets `balanced/train.jsonl` (`--size` texts, equally many of each class the student's
prompted answer names, drawn at random within a class: `public.pick = "balanced"`'s rule, seed 0, the
whole split as the pool) and `random/train.jsonl` (`--size` texts drawn at
random: the control), each usable as `public.source`, and `pool.json` (every pool text's prompted class
and the large model's zero-shot class).

Only the pool and what the owner holds are read — never the task's data: picking public texts by the
small prompt's answers is post-processing of the released prompt.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench.common  # noqa: F401,E402 — HF_HUB_OFFLINE before transformers loads


def prompted_classes(run: Path, texts: list[str]) -> tuple[list[int], list[int], int]:
    """(the student's prompted class, the large model's zero-shot class) per text, and the class count."""
    from bench.transfer_agreement import class_log_probs
    from engine import loading
    from engine.context import RunContext
    from engine.data.tasks import Examples, encode
    from engine.evaluate import method_logit_fns
    from engine.presets import load_config
    cfg = load_config(config_file=run / "config.toml")
    scratch = tempfile.TemporaryDirectory()  # a copy: nothing in the run folder is touched
    copy = Path(scratch.name) / run.name
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("*.checkpoint.pt", "events.jsonl"))
    ctx = RunContext(cfg, copy)
    fns, tokenizer = method_logit_fns(ctx, only=["cpt", "full_zs"])
    examples = Examples([encode(tokenizer, cfg.public.template, {"text": t}, ["text"], cfg.public.max_length)
                         for t in texts])
    scores, _ = class_log_probs(fns, tokenizer, loading.verbalizer(ctx, tokenizer), examples)
    if "full_zs" not in scores:
        raise SystemExit(f"{run}: eval.full_zs = false in its config: this script also reports the zero-shot classes")
    return scores["cpt"].argmax(-1).tolist(), scores["full_zs"].argmax(-1).tolist(), scores["cpt"].shape[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("pool", help="a data source with a text column: an offline asset (news) or a file")
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    if not (args.run / "tune" / "prompt.safetensors").is_file():
        raise SystemExit(f"{args.run}: no tune/prompt.safetensors: give a run folder whose tune is done")
    from engine.data.sources import read_split
    texts = [str(row["text"]) for row in read_split(args.pool, "train")]
    if len(texts) < args.size:
        raise SystemExit(f"{args.pool} has {len(texts)} texts, fewer than --size {args.size}")
    cpt, zero_shot, n_classes = prompted_classes(args.run, texts)
    from engine.public_pick import balanced_indices, shares
    picks = {"balanced": balanced_indices(cpt, n_classes, args.size, seed=0), "random": random.Random(0).sample(range(len(texts)), args.size)}
    from engine.artifacts import write_json, write_text
    for name, chosen in picks.items():
        write_text(args.out / name / "train.jsonl", "".join(json.dumps({"text": texts[i]}) + "\n" for i in chosen))
        print(f"{name}: prompted class shares {shares([cpt[i] for i in chosen], n_classes)}")
    write_json(args.out / "pool.json", {"pool": args.pool, "texts": len(texts), "cpt": cpt, "full_zs": zero_shot,
                                        "cpt_shares": shares(cpt, n_classes), "full_zs_shares": shares(zero_shot, n_classes)})
    print(f"pool of {len(texts)}: prompted class shares {shares(cpt, n_classes)}, zero-shot {shares(zero_shot, n_classes)}")


if __name__ == "__main__":
    from bench.common import run_main
    run_main(main)
