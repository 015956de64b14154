"""`post bench`: the paper's table for one preset — without DP, and with DP at the preset's ε.

    <out>/
        nodp/    a complete run folder (every method, full PT on)
        dp/      the same pipeline with [privacy] at ε (the cached student is reused)
        bench.json  bench.md  bench.png

Each block is an ordinary pipeline run, so an interrupted bench resumes stage by stage.
The report (bench.json / .md / .png) is built from the two run folders alone.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from engine import methods
from engine.artifacts import read_json_dict, write_json, write_text
from engine.config import RunConfig, validate
from engine.machine import describe
from engine.events import Metric, read_events

DEFAULT_EPSILON = 8.0
ALL_METHODS = list(methods.TRANSFER)
TABLE = methods.ORDER
STAGES = ("distill", "tune", "full_pt", "transfer", "eval")

RunBlock = Callable[[RunConfig, Path], dict | None]  # (config, run folder) → results


def block_configs(config: RunConfig) -> dict[str, RunConfig]:
    """The non-private and the private block: every method, full PT as the reference."""
    data = config.model_dump()
    data["transfer"]["methods"] = ALL_METHODS
    data["eval"]["full_pt"] = True
    nodp = json.loads(json.dumps(data))
    nodp["privacy"].update(epsilon=None, noise_multiplier=None)
    dp = json.loads(json.dumps(data))
    if dp["privacy"]["epsilon"] is None and dp["privacy"]["noise_multiplier"] is None:
        dp["privacy"]["epsilon"] = DEFAULT_EPSILON
    if dp["transfer"]["alpha"] in ("auto", "select"):
        dp["transfer"]["alpha"] = 0.0  # replaced by the non-private run's choice before the DP block runs
    return {"nodp": validate(nodp), "dp": validate(dp)}


def run_bench(config: RunConfig, out: Path, run_block: RunBlock) -> dict:
    """Run both blocks (resuming finished stages) and write the report."""
    configs = block_configs(config)
    results = {"nodp": run_block(configs["nodp"], out / "nodp")}
    dp_config, alpha_note = configs["dp"], "preset"
    if config.transfer.alpha in ("auto", "select"):
        # Under DP the pipeline refuses "auto" and "select" (it reads private validation accuracy); the DP block reuses
        # the α chosen without DP and says so: that choice is not covered by the DP block's ε.
        alpha = results["nodp"]["alpha"]["post"]
        dp_config = dp_config.model_copy(update={"transfer": dp_config.transfer.model_copy(update={"alpha": alpha})})
        alpha_note = "chosen on the non-private run's validation split (this choice is outside ε)"
    results["dp"] = run_block(dp_config, out / "dp")
    return write_report(out, config, {"nodp": configs["nodp"], "dp": dp_config}, alpha_note)


# ---------------------------------------------------------------- the report

def block_summary(run_dir: Path) -> dict:
    """results.json of one block, plus minutes and tokens per stage and each stage's loss curve."""
    results = read_json_dict(run_dir / "results.json", "results")
    tokens = {}
    for stage in ("distill", "tune", "full_pt"):
        path = run_dir / stage / "summary.json"
        if path.is_file():
            tokens[stage] = read_json_dict(path, "stage summary").get("tokens")
    transfer = [t for t in (read_json_dict(p, "transfer summary") for p in (run_dir / "transfer").glob("*.json"))
                if "method" in t]
    if transfer:
        tokens["transfer"] = sum(t.get("tokens") or 0 for t in transfer)
    # POST's own transfer cost; α = "select" (eval/alpha.json) trained α = 0, 0.5 and 1 to pick from
    used = ("output", "post", "shift") if (run_dir / "eval" / "alpha.json").is_file() else ("post",)
    post_seconds = sum(t.get("seconds") or 0 for t in transfer if t.get("method") in used)
    minutes = {s: round(v / 60, 2) for s, v in results["seconds"].items()}
    minutes["total"] = round(sum(results["seconds"].values()) / 60, 2)
    minutes["transfer_post"] = round(post_seconds / 60, 2)  # POST's own cost, without the other methods
    return {**results, "minutes": minutes, "tokens": tokens, "loss_curves": loss_curves(run_dir)}


def loss_curves(run_dir: Path) -> dict[str, list[list[float]]]:
    """stage → [[step, loss], ...] from the run's event log (only the latest attempt of each stage)."""
    curves: dict[str, list[list[float]]] = {}
    for event in read_events(run_dir / "events.jsonl"):
        if isinstance(event, Metric) and event.name == "loss":
            curve = curves.setdefault(event.stage, [])
            if curve and event.step <= curve[-1][0]:
                curve.clear()  # a stage run again (resume): keep the last attempt
            curve.append([event.step, round(event.value, 5)])
    return curves


