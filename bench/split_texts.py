"""The texts of one split of a data source, labels dropped, as JSONL — a diagnostic public set.

    python bench/split_texts.py bbc train runs/bbc-train-texts.jsonl

BENCHMARKS.md ("Is the public set the limit on BBC?") transfers with the task's own unlabelled training
articles as the public set: an oracle no user has (the owner never sees the private data), run only to ask
whether a public set closer to the task would help. Not a product setting.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/split_texts.py` from the repo root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("split")
    parser.add_argument("out", type=Path)
    parser.add_argument("--field", default="text")
    args = parser.parse_args()
    from engine.artifacts import write_text
    from engine.data.sources import read_split
    rows = read_split(args.source, args.split)
    write_text(args.out, "".join(json.dumps({"text": r[args.field]}, ensure_ascii=False) + "\n" for r in rows))
    print(f"{len(rows)} texts of {args.source} {args.split} → {args.out}")


if __name__ == "__main__":
    main()
