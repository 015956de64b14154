"""Before the transfer, on the user's side: does the student know enough of the task for a transfer to add
anything to the large model's zero-shot?

The transfer carries the student's prompt-induced shift over to the large model. Where the student's own
prompt scores well below the large model without any prompt, that shift mostly corrects what the student
gets wrong and the large model does not: across the generality suite's 41 (row, seed) runs (five seeds of
eight rows and the SMS row; `bench/prospect_evidence.py`, BENCHMARKS.md "A warning before the transfer"),
the 10 runs whose student prompt was more than 10 points below the large model's zero-shot on validation
(every BBC run, and no other) closed 0.09 of the gap on average (median 0.06; at most 0.32, but for one run
whose full PT was within noise of zero-shot), the 31 others 0.62 (median 0.72). The check costs one pass of
the large model over the tune's validation examples (`tune.eval_size`, 200 by default; the student's pass is
cheap), made once per tuned prompt.

The accuracies are computed from private data: they stay in the user's run folder (`tune/prospect.json`,
as `tune/alpha.json`), never in the package the owner receives.
"""
from __future__ import annotations

from engine import artifacts

MARGIN = 0.10    # validation accuracy the student's prompt may trail the large model's zero-shot by
FILE = "prospect.json"


def check(ctx) -> dict | None:
    """The student's prompt against the large model's zero-shot on validation, logged (a warning where it
    trails by more than MARGIN) and kept in tune/prospect.json; None where it cannot be made here."""
    if not applies(ctx):
        return None
    path = ctx.run_dir / "tune" / FILE
    inputs = _inputs(ctx)
    kept = _kept(path)
    if kept is not None and kept.get("inputs") == inputs and _valid(kept):
        found = kept
    else:
        from engine.evaluate import evaluate_methods
        size = ctx.config.tune.eval_size  # the validation examples the tune watched: its cost, a fraction of eval's
        ctx.log(f"prospect: the student's prompt and the large model's zero-shot on "
                f"{f'up to {size} validation examples (tune.eval_size)' if size else 'the validation split'}")
        val = evaluate_methods(ctx, "validation", names=("full_zs", "cpt"), limit=size)
        found = {"zs_validation": val["full_zs"], "cpt_validation": val["cpt"], "inputs": inputs}
        artifacts.write_json(path, found)
    _report(ctx, found["cpt_validation"], found["zs_validation"])
    return found


def summary(ctx) -> dict | None:
    """For results.json: the accuracies this run's prompt was checked with before the transfer, and the verdict."""
    kept = _kept(ctx.run_dir / "tune" / FILE)
    if kept is None or not _valid(kept) or kept.get("inputs") != _inputs(ctx):
        return None
    return {"zs_validation": kept["zs_validation"], "cpt_validation": kept["cpt_validation"],
            "trails": trails(kept["cpt_validation"], kept["zs_validation"]), "margin": MARGIN}


def applies(ctx) -> bool:
    """On the user's machine (their private validation split is here), with the zero-shot scored at all."""
    from engine.parties import WITHHELD
    cfg = ctx.config
    return cfg.task.source != WITHHELD and cfg.eval.full_zs and (ctx.run_dir / "tune" / "prompt.safetensors").is_file()


def trails(cpt: float, zero_shot: float) -> bool:
    return cpt < zero_shot - MARGIN


def _report(ctx, cpt: float, zero_shot: float) -> None:
    said = (f"the student's prompt scores {100 * cpt:.1f} % on validation, the large model's zero-shot "
            f"{100 * zero_shot:.1f} %")
    if not trails(cpt, zero_shot):
        ctx.log(f"prospect: {said}")
        return
    ctx.log(f"prospect: {said} — {100 * (zero_shot - cpt):.0f} points below: the student knows less of this task "
            "than the large model, so the transfer has little to add (BENCHMARKS.md, \"A warning before the transfer\"); "
            "a stronger student first — more kept blocks (distill.blocks) or a "
            "pre-trained smaller model (models.small) — or keep the zero-shot. The transfer runs anyway", "warning")


def _inputs(ctx) -> str:
    """What the accuracies were computed from: the tuned prompt, the large model, the task and eval settings."""
    from engine.fingerprints import large_identity
    from engine.prompt import tensor_hash
    from engine.records import digest
    cfg = ctx.config
    return digest({"prompt": tensor_hash(ctx.run_dir / "tune" / "prompt.safetensors"), **large_identity(ctx),
                   "task": cfg.task.model_dump(), "eval": cfg.eval.model_dump(), "dtype": cfg.runtime.dtype,
                   "seed": cfg.runtime.seed, "examples": cfg.tune.eval_size})


def _kept(path):
    """The accuracies an earlier attempt kept; None where there are none or the file is damaged (made again)."""
    try:
        return artifacts.read_json_dict(path, "prospect") if path.is_file() else None
    except artifacts.DamagedArtifact:
        return None


def _valid(kept: dict) -> bool:
    numbers = [kept.get("zs_validation"), kept.get("cpt_validation")]
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in numbers)
