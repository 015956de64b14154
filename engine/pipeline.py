"""The whole run: distill → tune → (full PT) → transfer → eval, in one run folder.

    runs/<preset>-<UTC time>/
        config.toml  events.jsonl  results.json
        distill/  tune/  full_pt/  transfer/  eval/

Each stage can also run alone on an existing folder (`post tune RUN_DIR`), so the model owner
and the user each run only their own stages. Each stage writes `<stage>/done.json` last
(engine.records); a resumed run skips a stage only when that record says it finished for the
same inputs, and otherwise says why it runs again. Long stages continue from their checkpoint.
"""
from __future__ import annotations

import os
import shutil
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import torch

from engine import alpha as alpha_policy
from engine import artifacts, fingerprints, loading, methods, prospect, ranks, records, verdict
from engine.config import RunConfig, to_toml
from engine.context import RunContext, pick_device
from engine.data.generated import GENERATED
from engine.parties import WITHHELD
from engine.audit.stage import run_audit
from engine.distill import run_distill
from engine.errors import PostError, os_problem
from engine.events import (EventBus, JsonlWriter, PrivacySpent, RunFailed, RunFinished, RunStarted, StageFailed,
                           StageFinished, StageStarted)
from engine.evaluate import EvalProgress, eval_batches_needed, evaluate_methods
from engine.memory import MemoryMonitor
from engine.runlock import LOCK, RunLock
from engine.transfer import finished_methods, run_transfer
from engine.tune import run_full_pt, run_tune

STAGES = ("distill", "tune", "full_pt", "transfer", "eval")


class Cancelled(Exception):
    pass


def new_run_dir(config: RunConfig, out: Path | None = None) -> Path:
    if out is not None:
        return Path(out)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path(config.runtime.out_dir) / f"{config.name}-{stamp}"


def stages_for(config: RunConfig) -> list[str]:
    stages = ["distill"] if config.distills else []
    stages.append("tune")
    if config.eval.full_pt:
        stages.append("full_pt")
    stages += ["transfer", "eval"]
    return stages


def stage_done(ctx: RunContext, stage: str) -> bool:
    return why_rerun(ctx, stage) is None


def why_rerun(ctx: RunContext, stage: str) -> str | None:
    """None when the stage's record says it finished for the inputs of this run; else why it runs."""
    folder = ctx.run_dir / stage
    if stage == "eval":
        return "eval always runs"
    alpha = None
    if stage == "transfer":
        alpha = alpha_policy.transfer_alpha(ctx)
        if alpha is None:
            return "alpha = \"auto\" has not been chosen on the user's side yet"
    reason = records.why_not_done(folder, fingerprints.stage_inputs(ctx, stage, alpha))
    if reason is not None and reason.startswith(records.INPUTS_CHANGED):
        with fingerprints.keys_before_2026_12_07():  # a record an earlier post wrote, for these same inputs
            if records.why_not_done(folder, fingerprints.stage_inputs(ctx, stage, alpha)) is None:
                return None
    return reason


