"""`post bench --suite NAME`: one method, many tasks — the generality table.

A suite (presets/suites/<name>.toml) is a list of rows, each a task card and a large model. Every
row is an ordinary pipeline run of the suite's `base` preset with only the task card, the large
model and the suite-wide `[all]` settings changed, so no row is tuned for its task:

    <out>/<row>/         a run folder per row (re-running the suite resumes it stage by stage)
    <results>/<row>.json  one report per row (accuracy on test, validation accuracy, minutes)

A task card may set only what defines a task (its data, template, label words, prompt init, the
public set and the cue the student is distilled with); a method key there is refused, so the
"no per-task tuning" promise is checked, not just stated.
"""
from __future__ import annotations

import copy
import difflib
import math
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from engine.config import RunConfig, apply_overrides, validate
from engine.errors import PostError
from engine.presets import preset_data

# what a task card may set: the task, never the method
TASK_KEYS = ("task.", "public.source", "public.prefix", "public.template", "public.split", "public.text_field",
             "distill.template")
ROW_KEYS = {"name", "task", "large"}

RunRow = Callable[[str, RunConfig, Path], dict | None]  # (row name, config, run folder) → results


def suite_names() -> list[str]:
    folder = resources.files("presets") / "suites"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def suite_data(name: str) -> dict[str, Any]:
    """A shipped suite by name, or a suite TOML file by path."""
    path = Path(name)
    if path.suffix == ".toml" and path.is_file():
        text = path.read_text(encoding="utf-8")
    else:
        names = suite_names()
        if name not in names:
            near = difflib.get_close_matches(name, names, n=1)
            raise PostError(f"unknown suite {name!r}: " +
                            (f"did you mean {near[0]}?" if near else f"available: {', '.join(names)}"))
        text = (resources.files("presets") / "suites" / f"{name}.toml").read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise PostError(f"suite {name}: not valid TOML: {err}") from None
    data.setdefault("name", path.stem if path.suffix == ".toml" else name)
    return data


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = copy.deepcopy(value)


def _check_card(suite: str, task: str, card: dict[str, Any]) -> None:
    for key in card:
        if not key.startswith(TASK_KEYS):
            raise PostError(f"suite {suite}, task card {task}: {key} is a method setting, not part of a task "
                            f"(a card may set task.*, public.source/prefix/template/split/text_field, distill.template)")


def row_configs(name: str, only: list[str] | None = None, overrides: list[str] | None = None) -> dict[str, RunConfig]:
    """row name → the validated config of that row, in the suite's order."""
    suite = suite_data(name)
    if not isinstance(suite.get("rows"), list) or not suite["rows"]:
        raise PostError(f"suite {name}: no [[rows]]")
    base = preset_data(suite.get("base", "demo"))
    tasks = suite.get("tasks", {})
    rows: dict[str, RunConfig] = {}
    for row in suite["rows"]:
        extra = set(row) - ROW_KEYS
        if extra or not ROW_KEYS <= set(row):
            raise PostError(f"suite {name}: each row has exactly name, task and large (got {sorted(row)})")
        if row["task"] not in tasks:
            raise PostError(f"suite {name}, row {row['name']}: no task card [tasks.{row['task']}]")
        _check_card(name, row["task"], tasks[row["task"]])
        data = copy.deepcopy(base)
        for dotted, value in {**suite.get("all", {}), **tasks[row["task"]], "models.large": row["large"]}.items():
            _set(data, dotted, value)
        data["name"] = row["name"]
        data["description"] = f"suite {name}: task {row['task']} on {row['large']}"
        rows[row["name"]] = validate(apply_overrides(data, list(overrides or [])))
    if only:
        unknown = [r for r in only if r not in rows]
        if unknown:
            raise PostError(f"suite {name} has no row {unknown[0]!r}: rows are {', '.join(rows)}")
        rows = {r: rows[r] for r in rows if r in only}
    return rows


# ---------------------------------------------------------------- running the rows

