"""Transfer step time vs one prompted forward+backward of the large model, and vs the naive step.

POST's step needs z_s(p_s+x̂), z_s(x̂), z_t(x̂), which do not depend on the prompt being learned:
post caches them once, so a step is one prompted forward+backward of the large model. The naive
step recomputes all four outputs every time.

    python bench/transfer_step.py [--large smollm2-135m] [--batch 8] [--repeats 5]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/x.py` from the repo root works

from bench.common import median_time, models, texts
from engine.losses import transfer_loss
from engine.prompt import SoftPrompt, prompted_logits


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--large", default="smollm2-135m")
    ap.add_argument("--blocks", default="0,1,-2,-1")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt-length", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    large, small, tok = models(args.large, [int(b) for b in args.blocks.split(",")])
    enc = tok(texts(args.batch), padding=True, truncation=True, max_length=48, return_tensors="pt",
              add_special_tokens=False)
    ids, mask = enc.input_ids, enc.attention_mask
    p_s = SoftPrompt.from_text(small, tok, "Predict if sentiment of this review is positive or negative.", args.prompt_length)
    p_t = SoftPrompt.from_text(large, tok, "Predict if sentiment of this review is positive or negative.", args.prompt_length)
    opt = torch.optim.Adam([p_t.weight], lr=1e-3)
    with torch.inference_mode():
        cached = (prompted_logits(small, ids, mask, p_s.weight), prompted_logits(small, ids, mask, None),
                  prompted_logits(large, ids, mask, None))

    def step(targets):
        copy = p_t.per_example(len(ids))
        loss = transfer_loss(prompted_logits(large, ids, mask, copy), *targets, alpha=0.5).sum()
        loss.backward()
        p_t.weight.grad = copy.grad.mean(0)
        opt.step()
        opt.zero_grad()

    def plain_fwd_bwd():
        out = prompted_logits(large, ids, mask, p_t.weight.unsqueeze(0).expand(len(ids), -1, -1))
        out.logsumexp(-1).sum().backward()
        p_t.weight.grad = None

    def naive():
        with torch.no_grad():
            targets = (prompted_logits(small, ids, mask, p_s.weight), prompted_logits(small, ids, mask, None),
                       prompted_logits(large, ids, mask, None))
        step(targets)

    t_step = median_time(lambda: step(cached), args.repeats)
    t_plain = median_time(plain_fwd_bwd, args.repeats)
    t_naive = median_time(naive, args.repeats)
    print(f"large={args.large} batch={args.batch} m={args.prompt_length} threads={args.threads} repeats={args.repeats}")
    print(f"post transfer step      {t_step:.3f} s (median)")
    print(f"prompted fwd+bwd        {t_plain:.3f} s")
    print(f"naive step (recompute)  {t_naive:.3f} s")
    print(f"ratio step / fwd+bwd    {t_step / t_plain:.3f}  (goal <= 1.15)")
    print(f"ratio naive / step      {t_naive / t_step:.3f}")


if __name__ == "__main__":
    main()
