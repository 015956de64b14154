"""DP step time over non-DP step time for prompt tuning on a student-sized model.

    HF_HUB_OFFLINE=1 python bench/dp_overhead.py            # ~1–2 min on one CPU thread
    python bench/dp_overhead.py --steps 4 --reps 3 --batch 16 --prompt 20 --threads 1

Model: the SmolLM2-135M student (blocks [0, -1] by engine.models.make_student) when
~/.cache/post/smollm2-135m is fetched, else a random 2-block GPT-2 of the same width
(n_embd 576, vocab 49152). Data: the `mr` asset if cached, else the smoke sentences.
Every variant runs the same fixed index batches (the DP mechanism's cost, not Poisson batch
size noise), interleaved rep by rep; each reports the median step time over all its steps.

  plain   engine.training.prompt_step with the mean aggregator (the non-DP tune stage)
  dp      prompt_step with DPSession.aggregate (clip, sum, noise, /qN) + after_step (RDP ε every step)
  opacus  Opacus' hook path: the prompt as a per-example module (B, m, d) = expand(P) wrapped in
          GradSampleModule with a registered grad sampler, and Opacus' DPOptimizer (clip + noise)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import warnings  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from engine.config import PrivacyConfig, TaskConfig  # noqa: E402
from engine.data.tasks import collate, load_task  # noqa: E402
from engine.losses import cloze_loss  # noqa: E402
from engine.privacy import DPSession  # noqa: E402
from engine.prompt import SoftPrompt, bos_id, prompted_logits  # noqa: E402
from engine.training import make_optimizer, mean_gradient, prompt_step  # noqa: E402
from engine.verbalizer import Verbalizer  # noqa: E402

CACHE = Path(os.environ.get("POST_CACHE", Path.home() / ".cache" / "post"))
LABEL_WORDS = [["terrible", "negative", "bad", "poor", "awful"], ["positive", "good", "great", "awesome", "brilliant"]]


def student_model():
    from engine import models
    folder = CACHE / "smollm2-135m"
    if (folder / "config.json").is_file():
        teacher, tok = models.load(str(folder))
        return models.make_student(teacher, [0, -1]), tok, "SmolLM2-135M student, blocks [0, -1]"
    from transformers import GPT2Config, GPT2LMHeadModel
    from engine.tiny import build_tokenizer
    tok = build_tokenizer()
    cfg = GPT2Config(vocab_size=49152, n_embd=576, n_layer=2, n_head=9, n_positions=512)
    return GPT2LMHeadModel(cfg), tok, "random GPT-2, 2 blocks, n_embd 576, vocab 49152"


class PromptModule(nn.Module):
    """The prompt as Opacus sees it: forward(input_ids) → the (B, m, d) per-example prompt."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight.clone())

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.weight.unsqueeze(0).expand(input_ids.shape[0], -1, -1)