def run_suite(name: str, out: Path, results_dir: Path, run_row: RunRow, only: list[str] | None = None,
              overrides: list[str] | None = None, validation: bool = True,
              after_row: Callable[[dict], None] | None = None) -> dict:
    """Run (or resume) every row, then write `<results_dir>/<row>.json`; returns the suite report.

    A row whose run finished for the same inputs is not run again (its test eval would cost minutes
    per row for the same numbers); an interrupted one resumes stage by stage. `after_row` gets the
    report so far after each row (the table is current even if a later row is interrupted). Rows left
    out by `only` (another process may be running them) are in every report while their stored
    `<row>.json` is current — read again each time, so one results folder holds one table of every
    finished row, whichever process ran it, under whichever `--out`, and whichever finished last."""
    from engine.artifacts import write_json
    configs = row_configs(name, None, overrides)
    chosen = row_configs(name, only, overrides) if only else configs
    out, results_dir = Path(out), Path(results_dir)
    for row, config in chosen.items():  # before any row runs: another configuration's live report is not replaced
        _check_not_anothers(row, config, out / row, results_dir / f"{row}.json")
    done: dict[str, dict] = {}

    def report() -> dict:
        return _report(name, {**_stored_reports(configs, set(chosen), results_dir), **done}, configs)

    for row, config in chosen.items():
        run_dir = out / row
        if not finished(config, run_dir):
            run_row(row, config, run_dir)
        done[row] = row_report(name, row, config, run_dir, validation)
        write_json(results_dir / f"{row}.json", done[row])
        if after_row is not None:
            after_row(report())
    return report()


def _check_not_anothers(row: str, config: RunConfig, run_dir: Path, path: Path) -> None:
    """Refuse to write `<row>.json` over the report of another configuration of the row (another --set, e.g. a
    seed) whose run folder, elsewhere, still holds the results it reports: two suites given one --results would
    otherwise replace each other's finished rows, and each table would drop the other's without a word."""
    from engine.artifacts import DamagedArtifact, read_json_dict, sha256_file
    if not path.is_file():
        return
    try:
        report = read_json_dict(path, "suite row report")
    except DamagedArtifact:
        return  # a damaged report is replaced by this row's
    theirs = report.get("run_dir")
    if report.get("row") != row or report.get("config_digest") in (None, config_digest(config)) or \
            not isinstance(theirs, str) or Path(theirs).resolve() == run_dir.resolve():
        return
    results = Path(theirs) / "results.json"
    if results.is_file() and report.get("results_sha256") == sha256_file(results):
        raise PostError(f"{path} is row {row}'s report under another configuration (other --set or suite settings), "
                        f"from {theirs}, which still holds it: give this configuration its own --results folder, or "
                        f"delete {path} to replace it")


def stored_table(name: str, results_dir: Path, overrides: list[str] | None = None) -> dict:
    """The suite report from the stored `<row>.json` alone (`post bench --suite … --report-only`): runs
    nothing and loads no model, so the table of rows measured in several sessions can be written again."""
    configs = row_configs(name, None, overrides)
    return _report(name, _stored_reports(configs, set(), Path(results_dir)), configs)


def _stored_reports(configs: dict[str, RunConfig], skip: set[str], results_dir: Path) -> dict[str, dict]:
    """Each row's stored report, checked against the run folder it names — not against this invocation's
    `--out`: rows of one results folder may have run under several (a seed's rows split across lanes, a
    row run again elsewhere), and one `--row` under a new `--out` must not drop the others from the table."""
    return {row: found for row, config in configs.items() if row not in skip
            for found in [stored_report(row, config, results_dir / f"{row}.json")] if found}


def config_digest(config: RunConfig) -> str:
    """What a row's results depend on: its config less the `runtime` settings that say how (threads, device),
    with those that say what (RESULT_RUNTIME: seed, dtype) — each only where it differs from its default, so
    the reports written before they counted stay current for the default and a seed-1 repeat is another row."""
    from engine.config import RuntimeConfig, result_runtime, stable_dump
    from engine.records import digest
    data = {k: v for k, v in stable_dump(config).items() if k != "runtime"}
    changed = {key: value for key, value in result_runtime(config).items()
               if value != RuntimeConfig.model_fields[key].default}
    return digest({**data, "runtime": changed} if changed else data)


REPORT_KEYS = ("row", "config_digest", "run_dir", "accuracy", "test_examples", "classes", "minutes")


