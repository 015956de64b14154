"""Probe (issue 12): does the mean shift of K small prompts, tuned on one student with other batch orders,
make a better transfer target than one prompt? Scores, on the validation split (300 examples): each
prompt's CPT and inference-time accuracy, those of the ensemble (mean logits / mean shift), the source
run's POST, and POST transferred onto the mean shift. Writes SCRATCH/probe.json; resumable.
    python bench/prompt_ensemble.py SRC_RUN SCRATCH K     (SRC_RUN: a finished run, e.g. a student_lever.sh one)
"""
import json, shutil, sys, time
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/...` from the repo root works
from bench.common import run_main
if len(sys.argv) < 4 or not (Path(sys.argv[1]) / "config.toml").is_file():  # one line and exit 2, not a traceback
    run_main(lambda: sys.exit("error: usage: python bench/prompt_ensemble.py SRC_RUN SCRATCH K (SRC_RUN: a run folder, holding config.toml)"))

src, scratch, K = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
if not scratch.exists():
    shutil.copytree(src, scratch, ignore=shutil.ignore_patterns("transfer", "eval", "results*.json", "events.jsonl"))
from engine import loading
import engine.tune as tune
from engine.config import apply_overrides, read_toml, validate
from engine.context import RunContext
from engine.evaluate import prompt_logit_fn, score
from engine.prompt import SoftPrompt
from engine.transfer import fixed_targets, transfer_prompt

torch.set_num_threads(1)
cfg = validate(apply_overrides(read_toml(scratch / "config.toml"), ["runtime.threads=1", "task.max_eval=300"]))
ctx = RunContext(config=cfg, run_dir=scratch)
if cfg.privacy.enabled:  # DP samples its own batches (the patch below would change nothing) and each extra
    # prompt spends ε again, unrecorded: one line, exit 2
    run_main(lambda: sys.exit("error: prompt_ensemble.py probes runs without DP: K prompts under DP are K releases, "
                              "spending ε K times, which probe.json does not account"))
large, small, tok = loading.both(ctx)
out = scratch / "probe.json"
found = json.loads(out.read_text()) if out.exists() else {}
def keep():
    from engine import artifacts
    artifacts.write_json(out, found)  # whole or not at all: the next run resumes from it

# the tune's only randomness is its batch order (the prompt starts at the init text): prompt k draws
# its batches from seed + 1000 k, the student and the data splits stay the run's
orig = tune.shuffled_batches
prompts = [SoftPrompt.load(scratch / "tune" / "prompt.safetensors")]
for k in range(1, K):
    path = scratch / f"tune_e{k}" / "kept.safetensors"
    if not path.exists():
        t0 = time.time()
        tune.shuffled_batches = lambda ex, bs, seed, k=k: orig(ex, bs, seed + 1000 * k)
        try:
            p, result, _ = tune.tune_prompt(ctx, f"tune_e{k}", small, tok, model_id="student", inputs={"k": k})
        finally:
            tune.shuffled_batches = orig
        path.parent.mkdir(exist_ok=True)
        p.save(path)
        found[f"tune_e{k}_minutes"] = (time.time() - t0) / 60
        keep()
    prompts.append(SoftPrompt.load(path))

val = loading.task(ctx, tok)["validation"]
verb = loading.verbalizer(ctx, tok)
pad, bs, dev = tok.pad_token_id, cfg.eval.batch_size, ctx.device
def acc(fn):
    return score(fn, val, verb, bs, pad, dev)[0]
plain_t = prompt_logit_fn(large, tok, None, ctx.dtype)
plain_s = prompt_logit_fn(small, tok, None, ctx.dtype)
pr_s = [prompt_logit_fn(small, tok, p, ctx.dtype) for p in prompts]
if "full_zs" not in found:
    found["full_zs"] = acc(plain_t)
    for k, f in enumerate(pr_s):
        found[f"cpt_{k}"] = acc(f)
        found[f"inference_{k}"] = acc(lambda b, f=f: plain_t(b) + f(b) - plain_s(b))
    found["cpt_ens"] = acc(lambda b: sum(f(b) for f in pr_s) / len(pr_s))
    found["inference_ens"] = acc(lambda b: plain_t(b) + sum(f(b) for f in pr_s) / len(pr_s) - plain_s(b))
    found["post_single_src"] = acc(prompt_logit_fn(large, tok, SoftPrompt.load(src / "transfer" / "post.safetensors"), ctx.dtype))
    keep()
print(found, flush=True)
path = scratch / "transfer_ens" / "post.safetensors"
if not path.exists():
    t0 = time.time()
    public = loading.public(ctx, tok)
    each = [fixed_targets(ctx, large, small, tok, p, public) for p in prompts]
    targets = {**each[0], "small_prompted": torch.stack([e["small_prompted"] for e in each]).mean(0)}
    alpha = float(cfg.transfer.alpha)
    p, _ = transfer_prompt(ctx, "post", alpha, large, tok, public, targets)
    path.parent.mkdir(exist_ok=True)
    p.save(path)
    found["transfer_minutes"] = (time.time() - t0) / 60
    found["post_ens"] = acc(prompt_logit_fn(large, tok, p, ctx.dtype))
    keep()
print(json.dumps(found, indent=1), flush=True)