def register_prompt_sampler():
    from opacus.grad_sample import register_grad_sampler

    @register_grad_sampler(PromptModule)
    def _prompt_grad_sample(layer, activations, backprops):
        return {layer.weight: backprops}  # d(expanded prompt)/dP is the identity per example


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5, help="timed steps per variant per repetition")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--prompt", type=int, default=20)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message="Full backward hook is firing")  # expected: the prompt has no inputs
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model, tok, what = student_model()
    model.requires_grad_(False).eval()
    source = "mr" if (CACHE / "mr" / "train.parquet").is_file() else "smoke"
    train = load_task(TaskConfig(source=source, label_words=LABEL_WORDS, max_length=args.max_length), tok, 0)["train"]
    verbalizer = Verbalizer.build(tok, LABEL_WORDS)
    pad, bos = tok.pad_token_id, bos_id(tok)
    prompt = SoftPrompt.from_text(model, tok, "Predict if sentiment of this text is positive or negative.", args.prompt)
    n = len(train)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randperm(n, generator=gen)[:args.batch].tolist() for _ in range(args.steps)]
    print(f"model: {what}; data: {source} ({n} examples); batch {args.batch}, prompt {args.prompt}, "
          f"max_length {args.max_length}, {args.threads} thread(s), {args.reps} reps × {args.steps} steps, variants interleaved")

    def loss_fn(copy, indices):
        b = collate(train, indices, pad, "cpu")
        return cloze_loss(verbalizer.class_scores(prompted_logits(model, b["input_ids"], b["attention_mask"], copy, bos)),
                          b["labels"])

    ctx = SimpleNamespace(emit=lambda e: None, log=lambda m, level="info": None, saved=lambda *a: None,
                          config=SimpleNamespace(runtime=SimpleNamespace(seed=0)), run_dir=None)
    dp = DPSession.create(ctx, "tune", PrivacyConfig(epsilon=8.0), n_examples=n, batch_size=args.batch,
                          steps=1000, shape=tuple(prompt.weight.shape))

    # -------- Opacus' hook path (checked against our per-example gradients first)
    opacus_note = ""
    try:
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer
        register_prompt_sampler()
        module = PromptModule(prompt.weight.data)
        gsm = GradSampleModule(module, batch_first=True, loss_reduction="mean").train()

        def opacus_loss(indices):
            b = collate(train, indices, pad, "cpu")
            copy = gsm(b["input_ids"])
            logits = prompted_logits(model, b["input_ids"], b["attention_mask"], copy, bos)
            return cloze_loss(verbalizer.class_scores(logits), b["labels"]).mean()

        opacus_loss(batches[0]).backward()
        ours = prompt.per_example(len(batches[0]))
        loss_fn(ours, batches[0]).sum().backward()
        diff = (module.weight.grad_sample - ours.grad).abs().max().item()
        gsm.zero_grad(set_to_none=True)
        opacus_note = f"per-example gradients match ours: max |diff| = {diff:.1e}"
        opt = DPOptimizer(torch.optim.Adam(gsm.parameters(), lr=1e-3), noise_multiplier=dp.noise_multiplier,
                          max_grad_norm=1.0, expected_batch_size=args.batch, loss_reduction="mean")
    except Exception as err:  # noqa: BLE001 — report why the comparison could not run
        gsm, opacus_note = None, f"Opacus path unavailable: {type(err).__name__}: {err}"

    plain_opt = make_optimizer("adam", [prompt.weight], 1e-3)
    dp_opt = make_optimizer("adam", [prompt.weight], 1e-3)

    def plain_step(indices):
        prompt_step(prompt, plain_opt, loss_fn, indices, mean_gradient)

    dp_step_no = [0]

    def dp_step(indices):
        prompt_step(prompt, dp_opt, loss_fn, indices, dp.aggregate)
        dp_step_no[0] += 1
        dp.before_step(dp_step_no[0])
        dp.after_step(dp_step_no[0])

    def opacus_step(indices):
        opt.zero_grad(set_to_none=True)
        opacus_loss(indices).backward()
        opt.step()

    variants = {"plain": plain_step, "dp": dp_step}
    if gsm is not None:
        variants["opacus"] = opacus_step
    for fn in variants.values():  # warm-up
        fn(batches[0])
    times = {k: [] for k in variants}
    start = time.time()
    for _ in range(args.reps):
        for indices in batches:  # variants alternate step by step: load drift hits them alike
            for name, fn in variants.items():
                t = time.perf_counter()
                fn(indices)
                times[name].append(time.perf_counter() - t)
    accounted = f"{dp.total_steps} steps, ε = {dp.epsilon_spent:.3f}"
    # the mechanism alone (what DP adds to a step): aggregate a (B, m, d) batch + after_step
    grads = torch.randn(args.batch, *prompt.weight.shape)
    t = time.perf_counter()
    for i in range(50):
        dp.aggregate(grads)
        dp.before_step(i)
        dp.after_step(i)
    mechanism = (time.perf_counter() - t) / 50
    median = {k: statistics.median(v) for k, v in times.items()}
    for k, v in median.items():
        print(f"  {k:7s} median step {v * 1000:8.1f} ms  (min {min(times[k]) * 1000:.1f}, max {max(times[k]) * 1000:.1f})")
    print(f"dp / plain     = {median['dp'] / median['plain']:.3f}   (goal ≤ 1.10; step-time noise on a shared CPU "
          f"is larger than the difference)")
    print(f"mechanism alone (clip + sum + noise + ε): {mechanism * 1000:.2f} ms/step "
          f"= {mechanism / median['plain'] * 100:.2f}% of a plain step → expected ratio {1 + mechanism / median['plain']:.3f}")
    if "opacus" in median:
        print(f"opacus / plain = {median['opacus'] / median['plain']:.3f}   ({opacus_note})")
    else:
        print(f"opacus: {opacus_note}")
    print(f"accounting: ε after every step (RDP, cached per-step curve): "
          f"{accounted}; timed in {time.time() - start:.0f} s")
    print("command: " + " ".join([os.path.relpath(sys.executable), *sys.argv]))


if __name__ == "__main__":
    main()
