"""One suite table repeated over seeds: each row's gap closed per seed, its mean, and the table's mean
with the standard error the seed-to-seed variation gives it.

    python bench/suite_seeds.py bench/results/suite-applied bench/results/suite-applied-seed1 \
        --names 0 1 --out bench/results/suite-seeds.md

Each folder holds one seed's `<row>.json` (as `post bench --suite ... --set runtime.seed=S --results
FOLDER` writes them). A seed redraws the whole experiment — the task's samples, the public set, the
distillation corpus and the student — so the spread over seeds is the noise of one table's row.

The table's mean is the mean over rows of each row's mean over the seeds it was measured at (rows may
have different numbers of seeds). Its standard error treats the tasks as fixed and the seeds as the
noise: the within-row variance over seeds, pooled over the rows measured more than once (weighted by
their degrees of freedom), gives each row mean the variance s²/k_r, so SE = √(s² Σ 1/k_r) / R. With two
seeds each row's variance rests on one difference, so the error itself is rough; the line says how many
rows and degrees of freedom it rests on. The same is given without the (row, seed) measurements whose
gap closed has a noise denominator (Full PT not above zero-shot by two standard errors), and per seed
over the rows measured at that seed.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from bench.suite_pairs import BadInput, load_rows  # noqa: E402  (one reader of suite reports)


def seed_table(tables: list[dict[str, dict]]) -> dict:
    """Per row: the gap closed at each seed (None where not measured), their mean, the table's POST-above
    checks and whether the gap is resolvable, per seed; overall: the mean over rows of each row's mean
    (all rows, and without the noise measurements) with its error, and each seed's mean."""
    from engine.suite import summary
    summaries = [summary(table) for table in tables]  # the table's own checks and noise rows, per seed
    order = _suite_order(tables)
    names = sorted({row for table in tables for row in table},
                   key=lambda r: (order.index(r), "") if r in order else (len(order), r))
    rows = {}
    for name in names:
        reports = [table.get(name) for table in tables]
        gaps = [None if r is None else r.get("gap_closed") for r in reports]
        seen = [g for g in gaps if g is not None]
        rows[name] = {
            "gaps": gaps,
            "mean": sum(seen) / len(seen) if seen else None,
            "post>direct": [seed["post_above"].get(name, {}).get("post>direct") for seed in summaries],
            "post>full_zs": [seed["post_above"].get(name, {}).get("post>full_zs") for seed in summaries],
            "resolved": [None if r is None else name not in seed["gap_unresolved"] for r, seed in zip(reports, summaries)],
        }
    every = _mean_and_error({n: r["gaps"] for n, r in rows.items()})
    resolved = _mean_and_error({n: [g if ok else None for g, ok in zip(r["gaps"], r["resolved"])]
                                for n, r in rows.items()})
    per_seed = []
    for s in range(len(tables)):
        seen = [r["gaps"][s] for r in rows.values() if r["gaps"][s] is not None]
        per_seed.append((sum(seen) / len(seen), len(seen)) if seen else (None, 0))
    return {"seeds": len(tables), "rows": rows, "all": every, "resolved": resolved, "per_seed": per_seed}


def _suite_order(tables: list[dict[str, dict]]) -> list[str]:
    """The rows in their suite's order (SmolLM2 rows first in `offline`), where the suite is known here."""
    from engine.errors import PostError
    from engine.suite import suite_data
    order: list[str] = []
    for suite in sorted({str(r.get("suite")) for table in tables for r in table.values()}):
        try:
            order += [row["name"] for row in suite_data(suite).get("rows", []) if row.get("name") not in order]
        except (PostError, OSError):
            continue  # a suite file no longer at hand: its rows go by name
    return order


