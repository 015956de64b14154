"""Student recipe experiment: distil (teacher hidden states cached once) → tune → direct / inference / POST.

Everything is scored on the *validation* split (recipes must never be chosen on test). The recipe
here is not yet the engine's (engine/distill.py trains on KD + LM + cosine with the full LM head):
the teacher's final normalised hidden states are computed once per corpus row, and the student is
trained to match them (MSE + cosine), so no LM head runs in the loop. `--student DIR` skips
distillation and scores an existing student (e.g. one cached by `post run`).

    python bench/student_recipe.py --template "{text} It was" --steps 600 --alphas 0.0,0.5
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
import torch.nn.functional as F  # noqa: E402

import bench.common  # noqa: E402,F401  (offline hub)
from engine import loading, models  # noqa: E402
from engine.context import RunContext  # noqa: E402
from engine.data.tasks import load_corpus  # noqa: E402
from engine.distill import _learning_rate, pack  # noqa: E402
from engine.evaluate import accuracy, prompt_logit_fn  # noqa: E402
from engine.losses import inference_time_logits  # noqa: E402
from engine.presets import load_config  # noqa: E402
from engine.transfer import fixed_targets, transfer_prompt  # noqa: E402
from engine.tune import tune_prompt  # noqa: E402


def cached_hidden(teacher, rows: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """The teacher's final normalised hidden states for every row, once (bf16 to halve the memory)."""
    with torch.inference_mode():
        return torch.cat([teacher.model(input_ids=rows[i:i + batch], use_cache=False).last_hidden_state.bfloat16()
                          for i in range(0, len(rows), batch)])


def distil_on_hidden(student, rows, targets, steps: int, batch: int, lr: float, seed: int = 0) -> list[float]:
    student.get_input_embeddings().requires_grad_(False)  # tied to the LM head: both stay the teacher's
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _learning_rate(s, steps, 0.05))
    generator = torch.Generator().manual_seed(seed)
    order, cursor, losses = torch.randperm(len(rows), generator=generator), 0, []
    student.train()
    for _ in range(steps):
        if cursor + batch > len(order):
            order, cursor = torch.randperm(len(rows), generator=generator), 0
        idx = order[cursor:cursor + batch]
        cursor += batch
        h_s, h_t = student.model(input_ids=rows[idx], use_cache=False).last_hidden_state, targets[idx].float()
        loss = 10 * F.mse_loss(h_s, h_t) + (1 - F.cosine_similarity(h_s, h_t, dim=-1)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return losses


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--student", default="", help="score this student instead of distilling one")
    ap.add_argument("--blocks", default="0,1,28,29")
    ap.add_argument("--corpus", default="amazon")
    ap.add_argument("--template", default="{text}", help="applied to each KD text, e.g. '{text} It was'")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--tune-steps", type=int, default=150)
    ap.add_argument("--transfer-steps", type=int, default=100)
    ap.add_argument("--alphas", default="0.0")
    ap.add_argument("--vocab", default="full", choices=["full", "labels"])
    ap.add_argument("--nval", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_config(args.preset, overrides=[f"tune.steps={args.tune_steps}", f"transfer.steps={args.transfer_steps}",
                                              f"task.max_eval={args.nval}", f'transfer.vocab="{args.vocab}"'])
    ctx = RunContext(cfg, Path("/tmp/post-student-recipe"))
    teacher, tok = loading.large(ctx)
    res: dict = {"args": vars(args)}
    if args.student:
        student, _ = models.load(args.student)
    else:
        rows = pack(tok, [args.template.format(text=t) for t in load_corpus(args.corpus, "", "train", "text", 0, 0)],
                    args.seq)
        start = time.time()
        targets = cached_hidden(teacher, rows)
        res["cache_s"] = round(time.time() - start, 1)
        student = models.make_student(teacher, [int(b) for b in args.blocks.split(",")])
        start = time.time()
        losses = distil_on_hidden(student, rows, targets, args.steps, args.batch, args.lr)
        res.update(distill_s=round(time.time() - start, 1), rows=len(rows), loss_first=losses[0], loss_last=losses[-1])
    student = student.eval().requires_grad_(False)
    ctx.cache["small"] = (student, tok)
    val = loading.task(ctx, tok)["validation"].head(args.nval)
    verbalizer, pad = loading.verbalizer(ctx, tok), tok.pad_token_id

    def score(fn) -> float:
        return accuracy(fn, val, verbalizer, 32, pad, ctx.device)

    small_prompt, _, _ = tune_prompt(ctx, "tune", student, tok, "student")
    plain_t, plain_s = prompt_logit_fn(teacher, tok, None, "float32"), prompt_logit_fn(student, tok, None, "float32")
    prompted_s = prompt_logit_fn(student, tok, small_prompt, "float32")
    res.update(zs=score(plain_t), cpt=score(prompted_s), direct=score(prompt_logit_fn(teacher, tok, small_prompt, "float32")),
               inference=score(lambda b: inference_time_logits(plain_t(b), prompted_s(b), plain_s(b))))
    public = loading.public(ctx, tok)
    fixed = fixed_targets(ctx, teacher, student, tok, small_prompt, public)
    for alpha in (float(a) for a in args.alphas.split(",")):
        prompt, _ = transfer_prompt(ctx, "post", alpha, teacher, tok, public, fixed)
        res[f"post_alpha{alpha:g}"] = score(prompt_logit_fn(teacher, tok, prompt, "float32"))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
