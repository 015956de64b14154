"""Probe (issue 12): POST's validation accuracy along the transfer (every 25 steps; 300 examples): would
choosing the transfer's step on validation, as full PT does, help? Also the test accuracy (300) of the
last and the best step. Writes SCRATCH/probe2.json.
    python bench/transfer_curve.py SRC_RUN SCRATCH [KEY=VALUE ...]   (SRC_RUN: a finished run, e.g. a student_lever.sh
    one; KEY=VALUE: settings for the transfer, e.g. transfer.steps=300)
"""
import json, shutil, sys, time
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/...` from the repo root works
from bench.common import run_main
if len(sys.argv) < 3 or not (Path(sys.argv[1]) / "config.toml").is_file():  # one line and exit 2, not a traceback
    run_main(lambda: sys.exit("error: usage: python bench/transfer_curve.py SRC_RUN SCRATCH [KEY=VALUE ...] (SRC_RUN: a run folder, holding config.toml)"))

src, scratch = Path(sys.argv[1]), Path(sys.argv[2])
if not scratch.exists():
    shutil.copytree(src, scratch, ignore=shutil.ignore_patterns("transfer", "eval", "results*.json", "events.jsonl"))
from engine import loading
import engine.transfer as tr
from engine.config import apply_overrides, read_toml, validate
from engine.context import RunContext
from engine.evaluate import prompt_logit_fn, score
from engine.prompt import SoftPrompt

torch.set_num_threads(1)
cfg = validate(apply_overrides(read_toml(scratch / "config.toml"), ["runtime.threads=1", "task.max_eval=300", *sys.argv[3:]]))
ctx = RunContext(config=cfg, run_dir=scratch)
from engine.privacy import boundary
# a KEY=VALUE may name another public set: trained on only once compared with the private data
run_main(lambda: boundary.check_transfer_alone(ctx))  # (bench/compare_public.py SCRATCH KEY=VALUE compares it)
large, small, tok = loading.both(ctx)
splits = loading.task(ctx, tok)
verb = loading.verbalizer(ctx, tok)
def acc(prompt, split):
    return score(prompt_logit_fn(large, tok, prompt, ctx.dtype), splits[split], verb, cfg.eval.batch_size,
                 tok.pad_token_id, ctx.device)[0]
# the transfer's loop with the validation hook full PT has (engine.training.train_prompt keeps the best step)
orig = tr.train_prompt
def with_validation(ctx_, stage, prompt, *a, **kw):
    kw["validate"], kw["eval_every"] = (lambda: acc(prompt, "validation")), 25
    return orig(ctx_, stage, prompt, *a, **kw)
tr.train_prompt = with_validation
t0 = time.time()
public = loading.public(ctx, tok)
small_prompt = SoftPrompt.load(scratch / "tune" / "prompt.safetensors")
targets = tr.fixed_targets(ctx, large, small, tok, small_prompt, public)
alpha = float(cfg.transfer.alpha)
prompt, result = tr.transfer_prompt(ctx, "post", alpha, large, tok, public, targets)
found = {"sets": sys.argv[3:], "alpha": alpha, "validation": result.validation, "best_step": result.best_step,
         "test_last": acc(prompt, "test")}
if result.best_weight is not None:
    prompt.weight.data.copy_(result.best_weight)
found["test_best"] = acc(prompt, "test")
found["minutes"] = (time.time() - t0) / 60
from engine import artifacts
artifacts.write_json(scratch / "probe2.json", found)  # whole or not at all
print(json.dumps(found), flush=True)
