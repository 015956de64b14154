"""Prompt-tuning throughput: post's step vs a plain PEFT prompt-tuning loop, same model and data.

post: prompt expanded per example, LM head only at the prediction position, batches grouped by
length. PEFT: PromptTuningConfig on the same model, full logits at every position, random batches
padded to their longest example (the usual loop). Ratio = post tokens/s ÷ PEFT tokens/s
(real, non-pad tokens counted for both).

    python bench/throughput.py [--model smollm2-135m] [--blocks 0,1,-2,-1] [--steps 6] [--repeats 3]
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/x.py` from the repo root works

from bench.common import texts
from engine.data.tasks import Examples, collate, length_grouped
from engine.losses import cloze_loss
from engine.models import load, make_student
from engine.prompt import SoftPrompt, prompted_logits
from engine.verbalizer import Verbalizer

WORDS = [["terrible", "negative", "bad", "poor", "awful"], ["positive", "good", "great", "awesome", "brilliant", "amazing"]]
INIT = "Predict if sentiment of this review is positive or negative."


def post_run(model, tok, examples, verbalizer, batches, m) -> float:
    prompt = SoftPrompt.from_text(model, tok, INIT, m)
    opt = torch.optim.Adam([prompt.weight], lr=1e-3)
    tokens, start = 0, time.perf_counter()
    for idx in batches:
        b = collate(examples, idx, tok.pad_token_id, "cpu")
        copy = prompt.per_example(len(idx))
        cloze_loss(verbalizer.class_scores(prompted_logits(model, b["input_ids"], b["attention_mask"], copy)),
                   b["labels"]).sum().backward()
        prompt.weight.grad = copy.grad.mean(0)
        opt.step()
        opt.zero_grad()
        tokens += int(b["attention_mask"].sum())
    return tokens / (time.perf_counter() - start)


def peft_run(peft_model, tok, examples, verbalizer, batches, m) -> float:
    opt = torch.optim.Adam([p for p in peft_model.parameters() if p.requires_grad], lr=1e-3)
    tokens, start = 0, time.perf_counter()
    for idx in batches:
        b = collate(examples, idx, tok.pad_token_id, "cpu")
        ids, mask = b["input_ids"], b["attention_mask"]
        logits = peft_model(input_ids=ids, attention_mask=mask).logits  # (B, m+L, V): every position
        last = mask.sum(1) - 1 + m                                       # right padding: last real token
        scores = verbalizer.class_scores(logits[torch.arange(len(idx)), last])
        cloze_loss(scores, b["labels"]).mean().backward()
        opt.step()
        opt.zero_grad()
        tokens += int(mask.sum())
    return tokens / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--blocks", default="0,1,-2,-1", help="student blocks (empty: the whole model)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--prompt-length", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load(args.model)
    if args.blocks:
        model = make_student(model, [int(b) for b in args.blocks.split(",")])
    model.requires_grad_(False)
    n = args.batch * args.steps
    rows = texts(n)
    examples = Examples([tok(t, add_special_tokens=False, truncation=True, max_length=48).input_ids for t in rows],
                        [i % 2 for i in range(n)])
    verbalizer = Verbalizer.build(tok, WORDS)
    order = list(range(n))
    random.Random(0).shuffle(order)
    grouped = length_grouped(order, examples, args.batch)
    plain = [order[k:k + args.batch] for k in range(0, n, args.batch)]
    import copy
    from peft import PromptTuningConfig, get_peft_model
    peft_model = get_peft_model(copy.deepcopy(model), PromptTuningConfig(task_type="CAUSAL_LM",
                                                                         num_virtual_tokens=args.prompt_length))
    ratios, ours, theirs = [], [], []
    for _ in range(args.repeats):  # interleaved, so machine noise hits both alike
        a = post_run(model, tok, examples, verbalizer, grouped, args.prompt_length)
        b = peft_run(peft_model, tok, examples, verbalizer, plain, args.prompt_length)
        ours.append(a), theirs.append(b), ratios.append(a / b)
    print(f"model={args.model} blocks={args.blocks or 'all'} batch={args.batch} steps={args.steps} "
          f"m={args.prompt_length} threads={args.threads} repeats={args.repeats}")
    print(f"post  tokens/s (median) {statistics.median(ours):,.0f}")
    print(f"PEFT  tokens/s (median) {statistics.median(theirs):,.0f}")
    print(f"ratio post / PEFT (median of per-repeat ratios) {statistics.median(ratios):.2f}  (goal >= 1.5)")


if __name__ == "__main__":
    main()
