"""Student recipe experiment: distil → tune → direct / inference-time / POST at several α.

Everything is scored on the *validation* split (recipes must never be chosen on test). The student
comes from the engine's own distillation stage (cached like any run's), with `--loss hidden`
(teacher hidden states cached once, no LM head) or `--loss kd` (the paper's KD + LM + cosine);
`--student DIR` scores an existing student instead.

    python bench/student_recipe.py --template "{text} It was" --steps 600 --alphas 1.0,0.5 --vocab labels
    python bench/student_recipe.py --student ~/.cache/post/students/<key> --vocab labels --alphas 1.0,0.0
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/x.py` from the repo root works

import torch  # noqa: E402

import bench.common  # noqa: E402,F401  (offline hub)
from engine import loading, models  # noqa: E402
from engine.context import RunContext  # noqa: E402
from engine.distill import run_distill  # noqa: E402
from engine.evaluate import accuracy, prompt_logit_fn  # noqa: E402
from engine.losses import inference_time_logits  # noqa: E402
from engine.presets import load_config  # noqa: E402
from engine.transfer import fixed_targets, transfer_prompt  # noqa: E402
from engine.tune import tune_prompt  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--student", default="", help="score this student instead of distilling one")
    # Each option left out keeps the preset's value (the demo's: the recipe README reports).
    option = {"--blocks": "distill.blocks", "--corpus": "distill.corpus", "--template": "distill.template",
              "--steps": "distill.steps", "--batch": "distill.batch_size", "--seq": "distill.seq_len",
              "--lr": "distill.lr", "--loss": "distill.loss", "--tune-steps": "tune.steps",
              "--transfer-steps": "transfer.steps", "--vocab": "transfer.vocab"}
    for flag, key in option.items():
        ap.add_argument(flag, default=None, help=f"sets {key}")
    ap.add_argument("--alphas", default="", help="comma-separated α values for POST (default: the preset's α)")
    ap.add_argument("--nval", type=int, default=300, help="validation examples scored")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="", help="also write the result as JSON here (e.g. bench/results/ablation/NAME.json)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    overrides = [f"task.max_eval={args.nval}"]
    for flag, key in option.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            overrides.append(f"{key}=[{value}]" if flag == "--blocks" else f"{key}={value}")  # --set's rules
    cfg = load_config(args.preset, overrides=overrides)
    alphas = [float(a) for a in args.alphas.split(",")] if args.alphas else [
        cfg.transfer.alpha if isinstance(cfg.transfer.alpha, float) else 0.5]
    ctx = RunContext(cfg, Path("/tmp/post-student-recipe"))
    teacher, tok = loading.large(ctx)
    res: dict = {"args": vars(args)}
    start = time.time()
    student, _ = models.load(args.student or str(run_distill(ctx)))
    res["distill_s"] = round(time.time() - start, 1)
    student = student.eval().requires_grad_(False)
    ctx.cache["small"] = (student, tok)
    val = loading.task(ctx, tok)["validation"].head(args.nval)
    verbalizer, pad = loading.verbalizer(ctx, tok), tok.pad_token_id

    def score(fn) -> float:
        return accuracy(fn, val, verbalizer, 32, pad, ctx.device)

    start = time.time()
    small_prompt, tuned, _ = tune_prompt(ctx, "tune", student, tok, "student")
    res["tune_s"], res["tune_validation"] = round(time.time() - start, 1), tuned.validation
    plain_t, plain_s = prompt_logit_fn(teacher, tok, None, "float32"), prompt_logit_fn(student, tok, None, "float32")
    prompted_s = prompt_logit_fn(student, tok, small_prompt, "float32")
    res.update(zs=score(plain_t), cpt=score(prompted_s), direct=score(prompt_logit_fn(teacher, tok, small_prompt, "float32")),
               inference=score(lambda b: inference_time_logits(plain_t(b), prompted_s(b), plain_s(b))))
    public = loading.public(ctx, tok)
    fixed = fixed_targets(ctx, teacher, student, tok, small_prompt, public)
    for alpha in alphas:
        start = time.time()
        prompt, _ = transfer_prompt(ctx, "post", alpha, teacher, tok, public, fixed)
        res[f"transfer_alpha{alpha:g}_s"] = round(time.time() - start, 1)
        res[f"post_alpha{alpha:g}"] = score(prompt_logit_fn(teacher, tok, prompt, "float32"))
    print(json.dumps(res))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
