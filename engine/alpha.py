"""α policy: which α the POST prompt is trained with, and on whose side it is chosen.

The owner's transfer stage never reads private data, so a choice that needs private validation
accuracy is made by the user and travels to the owner like the rest of the package:
- a number (`transfer.alpha = 0.5`): either side, nothing chosen from data;
- "select": the owner trains the candidates of `methods.SELECT_CANDIDATES` (α = 0, 0.5, 1) on
  public data; the user's eval keeps the one with the best *validation* accuracy, a tie going to the
  lower validation loss (`eval/alpha.json`, on the user's machine) and says which to the owner. A choice among k candidates reveals at most
  log2(k) bits about the private data (log2 3 ≈ 1.58), outside ε;
- "auto": the paper's heuristic min((ZS − chance)/(CPT − chance), 1) from the large model's
  zero-shot and the student's prompted accuracy on the user's validation split. It needs the large
  model on the user's side (the one-machine `post run`); the accuracies stay in `tune/alpha.json`,
  only α goes into the package (`package/choice.json`). α is a real number computed from private
  data, outside ε.
Both data-driven choices are refused when the prompt is differentially private (pipeline.preflight,
parties.owner_transfer): ε would no longer describe everything released.
"""
from __future__ import annotations

import math

from engine import artifacts, distributed, loading, methods, package
from engine.errors import PostError

CHOICE = package.CHOICE   # in a package: the α the user chose, and by which rule


def transfer_alpha(ctx) -> float | None:
    """The α the transfer stage trains POST with; None while "auto" has not been chosen by the user."""
    alpha = ctx.config.transfer.alpha
    if alpha == "select":
        return methods.SELECT_CANDIDATES["post"]  # the candidates are trained; the user's eval chooses
    if alpha == "auto":
        return package_choice(ctx) if _choice_current(ctx) else None
    return float(alpha)


def _choice_inputs(ctx) -> str:
    """What an "auto" choice was computed from besides the tuned prompt (a new prompt drops the choice)."""
    from engine.fingerprints import large_identity
    from engine.records import digest
    cfg = ctx.config
    return digest({**large_identity(ctx), "task": cfg.task.model_dump(), "eval": cfg.eval.model_dump(),
                   "dtype": cfg.runtime.dtype})


def _choice_current(ctx) -> bool:
    """On the user's machine (tune/alpha.json present) a choice made for another large model or task
    settings is made again; the owner, who has only the package, takes the choice as sent."""
    mine = ctx.run_dir / "tune" / "alpha.json"
    if not mine.is_file():
        return True
    return artifacts.read_json_dict(mine, "α choice").get("inputs") == _choice_inputs(ctx)


def package_choice(ctx) -> float | None:
    path = ctx.run_dir / "package" / CHOICE
    return float(artifacts.read_json_dict(path, "α choice")["alpha"]) if path.is_file() else None


def choose_auto(ctx) -> float:
    """The user's side of "auto": ZS and CPT on the private validation split → α, put into the package."""
    from engine.evaluate import evaluate_methods
    if not (ctx.run_dir / "package" / "manifest.json").is_file() or \
            package.CHOICE in package.verify(ctx.run_dir / "package")["files"]:
        # a folder tuned before packages existed, or a choice made for other inputs: the package anew
        package.build(ctx.run_dir, ctx.run_dir / "package", replace=True)
    if not ctx.config.eval.full_zs:
        raise PostError("transfer.alpha = \"auto\" needs the zero-shot accuracy: set eval.full_zs = true or a number for alpha")
    val = evaluate_methods(ctx, "validation", names=("full_zs", "cpt"))
    alpha = heuristic(val["full_zs"], val["cpt"], len(ctx.config.task.label_words))
    artifacts.write_json(ctx.stage_dir("tune") / "alpha.json", {  # the accuracies stay on the user's machine
        "alpha": alpha, "zs_validation": val["full_zs"], "cpt_validation": val["cpt"], "inputs": _choice_inputs(ctx)})
    package.add_choice(ctx.run_dir / "package", {"alpha": alpha, "rule": "auto"})
    ctx.log(f"alpha=auto → {alpha:.3f}, chosen on the user's side (validation ZS {val['full_zs']:.3f}, "
            f"CPT {val['cpt']:.3f}); only α goes into the package")
    return alpha


def heuristic(zero_shot: float, compressed: float, num_classes: int) -> float:
    """The paper's α = min((ZS − chance)/(CPT − chance), 1), clamped to [0, 1]."""
    chance = 1.0 / num_classes
    if compressed - chance <= 1e-9:
        return 1.0 if zero_shot > chance else 0.0
    return float(min(max((zero_shot - chance) / (compressed - chance), 0.0), 1.0))


RULE = "best validation accuracy; a tie goes to the lower validation loss"
EARLIER_RULE = "best validation accuracy"  # until 2026-11-30: a tie went to post (α = 0.5)


def best(scores: dict[str, tuple[float, float]]) -> str:
    """The candidate with the best validation accuracy. With a few hundred examples accuracies tie
    often (mr-gemma3: post and shift both 0.753), and a tie is settled by the cloze loss on the same
    examples — still one choice among the candidates, so still at most log2(k) bits revealed."""
    def key(m):  # a NaN loss sorts last; a full tie keeps the paper's mixed loss (post)
        accuracy, loss = scores[m]
        return -accuracy, loss if math.isfinite(loss) else math.inf, m != "post"
    return min(scores, key=key)


def select(ctx, progress=None) -> dict:
    """α = "select" on the user's side: the trained candidate with the best *validation* accuracy (a tie:
    the lower validation loss) becomes POST, written as eval/post.safetensors with the accuracies and
    losses behind the choice (eval/alpha.json)."""
    from engine.evaluate import score_methods
    candidates = methods.SELECT_CANDIDATES
    missing = [m for m in candidates if not loading.prompt_path(ctx, "transfer", m).is_file()]
    if missing:  # checked before any minutes of evaluation are spent
        raise PostError(f"transfer.alpha = \"select\" needs the {', '.join(missing)} prompt(s): "
                        "run the transfer stage first (post transfer RUN_DIR)")
    scores = score_methods(ctx, "validation", names=tuple(candidates), progress=progress)
    names = list(scores)
    method = names[distributed.same_on_every_rank(names.index(best(scores)))]  # every rank evaluates the same next
    choice = {"rule": RULE, "method": method, "alpha": candidates[method],
              "validation": {m: acc for m, (acc, _) in scores.items()},
              "validation_loss": {m: loss for m, (_, loss) in scores.items()},
              "revealed_bits": "at most log2(3) ≈ 1.58 about the validation data, outside ε"}
    folder = ctx.stage_dir("eval")
    artifacts.copy_file(loading.prompt_path(ctx, "transfer", method), folder / "post.safetensors")
    artifacts.write_json(folder / "alpha.json", choice)
    ctx.log(f"alpha=select → {choice['alpha']:g} ({method}; validation accuracy / loss " +
            ", ".join(f"{m} {acc:.3f} / {loss:.3f}" for m, (acc, loss) in scores.items()) + ")")
    ctx.saved("eval", folder / "post.safetensors", f"POST prompt at the α chosen on validation ({choice['alpha']:g})")
    return choice


def used(ctx, selected: dict | None = None) -> dict[str, float]:
    """α of every trained prompt of the run (POST's: the selected one's under "select")."""
    found = {}
    for path in sorted((ctx.run_dir / "transfer").glob("*.json")):
        data = artifacts.read_json_dict(path, "transfer summary")
        if "method" in data:
            found[data["method"]] = data["alpha"]
    if selected:
        found["post"] = selected["alpha"]
    return found