def stored_report(row: str, config: RunConfig, path: Path) -> dict | None:
    """`<row>.json` as an earlier invocation wrote it, if it still describes the run folder it names (absolute
    since 2026-12-07; an older relative one is read from the working directory): made for this row and
    config, under whichever `--out`, from the results.json that is there now (its sha256), and the run's
    records say it finished. Cheap on purpose — no model is loaded for a row this process does not run.

    Where there is no run folder at the report's `run_dir` (another machine, an earlier session: the
    reports in bench/results are the archive) the report stands if it was made for this row and config
    and, where it records them, under this config's α rule and today's selection rule; `archived` is set
    and the table marks the row. A folder that is there but changed always wins. Gap closed and the
    verdict are computed again from the accuracies either way (from results.json where it is there)."""
    from engine.artifacts import read_json_dict, sha256_file
    if not path.is_file():
        return None
    report = read_json_dict(path, "suite row report")
    if not {"row", "config_digest", "run_dir"} <= set(report):
        return None  # written before reports carried their inputs: it cannot be matched to this config
    missing = [key for key in REPORT_KEYS if key not in report]
    if missing:
        raise PostError(f"suite row report {path} lacks {', '.join(missing)}: delete it and run the row again "
                        f"(--row {row}) so its report is written anew")
    problem = _report_problem(report)
    if problem:  # a wrong type would stop the table in a traceback (or put a made-up number in it)
        raise PostError(f"suite row report {path} is damaged ({problem}): delete it and run the row again "
                        f"(--row {row}) so its report is written anew")
    if report["row"] != row or report["config_digest"] != config_digest(config):
        return None
    run_dir = Path(str(report["run_dir"]))
    archived = not run_dir.exists()
    if not archived and not _records_finished(config, run_dir):
        return None
    if archived:
        current = _rules_current(config, report.get("alpha_rule"), report.get("alpha_choice"),
                                 choice_required="alpha_choice" in report)
        return _rescored({**report, "archived": True}) if current else None
    if report.get("results_sha256") != sha256_file(run_dir / "results.json"):
        return None
    results = read_json_dict(run_dir / "results.json", "results")
    return _rescored({**report, "accuracy": results["accuracy"], "test_examples": results["test_examples"],
                      "paired": results.get("paired"), "class_shares": results.get("class_shares"),
                      "majority": results.get("majority")})


def _report_problem(report: dict) -> str:
    """What is wrong with the fields of a stored row report that the table reads ("" when nothing is)."""
    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    def count(v, least: int) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= least
    if not all(isinstance(report[k], str) for k in ("row", "config_digest", "run_dir")):
        return "row, config_digest and run_dir are texts"
    accuracy = report["accuracy"]
    if not isinstance(accuracy, dict) or not all(isinstance(k, str) and number(v) and 0 <= v <= 1
                                                 for k, v in accuracy.items()):
        return "accuracy maps each method to a number in [0, 1]"
    if not count(report["test_examples"], 1) or not count(report["classes"], 2):
        return "test_examples is a whole number ≥ 1 and classes one ≥ 2"
    if not isinstance(report["minutes"], dict) or not all(number(v) for v in report["minutes"].values()):
        return "minutes maps each stage to a number"
    for key in ("paired", "majority", "class_shares", "validation", "alpha_choice"):
        if report.get(key) is not None and not isinstance(report[key], dict):
            return f"{key} is an object or null"
    return ""


def _rules_current(config: RunConfig, rule, choice: dict | None, choice_required: bool = True) -> bool:
    """The eval's α rule is this config's (None: written before the field), and under "select" its choice
    was made by the rule the engine applies now. An archived report written before it carried its
    choice (2026-12-04) passes `choice_required=False`: there is nothing left to check it against."""
    if rule is not None and rule != config.transfer.alpha:  # e.g. evaluated at α = 0.5, now "select": eval again
        return False
    if config.transfer.alpha != "select":
        return True
    return _same_choice_now(choice) if choice is not None else not choice_required


def _rescored(report: dict) -> dict:
    """Gap closed and the verdict from the report's accuracies, not as stored: the table cannot disagree
    with its own numbers."""
    from engine import verdict
    return {**report, "gap_closed": gap_closed(report["accuracy"]),
            "verdict": verdict.judge(report, report.get("class_names"))}


