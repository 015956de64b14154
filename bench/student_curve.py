"""Gap closed against the student's size: where would a bigger student reach issue 12's goal? (issue 12)

    python bench/student_curve.py bench/results/suite-applied/mr-smollm2.json \
        bench/results/student-curve/blocks10-mr-smollm2.json bench/results/student-curve/oracle-mr-smollm2.json

Each argument is a suite row's report (`post bench --suite offline --row ROW`, written to
`<results>/<row>.json`) of the *same* row and seed with a different student: the distilled students
keep some of the large model's blocks (`distill.blocks`), and the oracle is the large model itself
(`models.small` = the large model, `distill.enabled = false`), which bounds what the transfer can carry
when the student is perfect. bench/student_row.sh makes them.

Prints a markdown table; writes `curve.json` and, with matplotlib, `curve.png` beside the first report
it is given under bench/results/student-curve (or --out). Where two neighbouring points straddle the
goal, the crossing is the straight line between them — two single-seed points, so a rough guide.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GOAL = 0.80
OUT = Path(__file__).parent / "results" / "student-curve"


def point(path: Path, layers: int) -> dict:
    """One student: how much of the large model it keeps, and what the row measured with it."""
    try:
        return _point(json.loads(path.read_text()), path, layers)
    except (OSError, ValueError, KeyError, TypeError) as e:  # one line, no traceback (a bench script's bad input)
        raise SystemExit(f"{path}: not a suite row's report ({type(e).__name__}: {e}): "
                         f"make one with post bench --suite offline --row ROW --results DIR") from None


def _point(r: dict, path: Path, layers: int) -> dict:
    distill = r["method"]["distill"]
    oracle = not distill["enabled"]
    if oracle and r.get("student") not in (None, r["large"]):
        raise SystemExit(f"{path}: the student is {r['student']}, not the large model: not a point of this curve")
    blocks = layers if oracle else len(distill["blocks"])
    acc, val = r["accuracy"], r["validation"]
    return {"report": str(path), "row": r["row"], "seed": (r.get("runtime") or {}).get("seed", 0),
            "student": "the large model itself" if oracle else f"{blocks} blocks, KD {distill['steps']} steps",
            "blocks": blocks, "share": round(blocks / layers, 3), "kd_steps": 0 if oracle else distill["steps"],
            "accuracy": acc, "validation": val, "gap_closed": r["gap_closed"],
            "validation_gap_closed": r["validation_gap_closed"], "alpha": r["alpha"].get("post"),
            "minutes": r["minutes"]}


def crossing(points: list[dict], key: str) -> float | None:
    """Blocks kept where the straight line between the first two neighbours straddling GOAL meets it."""
    for a, b in zip(points, points[1:]):
        ya, yb = a[key], b[key]
        if (ya - GOAL) * (yb - GOAL) <= 0 and ya != yb:
            return round(a["blocks"] + (GOAL - ya) * (b["blocks"] - a["blocks"]) / (yb - ya), 1)
    return None


def table(points: list[dict]) -> str:
    lines = ["| student | share of the large model's blocks | CPT | inference-time | POST | full ZS | full PT | "
             "gap closed (test) | gap closed (validation) | α | minutes |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in points:
        a = p["accuracy"]
        pct = [f"{100 * a[m]:.1f}" for m in ("cpt", "inference", "post", "full_zs", "full_pt")]
        lines.append(f"| {p['student']} | {p['share']:.2f} | " + " | ".join(pct) +
                     f" | {p['gap_closed']:.2f} | {p['validation_gap_closed']:.2f} | {p['alpha']} | {p['minutes']['total']} |")
    return "\n".join(lines)


def plot(points: list[dict], layers: int, path: Path) -> bool:
    from bench.common import pyplot, save_figure
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [p["blocks"] for p in points]
    ax.plot(xs, [p["gap_closed"] for p in points], "o-", label="test")
    ax.plot(xs, [p["validation_gap_closed"] for p in points], "s--", label="validation")
    ax.axhline(GOAL, color="grey", linestyle=":", label=f"goal {GOAL}")
    ax.set_xlabel(f"student: blocks kept of {layers} (at {layers}: the large model itself)")
    ax.set_ylabel("gap closed by POST")
    ax.set_title(f"{points[0]['row']}, seed {points[0]['seed']}: gap closed against the student's size")
    save_figure(fig, ax, path)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, help="suite row reports of one row, one per student")
    parser.add_argument("--layers", type=int, default=30, help="the large model's blocks (SmolLM2-135M: 30)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    points = sorted((point(p, args.layers) for p in args.reports), key=lambda p: p["blocks"])
    if len({p["row"] for p in points}) > 1:
        raise SystemExit(f"the reports are of several rows ({sorted({p['row'] for p in points})}): give one row's")
    from engine.artifacts import write_json
    cross = {k: crossing(points, k) for k in ("gap_closed", "validation_gap_closed")}
    write_json(args.out / "curve.json", {"goal": GOAL, "crossing_blocks": cross, "points": points})
    plot(points, args.layers, args.out / "curve.png")
    print(table(points))
    print(f"\nGoal {GOAL} crossed (straight line between neighbours), in blocks kept: test {cross['gap_closed']}, "
          f"validation {cross['validation_gap_closed']}")


if __name__ == "__main__":
    from bench.common import run_main
    run_main(main)