def run_eval(ctx: RunContext, seconds: dict[str, float]) -> dict:
    cfg = ctx.config
    select = cfg.transfer.alpha == "select"
    total = (eval_batches_needed(ctx, "validation", tuple(methods.SELECT_CANDIDATES)) if select else 0) + \
        eval_batches_needed(ctx, "test")
    progress = EvalProgress(ctx, total)
    ctx.emit(StageStarted(stage="eval", total_steps=total, description="accuracy on the private test split"))
    start = time.time()
    selected = alpha_policy.select(ctx, progress) if select else None
    predictions: dict[str, list[int]] = {}  # each test example's predicted class per method: paired comparisons
    if selected and selected["method"] != "post":
        names = {"full_zs", "full_pt", "cpt", *cfg.transfer.methods} - {"post"}
        progress.total = progress.step + eval_batches_needed(ctx, "test", names)  # the α = 0.5 prompt is not run
        accuracy = evaluate_methods(ctx, "test", names=names, progress=progress, predictions=predictions)
        accuracy["post"] = accuracy[selected["method"]]  # POST at the α chosen on validation
        predictions["post"] = predictions[selected["method"]]
    else:
        accuracy = evaluate_methods(ctx, "test", progress=progress, predictions=predictions)
    seconds["eval"] = time.time() - start
    gap = None
    if {"post", "full_zs", "full_pt"} <= accuracy.keys() and accuracy["full_pt"] != accuracy["full_zs"]:
        gap = (accuracy["post"] - accuracy["full_zs"]) / (accuracy["full_pt"] - accuracy["full_zs"])
    results = {"preset": cfg.name, "task": cfg.task.source, "public": cfg.public.source,
               "large": cfg.models.large, "small": loading.student_ref(ctx),
               "accuracy": accuracy, "gap_closed": gap, "alpha": alpha_policy.used(ctx, selected),
               "alpha_rule": cfg.transfer.alpha,  # a number, "auto" or "select": what POST's column means
               "seconds": {s: round(seconds.get(s, 0.0), 2) for s in ("distill", "tune", "transfer", "full_pt", "eval")},
               "test_examples": len(loading.task(ctx, loading.large(ctx)[1])["test"]),
               "privacy": _privacy(ctx), "memory": {"ranks": ranks.peaks()},  # each process's peak
               "paired": verdict.paired(predictions),  # POST against direct and zero-shot, example by example
               "class_shares": verdict.class_shares(predictions, len(cfg.task.label_words)),
               "majority": _majority(ctx),  # the baseline that reads nothing
               "prospect": prospect.summary(ctx)}  # what the user was told before the transfer
    results["verdict"] = verdict.judge(results, verdict.class_names(cfg.task.label_words))
    for message in verdict.warnings(results["verdict"]):
        ctx.log(message, "warning")
    eval_dir = ctx.stage_dir("eval")
    artifacts.write_json(eval_dir / "accuracy.json", accuracy)
    artifacts.write_json(eval_dir / "predictions.json", predictions)  # the private test split's: stays on this side
    path = ctx.run_dir / "results.json"
    artifacts.write_json(path, results)
    records.write(eval_dir, "eval", records.COMPLETED, {"results": results["accuracy"]},
                  {"results": path, "accuracy": eval_dir / "accuracy.json", "predictions": eval_dir / "predictions.json"},
                  seconds=seconds["eval"])
    ctx.saved("eval", path, "results")
    ctx.emit(StageFinished(stage="eval", seconds=seconds["eval"], summary={"accuracy": accuracy, "gap_closed": gap}))
    return results


def _majority(ctx: RunContext) -> dict:
    splits = loading.task(ctx, loading.large(ctx)[1])  # the user's splits, on the user's side with the eval
    return verdict.majority(splits["train"].labels, splits["test"].labels)


def _privacy(ctx) -> dict | None:
    path = ctx.run_dir / "tune" / "privacy.json"
    if not path.is_file():
        return None
    cert = artifacts.read_json_dict(path, "privacy certificate")
    return {k: cert.get(k) for k in ("epsilon", "delta", "target_epsilon", "noise_multiplier", "sample_rate", "steps", "accountant", "clip")}


def _stage_seconds(ctx: RunContext, stage: str) -> float:
    """Seconds a finished stage took, from its record (0 when it has none)."""
    record = records.read(ctx.run_dir / stage)
    return float(record.get("seconds") or 0.0) if record else 0.0


def upstream_of(ctx: RunContext, stage: str) -> list[str]:
    cfg = ctx.config
    distill = ["distill"] if cfg.distills else []
    return {"distill": [], "tune": distill, "full_pt": [], "transfer": distill + ["tune"],
            "eval": ["tune", "transfer"] + (["full_pt"] if cfg.eval.full_pt else []), "audit": distill + ["tune"]}[stage]