def write_report(out: Path, config: RunConfig, configs: dict[str, RunConfig], alpha_note: str) -> dict:
    blocks = {name: block_summary(out / name) for name in configs}
    report = {
        "preset": config.name, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": describe(), "large": config.models.large, "task": config.task.source,
        "public": config.public.source, "epsilon": configs["dp"].privacy.epsilon,
        "alpha_source": alpha_note, **blocks,
    }
    write_json(out / "bench.json", report)
    write_text(out / "bench.md", markdown(report))
    plot(report, out / "bench.png")
    return report


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def markdown(report: dict) -> str:
    """The table in the paper's layout, then cost per stage."""
    eps = report["epsilon"]
    lines = [f"# POST benchmark: {report['preset']}", "",
             f"{report['large']} · private `{report['task']}` · public `{report['public']}` · "
             f"{report['date']} · {report['machine']['platform']}", "",
             "| setting | Full ZS | Full PT | CPT | Direct | POST | output | shift | inference | gap closed | α |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, label in (("nodp", "no DP"), ("dp", f"DP ε={eps:g}" if eps else "DP")):
        b = report[name]
        acc = b["accuracy"]
        gap = "—" if b["gap_closed"] is None else f"{b['gap_closed']:.2f}"
        spent = b.get("privacy") or {}
        if spent.get("epsilon") is not None:
            label += f" (spent {spent['epsilon']:.2f})"
        lines.append(f"| {label} | " + " | ".join(_pct(acc.get(m)) for m in TABLE) +
                     f" | {gap} | {b['alpha'].get('post', '—')} |")
    lines += ["", f"Accuracy % on the private test split ({report['nodp']['test_examples']} examples). "
              "Gap closed = (POST − Full ZS) / (Full PT − Full ZS). "
              f"α for the DP block: {report['alpha_source']}.", "",
              "| setting | " + " | ".join(STAGES) + " | total |", "|---|" + "---|" * (len(STAGES) + 1)]
    for name in ("nodp", "dp"):
        m = report[name]["minutes"]
        lines.append(f"| {name} minutes | " + " | ".join(f"{m.get(s, 0):.2f}" for s in STAGES) + f" | {m['total']:.2f} |")
        t = report[name]["tokens"]
        lines.append(f"| {name} tokens | " + " | ".join(f"{t[s]:,}" if t.get(s) else "—" for s in STAGES) + " | |")
    cost = cost_ratio(report["nodp"])
    if cost:
        lines += ["", f"POST (tune on the student + transfer) vs prompt tuning the large model: "
                      f"{cost['post_minutes']:.2f} vs {cost['full_pt_minutes']:.2f} min, {cost['ratio']:.1f}× cheaper "
                      "(POST's transfers only — three with α = \"select\"; full PT here runs eval.full_pt_steps, "
                      "see bench/post_vs_fullpt.py for the same private epochs)."]
    return "\n".join(lines) + "\n"


def cost_ratio(block: dict) -> dict | None:
    m = block["minutes"]
    post = m.get("tune", 0) + m.get("transfer_post", m.get("transfer", 0))
    if not post or not m.get("full_pt"):
        return None
    return {"post_minutes": post, "full_pt_minutes": m["full_pt"], "ratio": m["full_pt"] / post}


def plot(report: dict, path: Path) -> None:
    """Accuracy bars for both blocks, and each stage's loss curve (solid: no DP, dashed: DP)."""
    import matplotlib
    matplotlib.use("Agg")  # headless: no display on a GPU box over SSH
    import matplotlib.pyplot as plt
    curves = sorted({s for b in ("nodp", "dp") for s in report[b]["loss_curves"]},
                    key=lambda s: (STAGES.index(s.split(":")[0]) if s.split(":")[0] in STAGES else 99, s))
    cols = 3
    rows = 1 + (len(curves) + cols - 1) // cols
    fig = plt.figure(figsize=(4.2 * cols, 3.2 * rows))
    ax = fig.add_subplot(rows, 1, 1)
    methods = [m for m in TABLE if any(m in report[b]["accuracy"] for b in ("nodp", "dp"))]
    width = 0.4
    for k, (name, label) in enumerate((("nodp", "no DP"), ("dp", f"DP ε={report['epsilon']:g}"))):
        values = [100 * report[name]["accuracy"].get(m, 0) for m in methods]
        ax.bar([i + (k - 0.5) * width for i in range(len(methods))], values, width, label=label)
    ax.set_xticks(range(len(methods)), methods)
    ax.set_ylabel("test accuracy %")
    ax.set_title(f"{report['preset']}: {report['large']} on {report['task']}")
    ax.legend()
    for i, stage in enumerate(curves):
        sub = fig.add_subplot(rows, cols, cols + i + 1)
        for name, style in (("nodp", "-"), ("dp", "--")):
            points = report[name]["loss_curves"].get(stage)
            if points:
                sub.plot([p[0] for p in points], [p[1] for p in points], style, label=name, linewidth=1)
        sub.set_title(stage, fontsize=9)
        sub.set_xlabel("step", fontsize=8)
        sub.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def default_out(config: RunConfig) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path(config.runtime.out_dir) / f"bench-{config.name}-{stamp}"
