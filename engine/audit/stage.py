"""The audit stage (the user's side): shadow prompts on halves of the private training split, then LiRA.

    <run>/audit/
        design.json           what the shadows are keyed by (a resume reuses shadows only under the same key)
        phi-<k>.safetensors   shadow k's φ over the pool, written atomically when it finishes
        audit.json            the report: LiRA AUC, TPR at low FPR, per-target AUCs, the recipe
        done.json             the record (engine.records), written last

What it audits is the released prompt's *recipe* on this data (how the paper audits, Table 3), not the
released prompt itself: that was trained on every training example, so no example is out of it.
Everything here is computed from the private data without noise: it stays in the run folder, and
`post package` never takes it.
"""
from __future__ import annotations

import dataclasses
import time

import torch

from engine import artifacts, fingerprints, loading, records
from engine.audit import lira
from engine.audit.design import membership, pool_indices
from engine.audit.shadows import Recipe, StepsAfter, dp_recipe, pool_phi, shadow_steps, train_shadow
from engine.errors import PostError
from engine.events import StageFinished, StageStarted

STAGE = "audit"


def run_audit(ctx) -> None:
    cfg = ctx.config
    folder = ctx.stage_dir(STAGE)
    tune = artifacts.read_json_dict(ctx.stage_dir("tune") / "summary.json", "tune summary")
    model, tokenizer = loading.small(ctx)
    train = loading.task(ctx, tokenizer)["train"]
    verbalizer = loading.verbalizer(ctx, tokenizer)
    pool = train.subset(pool_indices(len(train), cfg.audit.pool, cfg.runtime.seed))
    member = membership(len(pool), cfg.audit.shadows, cfg.runtime.seed)
    recipes = [_recipe(cfg, int(tune["steps"]), len(train), int(m.sum())) for m in member]
    inputs = fingerprints.stage_inputs(ctx, STAGE)
    # the shadows' own recipes too (σ, q, δ, steps): a shadow made under another derivation is not reused
    key = records.digest({**inputs, "recipes": [dataclasses.asdict(r) for r in recipes]})
    phis = _reusable_shadows(folder, key)
    records.clear(folder)
    (folder / "audit.json").unlink(missing_ok=True)  # the report of an earlier design never stands beside this one
    artifacts.write_json(folder / "design.json", {"key": key, "pool": len(pool), "shadows": cfg.audit.shadows})
    ctx.emit(StageStarted(stage=STAGE, total_steps=sum(r.steps for r in recipes),
                          description=f"membership inference: {cfg.audit.shadows} shadow prompts on {len(pool)} examples"))
    start = time.time()
    for k, recipe in enumerate(recipes):
        if k in phis:
            continue
        ctx.log(f"audit: shadow {k + 1} of {len(recipes)}: {int(member[k].sum())} examples, {recipe.steps} steps")
        members = pool.subset(member[k].nonzero().flatten().tolist())
        shadow_ctx = StepsAfter(ctx, STAGE, sum(r.steps for r in recipes[:k]), sum(r.steps for r in recipes))
        prompt, finished = train_shadow(shadow_ctx, model, tokenizer, members, verbalizer, recipe,
                                        seed=cfg.runtime.seed * 1_000_003 + k, label=STAGE)
        if not finished:  # the finished shadows stay; a resume trains this one again from its start
            records.write(folder, STAGE, records.CANCELLED, inputs, {}, steps=sum(recipes[j].steps for j in phis),
                          seconds=time.time() - start, shadows_done=len(phis))
            return
        phis[k] = pool_phi(ctx, model, tokenizer, prompt, pool, verbalizer)
        if not torch.isfinite(phis[k]).all():
            raise PostError(f"audit: shadow {k + 1}'s prompt gives non-finite scores on the pool (the model or the "
                            "learning rate diverged): the audit cannot score it; check tune.lr and runtime.dtype")
        artifacts.save_tensors(folder / f"phi-{k}.safetensors", {"phi": phis[k]}, metadata={"key": key})
    report = _report(cfg, lira.audit(torch.stack([phis[k] for k in range(len(recipes))]), member),
                     recipes, member, len(train), tune, time.time() - start)
    artifacts.write_json(folder / "audit.json", report)
    records.write(folder, STAGE, records.COMPLETED, inputs, {"report": folder / "audit.json"},
                  steps=sum(r.steps for r in recipes), seconds=report["seconds"])
    ctx.log(summary_line(report))
    ctx.emit(StageFinished(stage=STAGE, seconds=report["seconds"], summary=report["lira"]))