def check_upstream(ctx: RunContext, stages: list[str]) -> None:
    """A stage run alone needs the stages before it finished (their record says so), not just present."""
    for stage in stages:
        for up in upstream_of(ctx, stage):
            if up in stages:
                continue
            record = records.read(ctx.run_dir / up)
            if record is None or record.get("status") not in records.DONE_STATUSES:
                state = "has not run" if record is None else f"was {record.get('status')}"
                command = up.replace('_', '-')
                how = (f"post {command} {ctx.run_dir} first (or post run --resume {ctx.run_dir})"
                       if not _nothing_finished(ctx.run_dir) else  # a new folder, discarded when refused: start it
                       f"post {command} --out {ctx.run_dir} first, with the same --preset / --config / --set "
                       f"(or post run for every stage)")
                raise PostError(f"{stage} needs the {up} stage finished in {ctx.run_dir}, but it {state}: run {how}")
            if stage == "eval" and up in ("transfer", "full_pt"):
                _check_same_large(ctx, up, record)
            changed = _upstream_changed(ctx, stage, up, record)
            if changed is not None:
                back = "go back to the settings it ran with, or " if changed.startswith(records.INPUTS_CHANGED) else ""
                owner = " — or, for prompts an owner transferred, post eval --from OWNER" if up == "transfer" else ""
                raise PostError(f"{stage} would go on from the {up} stage recorded in {ctx.run_dir}, but {changed}: "
                                f"{back}run post run --resume {ctx.run_dir} (it runs {up} again){owner}")


def _upstream_changed(ctx: RunContext, stage: str, up: str, record: dict) -> str | None:
    """Why a finished stage before `stage` is not what this run's config would make (None: it is), so a
    stage run alone never builds on — or scores — prompts made for other settings or files edited since.
    The owner's transfer (eval --from) is the owner's record: its files are checked here, its prompt
    against this run's tune when imported (parties). The transfer never opens private data: it checks
    tune's settings, not the data's content."""
    from engine.parties import IMPORTED_FROM
    files = records.artifacts_changed(ctx.run_dir / up, record)
    imported = up == "transfer" and record.get(IMPORTED_FROM)
    # the audit says itself, in its own words, when its recipe is not the released tune's (audit.check_recipe)
    if files is not None or imported or stage == "audit" or ctx.config.task.source == WITHHELD:
        return files  # the owner's folder: its tune is the user's package, checked when it was received
    with fingerprints.auto_dtype_as((record.get("inputs") or {}).get("dtype")):
        if stage == "transfer" and up == "tune":
            return _tune_settings_changed(ctx, record)
        return why_rerun(ctx, up)


def _tune_settings_changed(ctx: RunContext, record: dict) -> str | None:
    recorded = {k: v for k, v in (record.get("inputs") or {}).items() if k != "data"}
    changed = records.changed_inputs(recorded, fingerprints.tune_settings(ctx))
    if changed:
        with fingerprints.keys_before_2026_12_07():  # a record an earlier post wrote, for these settings
            if not records.changed_inputs(recorded, fingerprints.tune_settings(ctx)):
                return None
        return records.INPUTS_CHANGED + ", ".join(changed)
    return None


def _check_same_large(ctx: RunContext, stage: str, record: dict) -> None:
    """Eval scores the prompts on this run's large model: prompts trained on another would be scored silently."""
    other = fingerprints.trained_on_another_large(ctx.config.models.large, record.get("inputs") or {})
    if other is not None:
        raise PostError(f"the {stage} prompts in {ctx.run_dir} were trained on the large model {other}, not on this "
                        f"run's models.large = {ctx.config.models.large!r}: set models.large to that model, or run "
                        f"{stage.replace('_', '-')} again (post run --resume {ctx.run_dir})")


def _will_run(ctx: RunContext, stage: str, force: bool) -> bool:
    """Whether `stage` runs rather than being skipped as done (asked before the stages upstream have run)."""
    if force or records.read(ctx.run_dir / stage) is None:
        return True
    try:
        return why_rerun(ctx, stage) is not None
    except PostError:  # its inputs cannot be read yet (an upstream stage runs first): then it runs too
        return True