def _report(name: str, rows: dict[str, dict], configs: dict[str, RunConfig]) -> dict:
    rows = {row: rows[row] for row in configs if row in rows}  # the suite's order, whoever ran which row
    return {"suite": name, "rows": rows, "not_run": [r for r in configs if r not in rows], "summary": summary(rows)}


def finished(config: RunConfig, run_dir: Path) -> bool:
    """The run's records say it finished (below), and each stage's record says it finished for this
    config's inputs (loads what the input fingerprints need: models, data)."""
    from engine.context import RunContext
    from engine.pipeline import stages_for, why_rerun
    if not _records_finished(config, run_dir):
        return False
    ctx = RunContext(config=config, run_dir=run_dir)
    return all(why_rerun(ctx, stage) is None for stage in stages_for(config)[:-1])


def _records_finished(config: RunConfig, run_dir: Path) -> bool:
    """results.json is there, eval finished after every other stage, under this config's α rule — and
    under "select", by the selection rule the engine applies now."""
    from engine import records
    from engine.artifacts import read_json_dict
    from engine.pipeline import stages_for
    eval_record = run_dir / "eval" / records.RECORD
    if not (run_dir / "results.json").is_file() or not eval_record.is_file():
        return False
    if (records.read(run_dir / "eval") or {}).get("status") != records.COMPLETED:
        return False
    rule = read_json_dict(run_dir / "results.json", "results").get("alpha_rule")  # None: written before the field
    choice = run_dir / "eval" / "alpha.json"
    if not _rules_current(config, rule, read_json_dict(choice, "α choice") if choice.is_file() else None):
        return False
    for stage in stages_for(config)[:-1]:
        record = run_dir / stage / records.RECORD
        if not record.is_file() or record.stat().st_mtime_ns > eval_record.stat().st_mtime_ns:
            return False
    return True


def _same_choice_now(choice: dict) -> bool:
    """Whether the current selection rule would choose as `choice` did: made by it, or by the earlier rule
    without a tie for the best accuracy — the rules differ only in how a tie is settled, so such a
    choice is not made again (an eval costs many minutes per row)."""
    from engine import alpha
    if choice.get("rule") == alpha.RULE:
        return True
    accuracy = choice.get("validation") or {}
    best = max(accuracy.values(), default=None)
    return choice.get("rule") == alpha.EARLIER_RULE and list(accuracy.values()).count(best) == 1 \
        and accuracy.get(choice.get("method")) == best


def validation_accuracy(config: RunConfig, run_dir: Path) -> dict[str, float]:
    """Every method's accuracy on the private *validation* split — what a default may be chosen on
    (test is only reported). Cached in eval/validation.json, keyed by the prompts and student it scored."""
    from engine import artifacts, records
    from engine.context import RunContext
    from engine.evaluate import evaluate_methods
    key = records.digest(_scored_inputs(config, run_dir))
    path = run_dir / "eval" / "validation.json"
    if path.is_file():
        cached = artifacts.read_json_dict(path, "validation accuracy")
        if cached.get("key") == key:
            return cached["accuracy"]
    if config.runtime.threads:
        import torch
        torch.set_num_threads(config.runtime.threads)
    accuracy = evaluate_methods(RunContext(config=config, run_dir=run_dir), "validation")
    artifacts.write_json(path, {"key": key, "accuracy": accuracy})
    return accuracy


def as_selected(config: RunConfig, run_dir: Path, accuracy: dict[str, float]) -> dict[str, float]:
    """Under `transfer.alpha = "select"` POST is the candidate the eval chose (eval/alpha.json), on
    validation as on test — not the α = 0.5 prompt that `transfer/post.safetensors` holds."""
    from engine import artifacts
    if config.transfer.alpha != "select":
        return accuracy
    path = run_dir / "eval" / "alpha.json"
    if not path.is_file():
        from engine.errors import PostError
        raise PostError(f"{run_dir}: transfer.alpha = \"select\" but the eval chose no α there (no {path.name}): "
                        f"run post eval {run_dir}")
    chosen = artifacts.read_json_dict(path, "α choice")["method"]
    return {**accuracy, "post": accuracy[chosen]}


