"""The evidence behind engine.prospect's warning: over every (row, seed) run of the generality suite whose
results JSON holds validation accuracies, the gap closed on test of the runs whose student prompt trails the
large model's zero-shot on validation by more than engine.prospect.MARGIN, against the others.

    python bench/prospect_evidence.py [RESULTS_DIR ...]     (default: bench/results/suite-applied*, suite-sms)

Prints one line per run (sorted by the validation difference) and the two groups' gap closed.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = [*sorted((ROOT / "bench/results").glob("suite-applied*")), ROOT / "bench/results/suite-sms"]


def runs(folders: list[Path]) -> list[dict]:
    """One entry per (row, seed): the paired-repeat folder measures runs already counted, so it is skipped."""
    found = {}
    for folder in folders:
        if folder.name.endswith("-paired"):
            continue
        for path in sorted(folder.glob("*.json")):
            data = json.loads(path.read_text())
            val = data.get("validation") or {}
            if not {"cpt", "full_zs"} <= val.keys() or data.get("gap_closed") is None:
                continue
            seed = (data.get("runtime") or {}).get("seed", 0)
            found[(data["row"], seed)] = {"row": data["row"], "seed": seed, "file": str(path.relative_to(ROOT)),
                                          "difference": val["cpt"] - val["full_zs"], "gap": data["gap_closed"]}
    return sorted(found.values(), key=lambda r: r["difference"])


def main(folders: list[Path]) -> None:
    sys.path.insert(0, str(ROOT))
    from engine.prospect import MARGIN, trails
    found = runs(folders)
    for r in found:
        print(f"{r['row']:15s} seed {r['seed']}  cpt - zs {100 * r['difference']:+6.1f}  gap {r['gap']:+.2f}  {r['file']}")
    for name, group in (("trails", [r for r in found if trails(r["difference"], 0.0)]),
                        ("others", [r for r in found if not trails(r["difference"], 0.0)])):
        gaps = [r["gap"] for r in group]
        if gaps:
            print(f"{name} (margin {MARGIN}): {len(gaps)} runs, gap closed mean {statistics.mean(gaps):.2f}, "
                  f"median {statistics.median(gaps):.2f}, max {max(gaps):.2f}, rows {sorted({r['row'] for r in group})}")


if __name__ == "__main__":
    main([Path(a) for a in sys.argv[1:]] or DEFAULT)
