"""Wall time of POST (tune on the student + transfer) vs prompt tuning the large model, same private epochs.

Step costs are measured side by side in one process, interleaved in each repetition (so load on a
shared machine hits both alike); the totals scale them by the step counts the preset implies:

    POST    = epochs·N/B tune steps on the student + target pass over the public set + transfer steps
              (three transfers when transfer.alpha = "select": α = 0, 0.5 and 1 are all trained)
    Full PT = epochs·N/B tune steps on the large model

Distillation is excluded (the model owner does it once per large model, as in the paper's table).
Weights do not change the cost, so the student here is the teacher with the preset's blocks kept.

    python bench/post_vs_fullpt.py [--preset mr-smollm2] [--repeats 3] [--steps 4] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/x.py` from the repo root works

from bench.common import models
from engine.data.tasks import collate, load_public, load_task
from engine.losses import cloze_loss, transfer_loss
from engine.presets import load_config
from engine.prompt import SoftPrompt, bos_id, prompted_logits
from engine.sampling import steps_for
from engine.verbalizer import Verbalizer


def timed(fn, steps: int) -> float:
    """Seconds per step over `steps` calls (after one warm-up call)."""
    fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="mr-smollm2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per measurement")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.preset)
    large, small, tok = models(cfg.models.large, cfg.distill.blocks)
    bos, pad = bos_id(tok), tok.pad_token_id
    train = load_task(cfg.task, tok, cfg.runtime.seed)["train"]
    public = load_public(cfg.public, tok, cfg.runtime.seed)
    verbalizer = Verbalizer.build(tok, cfg.task.label_words)
    B, m = cfg.tune.batch_size, cfg.tune.prompt_length
    # a batch of typical length: the median-length examples (length-grouped batches in the pipeline)
    by_len = sorted(range(len(train)), key=lambda i: len(train.input_ids[i]))
    batch = collate(train, by_len[len(by_len) // 2:][:B], pad, "cpu")
    pub = collate(public, list(range(min(cfg.transfer.batch_size, len(public)))), pad, "cpu")
    init = cfg.task.prompt_init

    def tune_step(model):
        prompt = SoftPrompt.from_text(model, tok, init, m)
        def step():
            copy = prompt.per_example(B)
            logits = prompted_logits(model, batch["input_ids"], batch["attention_mask"], copy, bos)
            cloze_loss(verbalizer.class_scores(logits), batch["labels"]).sum().backward()
        return step

    p_t = SoftPrompt.from_text(large, tok, init, m)
    with torch.inference_mode():
        fixed = (prompted_logits(small, pub["input_ids"], pub["attention_mask"], p_t.weight, bos),
                 prompted_logits(small, pub["input_ids"], pub["attention_mask"], None, bos),
                 prompted_logits(large, pub["input_ids"], pub["attention_mask"], None, bos))

    def transfer_step():
        copy = p_t.per_example(len(pub["input_ids"]))
        z = prompted_logits(large, pub["input_ids"], pub["attention_mask"], copy, bos)
        transfer_loss(z, *fixed, alpha=0.5).sum().backward()

    @torch.inference_mode()
    def target_pass():  # the three fixed outputs for one public batch
        for model, prompt in ((small, p_t.weight), (small, None), (large, None)):
            prompted_logits(model, pub["input_ids"], pub["attention_mask"], prompt, bos)

    transfers = 3 if cfg.transfer.alpha == "select" else 1  # "select" trains α = 0, 0.5 and 1, then picks one
    tune_steps = steps_for(len(train), B, cfg.tune.steps, cfg.tune.epochs)
    target_batches = -(-len(public) // len(pub["input_ids"]))
    small_step, large_step = tune_step(small), tune_step(large)
    ratios, single, rows = [], [], []
    for _ in range(args.repeats):
        t_small, t_large = timed(small_step, args.steps), timed(large_step, args.steps)
        t_transfer, t_targets = timed(transfer_step, args.steps), timed(target_pass, 1)
        one = tune_steps * t_small + target_batches * t_targets + cfg.transfer.steps * t_transfer
        post = one + (transfers - 1) * cfg.transfer.steps * t_transfer
        full = tune_steps * t_large
        ratios.append(full / post)
        single.append(full / one)
        rows.append((t_small, t_large, t_transfer, post, full))
    middle = sorted(range(len(ratios)), key=ratios.__getitem__)[len(ratios) // 2]  # the median repetition
    med = statistics.median(ratios)
    t_small, t_large, t_transfer, post, full = rows[middle]
    print(f"preset={args.preset} large={cfg.models.large} blocks={cfg.distill.blocks} batch={B} m={m} "
          f"threads={args.threads} repeats={args.repeats}")
    print(f"tune step: student {t_small:.3f} s, large {t_large:.3f} s; transfer step {t_transfer:.3f} s")
    print(f"private epochs {cfg.tune.epochs if not cfg.tune.steps else cfg.tune.steps * B / len(train):.2f} "
          f"= {tune_steps} steps of {B}; transfer {transfers} × {cfg.transfer.steps} steps on {len(public)} public examples")
    print(f"POST {post / 60:.1f} min vs full PT {full / 60:.1f} min")
    print(f"ratio full PT / POST  {med:.2f}  (median of {args.repeats}; goal >= 8)")
    if transfers > 1:
        print(f"ratio with α known in advance (one transfer)  {statistics.median(single):.2f}  (median of {args.repeats})")


if __name__ == "__main__":
    main()