def _mean_and_error(gaps_by_row: dict[str, list]) -> dict:
    """The mean over rows of each row's mean over its measured seeds, and its standard error from the
    pooled within-row variance (None with no row measured twice)."""
    measured = {n: [g for g in gaps if g is not None] for n, gaps in gaps_by_row.items()}
    measured = {n: gs for n, gs in measured.items() if gs}
    if not measured:
        return {"mean": None, "se": None, "rows": 0, "dof": 0}
    means = {n: sum(gs) / len(gs) for n, gs in measured.items()}
    squares = sum((g - means[n]) ** 2 for n, gs in measured.items() for g in gs)
    dof = sum(len(gs) - 1 for gs in measured.values())
    out = {"mean": sum(means.values()) / len(means), "se": None, "rows": len(means), "dof": dof}
    if dof:
        pooled = squares / dof
        out["se"] = math.sqrt(pooled * sum(1 / len(gs) for gs in measured.values())) / len(means)
        out["row_sd"] = math.sqrt(pooled)
    return out


def _cell(value) -> str:
    return "—" if value is None else f"{value:.2f}"


def _checks(flags: list) -> str:
    return " ".join("—" if f is None else ("yes" if f else "**no**") for f in flags)


def markdown(table: dict, names: list[str]) -> str:
    head = ["row", *[f"seed {n}" for n in names], "mean", "POST > Direct", "POST > Full ZS"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in table["rows"].items():
        unresolved = [n for n, ok in zip(names, row["resolved"]) if ok is False]
        label = name + (f" (noise at seed {', '.join(unresolved)})" if unresolved else "")
        lines.append("| " + " | ".join([label, *[_cell(g) for g in row["gaps"]], _cell(row["mean"]),
                                         _checks(row["post>direct"]), _checks(row["post>full_zs"])]) + " |")
    lines += ["", _mean_line("Mean gap closed over the", table["all"], "rows (each row's mean over its seeds)")]
    if table["resolved"]["rows"] and table["resolved"] != table["all"]:
        lines += ["", _mean_line("Without the (row, seed) measurements whose gap is noise, over the", table["resolved"], "rows")]
    per_seed = "; ".join(f"seed {n} " + ("—" if m is None else f"{m:.3f}") + f" over {k} rows" for n, (m, k) in zip(names, table["per_seed"]))
    lines += ["", f"Per seed, over the rows measured at it: {per_seed}.", "",
              "POST > Direct / > Full ZS: the verdict's check per seed, in the seeds' order (above by more than "
              "one example; — not measured). \"noise\": Full PT is not above Full ZS by two standard errors "
              "there, so that seed's gap closed has a noise denominator."]
    return "\n".join(lines) + "\n"


def _mean_line(before: str, found: dict, after: str) -> str:
    if found["mean"] is None:
        return f"{before} 0 {after}: no mean."
    line = f"{before} {found['rows']} {after}: **{found['mean']:.3f}**"
    if found["se"] is None:
        return line + " (no row measured at two seeds: no standard error)."
    return (line + f" ± {found['se']:.3f} (standard error from the seed-to-seed spread: per-row SD "
            f"{found['row_sd']:.2f}, pooled over {found['dof']} degrees of freedom).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="one suite results folder per seed")
    parser.add_argument("--names", nargs="+", help="a name per folder (default: the folder names)")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    args = parser.parse_args(argv)
    try:
        if args.names and len(args.names) != len(args.folders):
            raise BadInput(f"--names gives {len(args.names)} names for {len(args.folders)} folders: one name per folder")
        tables = []
        for folder in args.folders:
            if not folder.is_dir():
                raise BadInput(f"{folder} is not a folder: give the --results folder of a suite run per seed")
            rows = load_rows(folder)
            if not rows:
                raise BadInput(f"{folder} holds no suite row report (<row>.json): give the --results folder of a suite run")
            lacking = sorted(row for row, report in rows.items() if "gap_closed" not in report)
            if lacking:
                raise BadInput(f"{folder}: the report of {', '.join(lacking)} has no gap_closed: write it again with "
                               "post bench --suite ... --report-only")
            tables.append(rows)
    except BadInput as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = markdown(seed_table(tables), args.names or [f.name for f in args.folders])
    sys.stdout.write(text)
    if args.out:
        from engine.artifacts import write_text
        write_text(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