def _scored_inputs(config: RunConfig, run_dir: Path) -> dict:
    from engine import artifacts
    prompts = {str(p.relative_to(run_dir)): artifacts.sha256_file(p)
               for stage in ("tune", "full_pt", "transfer") for p in sorted((run_dir / stage).glob("*.safetensors"))}
    student = run_dir / "distill" / "student.json"
    return {"task": config.task.model_dump(), "eval": config.eval.model_dump(), "methods": config.transfer.methods,
            "large": config.models.large, "prompts": prompts,
            "student": artifacts.read_json_dict(student, "student").get("key") if student.is_file() else config.models.small}


def gap_closed(accuracy: dict[str, float], method: str = "post") -> float | None:
    zs, pt = accuracy.get("full_zs"), accuracy.get("full_pt")
    if zs is None or pt is None or method not in accuracy or pt == zs:
        return None
    return (accuracy[method] - zs) / (pt - zs)


def row_report(suite: str, row: str, config: RunConfig, run_dir: Path, validation: bool = True) -> dict:
    from datetime import datetime, timezone

    from engine import records, verdict
    from engine.artifacts import read_json_dict, sha256_file
    from engine.config import result_runtime
    results = read_json_dict(run_dir / "results.json", "results")
    minutes = {stage: round(s / 60, 2) for stage, s in results["seconds"].items()}
    minutes["total"] = round(sum(results["seconds"].values()) / 60, 2)
    val = as_selected(config, run_dir, validation_accuracy(config, run_dir)) if validation else None
    return {"suite": suite, "row": row, "task": config.task.source, "large": config.models.large,
            "student": config.models.small or None,  # None: distilled from the large model (method.distill says how)
            "public": config.public.source, "run_dir": str(run_dir.resolve()),
            # when the row's results were written (a report of a finished row does not re-date it)
            "date": datetime.fromtimestamp((run_dir / "results.json").stat().st_mtime, timezone.utc).isoformat(timespec="seconds"),
            # the machine that ran eval, and every kind that ran one of the row's stages (a resumed folder can mix)
            "machine": (records.read(run_dir / "eval") or {}).get("machine"), "machines": stage_machines(config, run_dir),
            "runtime": result_runtime(config),
            "config_digest": config_digest(config), "results_sha256": sha256_file(run_dir / "results.json"),
            "accuracy": results["accuracy"], "gap_closed": results["gap_closed"],
            "validation": val, "validation_gap_closed": gap_closed(val) if val else None,
            "alpha": results["alpha"], "alpha_rule": results.get("alpha_rule"), "alpha_choice": _choice(run_dir),
            "minutes": minutes, "test_examples": results["test_examples"],
            "classes": len(config.task.label_words), "diagnostics": _diagnostics(run_dir),
            "paired": results.get("paired"),  # POST against direct and zero-shot on the same examples (None: before 2026-12-05)
            "class_shares": results.get("class_shares"),  # each class's share of the test split (None: before 2026-12-06)
            "class_names": verdict.class_names(config.task.label_words),
            "majority": results.get("majority"),  # the most common training class said every time (None: before 2026-12-06)
            "verdict": verdict.judge(results, verdict.class_names(config.task.label_words)),
            "method": {k: getattr(config, k).model_dump() for k in ("distill", "tune", "transfer")}}


def stage_machines(config: RunConfig, run_dir: Path) -> list[str]:
    """The kinds of machine (engine.machine.label) that ran the row's stages, as their records say; records
    written before they named the machine add nothing."""
    from engine import records
    from engine.machine import label
    from engine.pipeline import stages_for
    kinds = {label((records.read(run_dir / stage) or {}).get("machine")) for stage in stages_for(config)}
    return sorted(kind for kind in kinds if kind)


def _choice(run_dir: Path) -> dict | None:
    """How `select` chose (rule, method, validation accuracy per candidate), so an archived report can be
    checked against the rule the engine applies later."""
    from engine.artifacts import read_json_dict
    path = run_dir / "eval" / "alpha.json"
    if not path.is_file():
        return None
    found = read_json_dict(path, "α choice")
    return {k: found.get(k) for k in ("rule", "method", "validation")}