def check_recipe(ctx) -> None:
    """The shadows repeat the recipe that made the run's prompt: a config that differs from the tune
    record's (another ε, learning rate, data) would audit something that was never released."""
    reason = records.why_not_done(ctx.stage_dir("tune"), fingerprints.tune_inputs(ctx))
    if reason is not None:
        raise PostError(f"the audit repeats the recipe of {ctx.run_dir}'s tuned prompt, but that prompt is not "
                        f"current: {reason}. Audit with the settings it was tuned with (no --set that changes what "
                        f"tune computed), or run post tune {ctx.run_dir} again first")


MIN_SHADOW_EXAMPLES = 8  # a shadow below this trains on a handful of examples: its recipe is not the released one


def check_pool(cfg, n_train: int) -> None:
    """Before any model work: a pool whose halves are too small to train a shadow on is refused."""
    n = n_train if cfg.audit.pool <= 0 else min(cfg.audit.pool, n_train)
    least = max(2 * MIN_SHADOW_EXAMPLES, 2 * cfg.tune.batch_size)
    if n < least:
        raise PostError(f"the audit pool has {n} training examples, so each shadow would train on about {n // 2}: "
                        f"give audit.pool ≥ {least} (twice tune.batch_size, at least {2 * MIN_SHADOW_EXAMPLES}) or 0 "
                        "for the whole training split")


def _recipe(cfg, released_steps: int, n_train: int, n_members: int) -> Recipe:
    steps = shadow_steps(released_steps, n_train, n_members)
    dp = dp_recipe(cfg.privacy, n_train, n_members, cfg.tune.batch_size, steps) if cfg.privacy.enabled else None
    return Recipe(steps=steps, dp=dp)


def _reusable_shadows(folder, key: str) -> dict[int, torch.Tensor]:
    """The φ of shadows an earlier attempt finished under the same key; anything else is removed."""
    design = folder / "design.json"
    same = design.is_file() and _read_key(design) == key
    phis: dict[int, torch.Tensor] = {}
    for path in sorted(folder.glob("phi-*.safetensors")):
        loaded = _load_phi(path, key) if same else None
        if loaded is None:
            path.unlink()
        else:
            phis[int(path.stem.split("-")[1])] = loaded
    return phis


def _read_key(path) -> str | None:
    try:
        return artifacts.read_json_dict(path, "audit design").get("key")
    except artifacts.DamagedArtifact:
        return None


def _load_phi(path, key: str) -> torch.Tensor | None:
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.get_tensor("phi") if (f.metadata() or {}).get("key") == key else None
    except Exception:  # a damaged file: that shadow is trained again
        return None


def _report(cfg, result: dict, recipes: list[Recipe], member, n_train: int, tune: dict, seconds: float) -> dict:
    dp = [r.dp for r in recipes if r.dp]
    return {"lira": result, "shadows": len(recipes), "pool": int(member.shape[1]), "train_examples": n_train,
            "members_per_shadow": [int(m.sum()) for m in member], "steps_per_shadow": [r.steps for r in recipes],
            "released": {"steps": int(tune["steps"]), "dp": bool(cfg.privacy.enabled)},
            "shadow_dp": ({"epsilon": [d["epsilon"] for d in dp], "noise_multiplier": [d["noise_multiplier"] for d in dp],
                           "sample_rate": [d["sample_rate"] for d in dp], "clip": dp[0]["clip"],
                           "delta": [d["delta"] for d in dp], "accountant": dp[0]["accountant"]} if dp else None),
            "seconds": seconds,
            "what": "LiRA (online, leave-one-out over the shadows, global variances) against the tuning recipe: each "
                    "shadow in turn is the target, trained on a known half of the pool; AUC 0.5 = no better than a coin",
            "private_statistics": "computed from the private data without noise: keep this folder on this machine"}


def summary_line(report: dict) -> str:
    r = report["lira"]
    low = ", ".join(f"TPR {100 * v:.1f} % at FPR {100 * float(f):g} %" for f, v in r["tpr_at_fpr"].items() if v is not None)
    return (f"audit: LiRA AUC {r['auc']:.3f} ({low}; confidence alone: AUC {r['confidence_auc']:.3f}), "
            f"{report['shadows']} shadow prompts on {report['pool']} training examples")