def preflight(ctx: RunContext, stages: list[str], force: bool = False) -> None:
    """Check inputs before any long stage: bad data or label words fail in seconds, not after distillation.

    Private data is only opened for stages that use it — never for transfer alone.
    """
    from engine.models import check_blocks
    from engine.prompt import context_length
    check_upstream(ctx, stages)
    cfg = ctx.config
    private = [s for s in stages if s in ("tune", "full_pt", "eval", "audit")]
    if cfg.task.source == WITHHELD and private:
        raise PostError(f"{ctx.run_dir} is the model owner's folder (task.source = \"{WITHHELD}\"): {private[0]} reads "
                        "the private data, which only the user's run folder has — run it there")
    training = [s for s in ("tune", "full_pt") if s in stages and _will_run(ctx, s, force)]
    if training:  # each records its data set in the ledger: a read-only one fails now, not after distillation
        from engine.privacy import ledger
        check_writable(ledger.root(), f"$POST_LEDGER (the privacy ledger, where {training[0]} records its data set)")
    if "distill" in stages and cfg.student_source == "distilled":  # blocks out of range: before a minute of loading
        check_blocks(cfg.models.large, cfg.distill.blocks)
    owner_side = any(s in stages for s in ("distill", "full_pt", "transfer", "eval"))
    model, tokenizer = loading.large(ctx) if owner_side else loading.small(ctx)  # the user may lack the large model
    if owner_side and cfg.student_source == "given":
        loading.both(ctx)  # a given student with another tokenizer: refused now, not after tuning
    if "transfer" in stages:
        from engine.transfer import check_init_width
        check_init_width(ctx, model)
    limit = context_length(model)
    need = cfg.tune.prompt_length + max(cfg.task.max_length, cfg.public.max_length) + 1
    if limit is not None and need > limit:
        raise PostError(f"tune.prompt_length={cfg.tune.prompt_length} plus max_length does not fit the model's "
                        f"context of {limit} tokens: shorten the prompt or max_length")
    if "transfer" in stages and cfg.transfer.steps == 0:
        ctx.log("transfer.steps = 0: the large model's prompts are not trained — each is its start "
                f"({'the small prompt' if cfg.transfer.init == 'small' else 'task.prompt_init'}), scored as it is",
                "warning")
    if "distill" in stages and cfg.student_source == "distilled" and cfg.distill.steps == 0:
        ctx.log("distill.steps = 0: the student is not trained — it is the large model's kept blocks as they are",
                "warning")
    if any(s in stages for s in ("tune", "full_pt", "transfer")):
        from engine.prompt import init_warning
        cut = init_warning(tokenizer, cfg.task.prompt_init, cfg.tune.prompt_length, cfg.task.label_words)
        if cut:
            ctx.log(cut, "warning")
    if any(s in stages for s in ("tune", "full_pt", "eval", "audit")):
        train = loading.task(ctx, tokenizer)["train"]
        absent = sorted(set(range(len(cfg.task.label_words))) - set(train.labels))
        if absent:  # chance is 1 / classes; a class never trained on is a prompt that never says it
            ctx.log(f"{len(absent)} of the {len(cfg.task.label_words)} classes of task.label_words have no training "
                    f"example (class {', '.join(map(str, absent))}: {', '.join(repr(cfg.task.label_words[i][0]) for i in absent)}): "
                    "check task.label_words against the data's labels", "warning")
        loading.verbalizer(ctx, tokenizer)
        if cfg.privacy.enabled and any(s in stages for s in ("tune", "full_pt")):
            from engine.privacy import check_config  # bad δ or a too-small ε fail here, not after distillation
            from engine.sampling import steps_for
            check_config(cfg.privacy, len(train), cfg.tune.batch_size,
                         steps_for(len(train), cfg.tune.batch_size, cfg.tune.steps, cfg.tune.epochs))
    if any(s in stages for s in ("tune", "full_pt")) and cfg.task.source != WITHHELD:
        from engine.privacy import boundary
        boundary.check_run(ctx, stages)
    elif "transfer" in stages:
        from engine.privacy import boundary
        boundary.check_transfer_alone(ctx)
    if "audit" in stages:
        from engine.audit.stage import check_pool, check_recipe
        check_pool(cfg, len(train))
        if "tune" not in stages:
            check_recipe(ctx)  # the shadows repeat the released prompt's recipe, not one the --set made up
    if "transfer" in stages and cfg.public.source != GENERATED:  # a generated set is written in the transfer stage
        loading.public_candidates(ctx, tokenizer)  # a balanced pick needs the tuned prompt: only the source here
    if "transfer" in stages and cfg.transfer.alpha == "auto" and not cfg.eval.full_zs:
        raise PostError("transfer.alpha = \"auto\" needs the zero-shot accuracy: set eval.full_zs = true or a number for alpha")
    if ("transfer" in stages and cfg.transfer.alpha == "auto") or ("eval" in stages and cfg.transfer.alpha == "select"):
        if private_prompt(ctx):
            raise PostError(f"transfer.alpha = \"{cfg.transfer.alpha}\" reads accuracy on the private validation "
                            "split, which the privacy accountant does not cover, and this run's prompt is "
                            "differentially private: set transfer.alpha to a number (--set transfer.alpha=1.0: the shift "
                            "alone, best on the sentiment tasks of BENCHMARKS.md)")