def _diagnostics(run_dir: Path) -> dict | None:
    """The run's pre-transfer diagnostics (values and checks): beside each row's gap closed they are the
    evidence the diagnostics' thresholds are set from."""
    from engine import diagnostics
    from engine.artifacts import read_json_dict
    path = run_dir / diagnostics.FILE
    if not path.is_file():
        return None
    found = read_json_dict(path, "diagnostics")
    return {"values": found.get("values"), "warnings": [c["name"] for c in found.get("checks", [])
                                                        if c.get("status") == "warning"]}


def summary(rows: dict[str, dict]) -> dict:
    """What the issue's goals ask of the table: mean gap closed, POST above Direct and Full ZS per row
    (the verdict's checks: above by more than one example)."""
    gaps = [r["gap_closed"] for r in rows.values() if r["gap_closed"] is not None]
    beats = {name: {"post>direct": _passed(r, "post_above_direct"), "post>full_zs": _passed(r, "post_above_zero_shot")}
             for name, r in rows.items()}
    capped = [min(g, 1.0) for g in gaps]  # a row above 1 says its Full PT reference is weak, not that POST beats it
    unresolved = [name for name, r in rows.items() if not gap_resolved(r)]
    resolved = [r["gap_closed"] for name, r in rows.items() if r["gap_closed"] is not None and name not in unresolved]
    return {"rows": len(rows), "mean_gap_closed": _mean(gaps), "mean_gap_closed_capped": _mean(capped),
            "gap_unresolved": unresolved, "mean_gap_closed_resolved": _mean(resolved) if unresolved else None,
            "post_above": beats, "paired": paired_outcomes(rows), "majority": majority_outcomes(rows)}


def majority_outcomes(rows: dict[str, dict]) -> dict[str, list[str]]:
    """The rows whose POST does not beat saying the most common training class every time, those whose full PT
    does not either (their gap closed measures calibration), and those without the baseline (older reports)."""
    out = {"post_not_above": [], "full_pt_not_above": [], "unknown": []}
    for name, row in rows.items():
        check = next((c for c in row.get("verdict") or [] if c.get("name") == "post_above_majority"), None)
        if check is None:
            out["unknown"].append(name)
        elif check["status"] == "warning":
            out["post_not_above"].append(name)
            if check.get("full_pt_above") is False:
                out["full_pt_not_above"].append(name)
    return out


SIGNIFICANT = 0.05  # the paired test's level for the table's line (each row's p-value is in its report)


def paired_outcomes(rows: dict[str, dict]) -> dict[str, dict[str, list[str]]]:
    """Per comparison (POST vs direct, vs zero-shot): the rows where POST is above or below the other by the
    exact McNemar test at SIGNIFICANT, those where the test cannot tell, and those with no paired counts
    (reports written before the eval kept its predictions)."""
    from engine.verdict import PAIRED_WITH
    out = {other: {"above": [], "below": [], "undecided": [], "not_paired": []} for other in PAIRED_WITH}
    for name, row in rows.items():
        for other in PAIRED_WITH:
            pair = (row.get("paired") or {}).get(other)
            if not pair:
                out[other]["not_paired"].append(name)
            elif pair["p"] >= SIGNIFICANT:
                out[other]["undecided"].append(name)
            else:
                out[other]["above" if pair["only_post"] > pair["only_" + other] else "below"].append(name)
    return out


def gap_resolved(row: dict) -> bool:
    """Whether Full PT is above Full ZS on test by more than two standard errors of the difference of two
    accuracies on the row's n examples (as if independent: reports before 2026-12-05 keep no per-example
    predictions, and the paired error would be smaller, so this names more rows, not fewer). Otherwise the denominator of gap
    closed is noise, or Full PT is no reference, and a few examples swing the ratio past ±1 (bbc-gemma3:
    88.3 → 90.6 on 213 articles, 2 SE = 5.9 points). Above it the ratio is still uncertain, only its sign
    is not."""
    accuracy = row.get("accuracy") or {}
    zs, pt, n = accuracy.get("full_zs"), accuracy.get("full_pt"), row.get("test_examples")
    if zs is None or pt is None or not n:
        return False
    return pt - zs > 2 * math.sqrt((zs * (1 - zs) + pt * (1 - pt)) / n)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _passed(row: dict, check: str) -> bool | None:
    """The row's verdict on `check`; None where it was not judged (a method not scored)."""
    found = {c["name"]: c["status"] for c in row.get("verdict") or []}
    return None if check not in found else found[check] == "ok"
