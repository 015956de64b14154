"""One suite table repeated over seeds: each row's gap closed per seed, its mean, and the table's mean
with the standard error the seed-to-seed variation gives it.

    python bench/suite_seeds.py bench/results/suite-applied bench/results/suite-applied-seed1 \
        --names 0 1 --out bench/results/suite-seeds.md

Each folder holds one seed's `<row>.json` (as `post bench --suite ... --set runtime.seed=S --results
FOLDER` writes them). A seed redraws the whole experiment — the task's samples, the public set, the
distillation corpus and the student — so the spread over seeds is the noise of one table's row.

The table's mean is taken over the rows measured at every seed (the mean of their per-seed means). Its
standard error treats the tasks as fixed and the seeds as the noise: the within-row variance over seeds,
pooled over those rows (each row's sample variance, averaged), divided by (seeds × rows). With two seeds
each row's variance rests on one difference, so the error itself is rough; the line says how many rows
and seeds it rests on.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from bench.suite_pairs import BadInput, load_rows  # noqa: E402  (one reader of suite reports)


def seed_table(tables: list[dict[str, dict]]) -> dict:
    """Per row: the gap closed at each seed (None where not measured), their mean, and the verdict's
    POST-above checks per seed; overall: the mean over rows measured at every seed, and its error."""
    from engine.suite import _passed, gap_resolved
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
            "post>direct": [None if r is None else _passed(r, "post_above_direct") for r in reports],
            "post>full_zs": [None if r is None else _passed(r, "post_above_zero_shot") for r in reports],
            "resolved": [None if r is None else gap_resolved(r) for r in reports],
        }
    complete = [name for name, row in rows.items() if all(g is not None for g in row["gaps"])]
    return {"seeds": len(tables), "rows": rows, "complete": complete, **_mean_and_error(rows, complete, len(tables))}


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


def _mean_and_error(rows: dict[str, dict], complete: list[str], seeds: int) -> dict:
    if not complete:
        return {"mean": None, "se": None, "per_seed_means": [None] * seeds}
    per_seed = [sum(rows[n]["gaps"][s] for n in complete) / len(complete) for s in range(seeds)]
    mean = sum(rows[n]["mean"] for n in complete) / len(complete)
    if seeds < 2:
        return {"mean": mean, "se": None, "per_seed_means": per_seed}
    variances = [sum((g - rows[n]["mean"]) ** 2 for g in rows[n]["gaps"]) / (seeds - 1) for n in complete]
    pooled = sum(variances) / len(variances)
    return {"mean": mean, "se": math.sqrt(pooled / (seeds * len(complete))), "per_seed_means": per_seed,
            "row_sd": math.sqrt(pooled)}


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
    done = table["complete"]
    lines.append("")
    if table["mean"] is None:
        lines.append("No row is measured at every seed: no mean over seeds.")
        return "\n".join(lines) + "\n"
    per_seed = ", ".join(f"seed {n} {m:.3f}" for n, m in zip(names, table["per_seed_means"]))
    text = (f"Mean gap closed over the {len(done)} rows measured at all {table['seeds']} seeds: "
            f"**{table['mean']:.3f}** ({per_seed})")
    if table["se"] is not None:
        text += (f"; standard error ±{table['se']:.3f} from the seed-to-seed spread (per-row SD "
                 f"{table['row_sd']:.2f}, pooled over {len(done)} rows, {table['seeds']} seeds each)")
    lines.append(text + ".")
    missing = [n for n in table["rows"] if n not in done]
    if missing:
        lines.append("")
        lines.append(f"Not measured at every seed (in the row means, not in the table's): {', '.join(missing)}.")
    lines.append("")
    lines.append("POST > Direct / > Full ZS: the verdict's check per seed, in the seeds' order (above by more than "
                 "one example; — not measured). \"noise\": Full PT is not above Full ZS by two standard errors "
                 "there, so that seed's gap closed has a noise denominator.")
    return "\n".join(lines) + "\n"


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