def private_prompt(ctx: RunContext) -> bool:
    """Is the small prompt of this run DP — by what was run (a certificate, a DP package), not only the config?"""
    run = ctx.run_dir
    if ctx.config.privacy.enabled or (run / "tune" / "privacy.json").is_file():
        return True
    package = run / "package" / "manifest.json"  # the package the prompt travels in
    return package.is_file() and bool(artifacts.read_json_dict(package, "package manifest").get("dp"))


def execute(ctx: RunContext, stages: list[str], force: bool = False) -> dict | None:
    """Run `stages` in order on ctx's folder; returns results when eval ran."""
    seconds: dict[str, float] = {}
    results = None
    try:
        preflight(ctx, stages, force)
    except PostError as err:
        ctx.emit(StageFailed(stage="preflight", message=str(err)))
        raise
    # the config this folder was last run with — only once it passed: a refused `--set` leaves the old one
    artifacts.write_text(ctx.run_dir / "config.toml", to_toml(ctx.config))
    for stage in stages:
        if ctx.cancelled:
            raise Cancelled()
        if not force and stage != "eval":
            reason = why_rerun(ctx, stage)
            if reason is None:
                ctx.log(f"{stage}: already done in {ctx.run_dir}, skipped")
                seconds[stage] = _stage_seconds(ctx, stage)
                _privacy_as_spent(ctx, stage)
                continue
            if (ctx.run_dir / stage).is_dir():
                ctx.log(f"{stage}: runs again, {reason}")
        if stage != "audit":  # the audit scores the recipe, not what results.json holds
            _set_aside_results(ctx)
        try:
            if stage == "transfer" and "tune" in stages:  # the user's run, its private data open: a student that
                prospect.check(ctx)                       # trails the large model's zero-shot is said before the transfer
            results = _run_stage(ctx, stage, force, seconds) or results
            ranks.report(ctx, stage, final=True)  # every rank's memory and speed, on rank 0
            if ctx.cancelled:  # the stage returned at a cancel (its record says cancelled)
                raise Cancelled()
        except (PostError, Cancelled) as err:
            ctx.emit(StageFailed(stage=stage, message=str(err) or "cancelled"))
            raise
        except OSError as err:  # a folder that cannot be written, a full disk: the user's to fix, not a bug
            problem = os_problem(err)
            if problem is None:
                raise _engine_bug(ctx, stage, err) from err
            ctx.emit(StageFailed(stage=stage, message=f"{stage}: {problem}"))
            raise PostError(f"{stage}: {problem}") from err
        except Exception as err:
            raise _engine_bug(ctx, stage, err) from err
    return results


