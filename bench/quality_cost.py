"""Quality against cost, one point per student recipe (issue 12): gap closed on validation against
full PT's cost divided by POST's, both at one private epoch of `mr-smollm2`.

    python bench/quality_cost.py kd600 kd1200 kd2400 alpha1-mr blocks6-mr [--full-pt 0.8133]
    python bench/quality_cost.py ... bench/results/student-curve/blocks10-mr-smollm2.json   # a suite row's report

Quality comes from the ablation rows (`bench/results/ablation/<name>.json`, written by
bench/ablation.py): gap closed = (POST − zero-shot) / (full PT − zero-shot) on the same validation
examples. Full PT's validation accuracy is the `mr-smollm2` suite row's (a row without its own takes
`--full-pt`). Cost comes from *one* side-by-side measurement, `bench/scaling.py --part students`: the
per-unit seconds of SmolLM2-135M with each student (block set) in one process
(`bench/results/scaling.json`, key `students`), times each recipe's step counts — so rows measured at
different loads are not compared by their wall minutes, and a bigger student costs what its steps cost.
POST's cost includes the owner's one-time distillation (teacher cache + the recipe's KD steps) and one
transfer (α known).

Writes bench/results/quality_cost.json and, with matplotlib, bench/results/quality_cost.png; prints
the markdown table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).parent / "results"


def cost_models() -> dict:
    """Per kept-block set (absolute indices): whole-run seconds of each part, from one side-by-side run."""
    measured = json.loads((RESULTS / "scaling.json").read_text()).get("students")
    if not measured:
        raise SystemExit("bench/results/scaling.json has no student costs: run "
                         "python bench/scaling.py --part students")
    return {"date": measured["date"], "command": measured["command"],
            "layers": measured["students"][0]["layers"],
            "students": {absolute(s["blocks"], s["layers"]): {"run_seconds": s["run_seconds"],
                                                              "distill_steps": s["steps"]["distill"]}
                         for s in measured["students"]}}


def absolute(blocks: list[int], layers: int) -> tuple[int, ...]:
    return tuple(sorted(b % layers for b in blocks))


def read_point(name: str) -> tuple[str, dict, dict]:
    """An ablation row by name, or a suite row's report by path (`<row>.json`: its recipe under `method`)."""
    try:
        if name.endswith(".json"):
            r = json.loads(Path(name).read_text())
            return Path(name).stem, {**r, "lever": f"{r['row']}: {Path(name).stem}"}, r["method"]["distill"]
        r = json.loads((RESULTS / "ablation" / f"{name}.json").read_text())
        return name, r, r.get("distill") or {}
    except (OSError, ValueError, KeyError, TypeError) as e:  # one line, no traceback (a bench script's bad input)
        raise SystemExit(f"{name}: neither an ablation row (bench/results/ablation/<name>.json) nor a suite row's "
                         f"report ({type(e).__name__}: {e})") from None


def point(name: str, models: dict, full_pt: float | None) -> dict:
    name, r, distill = read_point(name)
    val = r["validation"]
    pt = val.get("full_pt", full_pt)
    steps = distill.get("steps")
    blocks = distill.get("blocks")
    model = models["students"].get(absolute(blocks or [], models["layers"]))
    if model is None:
        raise SystemExit(f"{name}: no cost measured for a student of blocks {blocks}: run python bench/scaling.py "
                         f"--part students --students with that block set")
    secs = model["run_seconds"]
    kd = secs["distill"] * steps / model["distill_steps"]
    post = secs["post_one_alpha"] + secs["teacher_cache"] + kd
    gap = {m: (val[m] - val["full_zs"]) / (pt - val["full_zs"]) for m in ("post", "inference") if m in val}
    return {"name": name, "lever": r["lever"], "blocks": blocks, "kd_steps": steps,
            "kd_hours_here": round(kd / 3600, 2), "full_pt_over_post": round(secs["full_pt"] / post, 2),
            "full_pt_over_post_user_and_transfer": round(secs["full_pt"] / secs["post_one_alpha"], 2),
            "gap_closed": {m: round(g, 3) for m, g in gap.items()}, "validation": val, "full_pt": pt,
            "validation_examples": r.get("validation_examples")}


def table(points: list[dict]) -> str:
    lines = ["| recipe | blocks × KD steps | KD hours (cost model) | full PT / POST (with distillation) | gap closed: POST | inference-time | student's own prompt (CPT, %) |",
             "|---|---|---|---|---|---|---|"]
    for p in points:
        g = p["gap_closed"]
        cpt = p["validation"].get("cpt")
        lines.append(f"| {p['name']} | {len(p['blocks'] or [])} × {p['kd_steps']} | {p['kd_hours_here']} | "
                     f"{p['full_pt_over_post']}× | {_num(g.get('post'))} | {_num(g.get('inference'))} | "
                     f"{'—' if cpt is None else f'{100 * cpt:.1f}'} |")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def plot(points: list[dict], path: Path) -> bool:
    from bench.common import pyplot, save_figure
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [p["full_pt_over_post"] for p in points]
    for method, marker in (("post", "o"), ("inference", "s")):
        ys = [p["gap_closed"].get(method) for p in points]
        ax.scatter(xs, ys, marker=marker, label="POST" if method == "post" else "inference-time (no transfer training)")
    for p in points:
        ax.annotate(f"{p['name']}: {len(p['blocks'] or [])} blocks × {p['kd_steps']}",
                    (p["full_pt_over_post"], p["gap_closed"].get("post")), textcoords="offset points",
                    xytext=(4, -12), fontsize=7)
    ax.axhline(0.80, color="grey", linestyle=":", label="goal 0.80")
    ax.set_xlabel("full PT cost / POST cost (one private epoch, distillation included)")
    ax.set_ylabel("gap closed (validation)")
    ax.set_title("mr-smollm2: student recipe, quality vs cost")
    save_figure(fig, ax, path)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help="ablation rows (bench/results/ablation/<name>.json) or suite row "
                        "reports (a path ending in .json, e.g. bench/results/student-curve/blocks10-mr-smollm2.json)")
    parser.add_argument("--full-pt", type=float, default=None, help="full PT validation accuracy for rows without it")
    args = parser.parse_args()
    models = cost_models()
    fallback = args.full_pt
    if fallback is None:
        suite_row = json.loads((RESULTS / "ablation" / "kd1200.json").read_text())["validation"]
        fallback = suite_row.get("full_pt")
    points = [point(n, models, fallback) for n in args.names]
    from engine.artifacts import write_json
    cost = {"date": models["date"], "command": models["command"],
            "students": [{"blocks": list(b), **m} for b, m in models["students"].items()]}
    write_json(RESULTS / "quality_cost.json", {"cost_model": cost, "points": points})
    plot(points, RESULTS / "quality_cost.png")
    print(table(points))


if __name__ == "__main__":
    from bench.common import run_main
    run_main(main)
