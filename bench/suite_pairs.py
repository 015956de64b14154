"""Two suite tables side by side, row by row: what one change did on the rows both measured.

    python bench/suite_pairs.py bench/results/suite-select bench/results/suite-applied \
        --names "paper L2" applied
    python bench/suite_pairs.py RESULTS_A RESULTS_B --runs OUT_A OUT_B   # paired on the same test examples

Reads each directory's `<row>.json` (as `post bench --suite` writes them) and prints, for every row in
both, POST's test and validation accuracy under each, the difference, two standard errors of that
difference, gap closed and α. The standard error treats the two accuracies as independent binomials;
it overstates the noise of a difference on the same examples, so a difference inside it is "within
noise", not "no effect". With `--runs` (the two `--out` folders, whose `<row>/eval/predictions.json` the
eval keeps since 2026-12-05) each row also gets the paired test: the test examples only one side's POST
gets right, and the exact McNemar p-value.
Rows measured on different kinds of CPU are marked: float results differ in the last digits between
them, the students diverge from there, and such a pair compares boxes as well as the change.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


class BadInput(Exception):
    """One line for the user: what is wrong and how to fix it."""


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadInput(f"{path} is not readable JSON ({error.__class__.__name__}): write it again with the "
                       "command that made it, or move it out of the folder") from None


def load_rows(folder: Path) -> dict[str, dict]:
    """The folder's suite row reports (other JSON there, e.g. a table of pairs, is passed over)."""
    rows = {}
    for path in sorted(folder.glob("*.json")):
        report = _read(path)
        if isinstance(report, dict) and {"row", "accuracy", "test_examples"} <= set(report) \
                and isinstance(report["accuracy"], dict) and "post" in report["accuracy"]:
            rows[report["row"]] = report
    return rows


def two_se(p: float, q: float, n: int, m: int) -> float:
    """Two standard errors of p − q, accuracies over n and m examples, taken as independent."""
    return 2 * math.sqrt(p * (1 - p) / n + q * (1 - q) / m)


def _box(report: dict) -> str | None:
    """The kind of machine that ran the row (None: not recorded; several kinds across its stages count as one
    mixed kind, never equal to a single box)."""
    from engine.machine import report_kinds
    return " + ".join(report_kinds(report)) or None


def pair(a: dict, b: dict) -> dict:
    n = a["test_examples"]
    pa, pb = a["accuracy"]["post"], b["accuracy"]["post"]
    va, vb = (a.get("validation") or {}).get("post"), (b.get("validation") or {}).get("post")
    boxes = {_box(a), _box(b)}
    return {"test": (pa, pb, pb - pa, two_se(pa, pb, n, b["test_examples"])),
            "validation": None if va is None or vb is None else (va, vb, vb - va),
            "gap": (a.get("gap_closed"), b.get("gap_closed")),
            "alpha": ((a.get("alpha") or {}).get("post"), (b.get("alpha") or {}).get("post")),
            "same_box": None if None in boxes else len(boxes) == 1}


def paired_post(first_run: Path, second_run: Path) -> dict | None:
    """POST of two run folders on the same test examples: how many only each gets right, McNemar's p."""
    from engine.verdict import discordant, mcnemar_p
    found = []
    for run in (first_run, second_run):
        path = run / "eval" / "predictions.json"
        if not path.is_file():
            return None  # a row whose eval ran before predictions were kept: no paired test
        found.append(_read(path))
    (a, b) = found
    if a.get("labels") != b.get("labels") or "post" not in a or "post" not in b:
        return None  # not the same test examples: no paired test
    only_a, only_b = discordant(a["post"], b["post"], a["labels"])
    return {"only_first": only_a, "only_second": only_b, "p": mcnemar_p(only_a, only_b)}


def markdown(rows: dict[str, dict], names: tuple[str, str]) -> str:
    a, b = names

    def pct(x):
        return "—" if x is None else f"{100 * x:.1f}"

    def num(x):
        return "—" if x is None else f"{x:.2f}"

    def alpha(x):
        return "—" if x is None else f"{x:g}"
    with_pairs = any(p.get("paired") for p in rows.values())
    lines = [f"| row | test POST {a} | test POST {b} | Δ | 2 SE |" + (f" only {a} / only {b} (McNemar p) |" if with_pairs else "")
             + f" val. POST {a} | val. POST {b} | gap {a} | gap {b} | α {a} / {b} | one kind of CPU |",
             "|---|---|---|---|---|" + ("---|" if with_pairs else "") + "---|---|---|---|---|---|"]
    for name, p in rows.items():
        ta, tb, d, se = p["test"]
        va, vb, _ = p["validation"] or (None, None, None)
        box = {True: "yes", False: "**no**", None: "not recorded"}[p["same_box"]]
        pair = p.get("paired")
        paired_cell = ("—" if not pair else f"{pair['only_first']} / {pair['only_second']} ({pair['p']:.2g})")
        lines.append(f"| {name} | {pct(ta)} | {pct(tb)} | {100 * d:+.1f} | {100 * se:.1f} |"
                     + (f" {paired_cell} |" if with_pairs else "") + f" {pct(va)} | {pct(vb)} "
                     f"| {num(p['gap'][0])} | {num(p['gap'][1])} | {alpha(p['alpha'][0])} / {alpha(p['alpha'][1])} | {box} |")
    diffs = [p["test"][2] for p in rows.values()]
    up, down = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    gaps = [p["gap"] for p in rows.values() if None not in p["gap"]]
    lines += ["", f"{len(rows)} rows in both: {b} higher on test in {up}, lower in {down}, tied in {len(diffs) - up - down}; "
              f"mean Δ {100 * sum(diffs) / len(diffs):+.2f} points; beyond two standard errors: "
              f"{sum(abs(p['test'][2]) > p['test'][3] for p in rows.values())}."]
    if gaps:
        lines[-1] += (f" Mean gap closed {sum(g[0] for g in gaps) / len(gaps):.3f} ({a}) against "
                      f"{sum(g[1] for g in gaps) / len(gaps):.3f} ({b}).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--names", nargs=2, default=None, help="what to call the two (default: folder names)")
    parser.add_argument("--out", type=Path, help="also write the table here")
    parser.add_argument("--runs", nargs=2, type=Path, default=None,
                        help="the two suites' --out folders: a paired test from each row's eval/predictions.json")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except BadInput as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _run(args) -> int:
    for folder in (args.first, args.second):
        if not folder.is_dir():
            raise BadInput(f"{folder} is not a folder of suite row reports (give --results folders of post bench --suite)")
    for folder in args.runs or ():
        if not folder.is_dir():
            raise BadInput(f"{folder} is not a suite's run folder (give the --out folders the two suites ran under)")
    first, second = load_rows(args.first), load_rows(args.second)
    both = {row: pair(first[row], second[row]) for row in first if row in second}
    if args.runs:
        for row, found in both.items():
            found["paired"] = paired_post(args.runs[0] / row, args.runs[1] / row)
    if not both:
        raise BadInput(f"no row has a report in both {args.first} and {args.second}")
    table = markdown(both, tuple(args.names or (args.first.name, args.second.name)))
    if args.out:
        from engine.artifacts import write_text
        write_text(args.out, table)
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