def _privacy_as_spent(ctx: RunContext, stage: str) -> None:
    """A DP stage skipped as done: what it spent, from its certificate, for whoever shows the run (a resumed
    run's privacy panel would otherwise wait for a private step that never comes)."""
    path = ctx.run_dir / stage / "privacy.json"
    if stage not in ("tune", "full_pt") or not path.is_file():
        return
    try:
        cert = artifacts.read_json_dict(path, "privacy certificate")
        composed = cert.get("ledger") if isinstance(cert.get("ledger"), dict) else {}
        ctx.emit(PrivacySpent(epsilon=cert["epsilon"], target_epsilon=cert.get("target_epsilon"), delta=cert["delta"],
                              noise_multiplier=cert["noise_multiplier"], sample_rate=cert["sample_rate"],
                              steps=cert["steps"], accountant=cert["accountant"], stage=stage,
                              ledger_epsilon=composed.get("composed_epsilon"),
                              ledger_releases=composed.get("composed_releases")))
    except (PostError, KeyError, TypeError, ValueError):  # a damaged certificate: the stage's own checks say so
        return


PREVIOUS_RESULTS = "results.previous.json"


def _set_aside_results(ctx: RunContext) -> None:
    """A stage runs again: the folder's results.json scored what it held before, so it becomes
    results.previous.json — a cancelled or failed re-run must not be shown finished with the old accuracies."""
    current = ctx.run_dir / "results.json"
    if current.is_file():
        os.replace(current, ctx.run_dir / PREVIOUS_RESULTS)


def _engine_bug(ctx: RunContext, stage: str, err: Exception) -> PostError:
    """An engine bug: the traceback kept in the run folder, one line for the user (and the StageFailed event).
    Where the folder cannot take error.txt either, the line says so instead of pointing at nothing."""
    where = ctx.run_dir / "error.txt"
    try:
        artifacts.write_text(where, traceback.format_exc())
        kept = f"traceback in {where}"
    except OSError as write_err:
        kept = f"no traceback kept: {os_problem(write_err) or write_err}"
    message = f"{stage} failed: {type(err).__name__}: {err} ({kept})"
    ctx.emit(StageFailed(stage=stage, message=message))
    return PostError(message)


def _run_stage(ctx: RunContext, stage: str, force: bool, seconds: dict[str, float]) -> dict | None:
    start = time.time()
    if stage == "distill":
        run_distill(ctx)
    elif stage == "tune":
        run_tune(ctx)
    elif stage == "full_pt":
        run_full_pt(ctx)
    elif stage == "transfer":
        alpha = alpha_policy.transfer_alpha(ctx)
        if alpha is None:  # "auto": the user's choice, made here on one machine before the owner's stage
            alpha = alpha_policy.choose_auto(ctx)
        kept = {} if force else finished_methods(ctx, alpha)
        run_transfer(ctx, alpha, skip=kept)
        start -= sum(kept.values())  # the stage's minutes include the methods an earlier attempt trained
    elif stage == "audit":
        run_audit(ctx)
    elif stage == "eval":
        for s in STAGES[:-1]:
            seconds.setdefault(s, _stage_seconds(ctx, s))
        return run_eval(ctx, seconds)
    seconds[stage] = time.time() - start
    return None


def is_fresh(run_dir: Path) -> bool:
    """No run folder there yet, or one holding nothing but a lock (a run refused before it wrote anything)."""
    return not run_dir.exists() or not any(p.name != LOCK for p in run_dir.iterdir())


