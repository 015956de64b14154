"""Prompt tuning on private data: the user's stage (on the student) and full PT (on the large model).

With `[privacy]` set, batches come from Poisson sampling and the gradient from the DP
aggregator (engine.privacy); the loop itself is the same.
"""
from __future__ import annotations

import json
import time

from engine import loading
from engine.data.tasks import collate
from engine.evaluate import accuracy, prompt_logit_fn
from engine.events import StageFinished, StageStarted
from engine.losses import cloze_loss
from engine.models import tokenizer_fingerprint
from engine.prompt import SoftPrompt, bos_id, prompted_logits
from engine.sampling import shuffled_batches, steps_for
from engine.training import make_optimizer, mean_gradient, train_prompt


def tune_prompt(ctx, stage: str, model, tokenizer, model_id: str, steps: int | None = None):
    """Tune a fresh prompt on `model` with the private task; returns (prompt, loop result, privacy session)."""
    cfg = ctx.config
    splits = loading.task(ctx, tokenizer)
    train, val = splits["train"], splits["validation"].head(cfg.tune.eval_size)
    verbalizer = loading.verbalizer(ctx, tokenizer)
    pad, bos = tokenizer.pad_token_id, bos_id(tokenizer)
    prompt = SoftPrompt.from_text(model, tokenizer, cfg.task.prompt_init, cfg.tune.prompt_length,
                                  model_id=model_id, tokenizer_fingerprint=tokenizer_fingerprint(tokenizer),
                                  task=cfg.task.source, stage=stage)
    total = steps or steps_for(len(train), cfg.tune.batch_size, cfg.tune.steps, cfg.tune.epochs)

    def loss_fn(prompt_copy, indices):
        batch = collate(train, indices, pad, ctx.device)
        logits = prompted_logits(model, batch["input_ids"], batch["attention_mask"],
                                 prompt_copy.to(ctx.device), bos, ctx.dtype)
        return cloze_loss(verbalizer.class_scores(logits), batch["labels"])

    def validate():
        return accuracy(prompt_logit_fn(model, tokenizer, prompt, ctx.dtype), val, verbalizer,
                        cfg.eval.batch_size, pad, ctx.device)

    dp = None
    batches, aggregate, after_step = shuffled_batches(train, cfg.tune.batch_size, cfg.runtime.seed), mean_gradient, None
    if cfg.privacy.enabled:
        from engine.privacy import DPSession
        dp = DPSession.create(ctx, stage, cfg.privacy, n_examples=len(train), batch_size=cfg.tune.batch_size,
                              steps=total, shape=tuple(prompt.weight.shape))
        batches, aggregate, after_step, total = dp.batches(cfg.runtime.seed), dp.aggregate, dp.after_step, dp.steps
    optimizer = make_optimizer(cfg.tune.optimizer, [prompt.weight], cfg.tune.lr)
    ctx.emit(StageStarted(stage=stage, total_steps=total, description=f"prompt tuning on {model_id}"))
    result = train_prompt(ctx, stage, prompt, loss_fn, batches, total, optimizer, aggregate,
                          tokens_of=lambda idx: sum(len(train.input_ids[i]) + prompt.length for i in idx),
                          validate=validate, eval_every=cfg.tune.eval_every, after_step=after_step,
                          patience=0 if dp is not None else cfg.tune.patience)
    # Keep the prompt with the best validation accuracy — never chosen on test. Under DP every
    # extra look at private validation data would cost privacy, so DP keeps the last step.
    if dp is None and result.best_weight is not None:
        prompt.weight.data.copy_(result.best_weight)
    return prompt, result, dp


def save_tuned(ctx, stage: str, prompt: SoftPrompt, result, dp, seconds: float) -> None:
    folder = ctx.stage_dir(stage)
    path = folder / "prompt.safetensors"
    kept = "last" if dp is not None or result.best_step is None else f"best validation (step {result.best_step})"
    prompt.save(path, steps=result.steps, kept=kept)
    ctx.saved(stage, path, "soft prompt")
    summary = {"steps": result.steps, "tokens": result.tokens, "final_loss": result.losses[-1] if result.losses else None,
               "first_loss": result.losses[0] if result.losses else None, "kept": kept,
               "val_accuracy": result.best_accuracy if dp is None else (result.validation[-1][1] if result.validation else None),
               "validation": result.validation, "seconds": seconds, "stopped": result.stopped_reason}
    if dp is not None:
        summary["privacy"] = dp.save_certificate(folder)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    ctx.emit(StageFinished(stage=stage, seconds=seconds, summary=summary))


def run_tune(ctx) -> None:
    """The user's stage: tune p_s on the student with the private data."""
    model, tokenizer = loading.small(ctx)
    start = time.time()
    prompt, result, dp = tune_prompt(ctx, "tune", model, tokenizer, loading.student_ref(ctx))
    save_tuned(ctx, "tune", prompt, result, dp, time.time() - start)


def run_full_pt(ctx) -> None:
    """The expensive reference: tune a prompt on the large model itself."""
    model, tokenizer = loading.large(ctx)
    start = time.time()
    steps = ctx.config.eval.full_pt_steps or None
    prompt, result, dp = tune_prompt(ctx, "full_pt", model, tokenizer, ctx.config.models.large, steps)
    save_tuned(ctx, "full_pt", prompt, result, dp, time.time() - start)