def _check_folders(run_dir: Path) -> None:
    """The run folder, the cache and the ledger are folders: a file at one of those paths is refused before
    anything is written (not a traceback after the run folder was started)."""
    from engine.assets.cache import cache_root
    from engine.privacy import ledger
    for path, what in ((run_dir, "--out (the run folder)"), (cache_root(), "$POST_CACHE"), (ledger.root(), "$POST_LEDGER")):
        if path.exists() and not path.is_dir():
            raise PostError(f"{what} is {path}, a file where post needs a folder: give another path or move the file")
    check_writable(run_dir, "--out (the run folder)")


def check_writable(folder: Path, what: str) -> None:
    """`folder`, or the nearest folder above it that exists, can take new files: refused before anything is
    written, not a traceback mid-stage. (Root passes every access check: there a write still fails later, in
    one line.)"""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        made = "" if existing == folder else f" (where {folder} would be made)"
        raise PostError(f"{what}: cannot write in {existing}{made}: permission denied or a read-only file system — "
                        "make it writable for this user (chmod u+rwX) or give another path")


def run(config: RunConfig, bus: EventBus | None = None, out: Path | None = None, cancel=None,
        stages: list[str] | None = None, resume: bool = False, force: bool = False) -> dict | None:
    """Run the pipeline (or some stages) and write the run folder. Raises PostError / Cancelled."""
    run_dir = new_run_dir(config, out)
    _check_folders(run_dir)
    pick_device(config.runtime.device)  # a device this machine lacks: refused before the folder is made
    fresh = is_fresh(run_dir)
    if not fresh and not resume and stages is None:
        raise PostError(f"run folder {run_dir} already exists: pass --resume to continue it, or another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):  # before anything is written: a second process in this folder is refused
        return _run_locked(config, run_dir, fresh, bus, cancel, stages, force)


def _run_locked(config: RunConfig, run_dir: Path, fresh: bool, bus, cancel, stages, force) -> dict | None:
    if config.runtime.threads:
        torch.set_num_threads(config.runtime.threads)
    torch.manual_seed(config.runtime.seed)
    ctx = RunContext(config=config, run_dir=run_dir, bus=bus or EventBus())
    if cancel is not None:
        ctx.cancel_event = cancel
    stale = artifacts.clean_stale(run_dir)  # temp files of a writer that was killed
    if fresh:  # a new folder has no earlier config to keep: written now, a kill during preflight leaves it resumable
        artifacts.write_text(run_dir / "config.toml", to_toml(config))
    writer = ctx.bus.subscribe(JsonlWriter(run_dir / "events.jsonl"))
    stages = stages or stages_for(config)
    discard = False
    ctx.emit(RunStarted(run_dir=str(run_dir), preset=config.name, stages=stages))
    if stale:
        ctx.log(f"removed {len(stale)} temp file(s) left by an interrupted writer")
    try:
        with MemoryMonitor(ctx.emit, config.runtime.memory_every):
            results = execute(ctx, stages, force)
        if results is not None:
            ctx.emit(RunFinished(results_path=str(run_dir / "results.json"), results=results))
        return results
    except Cancelled:
        ctx.emit(RunFailed(message="cancelled: finished stages are kept; resume with post run --resume " + str(run_dir)))
        raise
    except PostError as err:
        ctx.emit(RunFailed(message=str(err)))
        discard = fresh and _nothing_finished(run_dir)
        raise
    finally:
        ctx.bus.unsubscribe(writer)
        writer.close()
        if discard:
            shutil.rmtree(run_dir, ignore_errors=True)  # bad input leaves nothing half-written


def _nothing_finished(run_dir: Path) -> bool:
    """No stage record, checkpoint or privacy journal: the folder holds nothing worth keeping
    (a journal is never deleted — it records privacy already spent; an engine bug's error.txt, which its
    one-line message points to, is kept for the bug report)."""
    keep = {records.RECORD, "privacy.journal.json", "results.json", "error.txt"}
    return not any(p.name in keep or p.suffix == ".pt" for p in run_dir.rglob("*") if p.is_file())
