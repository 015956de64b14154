"""Accuracy of a (model, prompt) pair — or any logit function — on a labelled split."""
from __future__ import annotations

import math
import time
from typing import Callable

import torch

from engine import distributed
from engine.data.tasks import Examples, collate, eval_batches
from engine.errors import PostError
from engine.events import Progress
from engine.methods import METHODS
from engine.models import input_device
from engine.prompt import bos_id, prompted_logits

LogitFn = Callable[[dict], torch.Tensor]  # batch → (B, V) next-token logits

# nan class scores still have an argmax, so they would make an accuracy that means nothing. Any inf or nan
# among the label words' logits makes the mean cloze loss nan: the class scores are one matrix product over
# every label word's logit (Verbalizer.class_scores), where another class's zero weight times inf is nan.
NOT_FINITE_SCORES = ("the scores being evaluated are inf or nan, so no accuracy is reported: a prompt whose "
                     "training diverged (lower the learning rate of the stage that trained it: tune.lr, "
                     "transfer.lr) or a model whose outputs overflow (runtime.dtype)")


def prompt_logit_fn(model, tokenizer, prompt, dtype: str) -> LogitFn:
    """Logits of `model` with `prompt` (a SoftPrompt or None) at the prediction position."""
    bos = bos_id(tokenizer)
    weight = None if prompt is None or prompt.length == 0 else prompt.weight.to(input_device(model))
    return lambda batch: prompted_logits(model, batch["input_ids"], batch["attention_mask"], weight, bos, dtype)


@torch.inference_mode()
def accuracy(logit_fn: LogitFn, examples: Examples, verbalizer, batch_size: int, pad_id: int, device,
             on_batch: Callable[[], None] | None = None) -> float:
    """Several processes: each batch is scored by one rank, and the counts are summed over the ranks."""
    return score(logit_fn, examples, verbalizer, batch_size, pad_id, device, on_batch)[0]


@torch.inference_mode()
def score(logit_fn: LogitFn, examples: Examples, verbalizer, batch_size: int, pad_id: int, device,
          on_batch: Callable[[], None] | None = None, predicted: list[int] | None = None) -> tuple[float, float]:
    """(accuracy, mean cloze loss — the tuning loss, cross-entropy over the class scores). The loss is
    continuous where accuracy moves in steps of 1/n, so it can tell apart prompts whose accuracies tie.
    `predicted`, where given, is filled with each example's predicted class in the split's order (on every
    rank), so two methods can be compared example by example (engine.verdict.paired)."""
    from engine.losses import cloze_loss
    correct, loss = 0, 0.0
    # class + 1 at the examples this rank scored, 0 elsewhere: each example is scored by exactly one rank,
    # so the sum over ranks is every example's class + 1
    classes = torch.zeros(len(examples), dtype=torch.float64) if predicted is not None else None
    for indices in distributed.my_share(eval_batches(examples, batch_size)):
        batch = collate(examples, indices, pad_id, device)
        scores = verbalizer.class_scores(logit_fn(batch))
        correct += (scores.argmax(-1) == batch["labels"]).sum().item()
        loss += cloze_loss(scores, batch["labels"]).sum().item()  # summed in Python floats (float64 on any device)
        if classes is not None:
            classes[torch.tensor(indices)] = scores.argmax(-1).cpu().to(torch.float64) + 1
        if on_batch is not None:
            on_batch()
    n = max(len(examples), 1)
    total_loss = distributed.all_reduce_sum(torch.tensor([loss], dtype=torch.float64)).item()
    if not math.isfinite(total_loss):  # the same on every rank (all-reduced), so every rank raises
        raise PostError(NOT_FINITE_SCORES)
    if predicted is not None:
        predicted[:] = [int(c) - 1 for c in distributed.all_reduce_sum(classes).tolist()]
    return distributed.sum_over_ranks(correct) / n, total_loss / n


class EvalProgress:
    """Progress events for the eval stage, one step per batch of one method: on a CPU eval of every
    method takes minutes, and a bar that never moves looks like a hang."""

    def __init__(self, ctx, total: int):
        self.ctx, self.total, self.step = ctx, total, 0
        self.last = time.perf_counter()

    def advance(self) -> None:
        now = time.perf_counter()
        self.step += 1
        self.ctx.emit(Progress(stage="eval", step=self.step, total_steps=self.total, step_seconds=now - self.last))
        self.last = now


# ---------------------------------------------------------------- the eval stage

def _inference_fn(ctx, large, small, tokenizer, small_prompt) -> LogitFn:
    """Inference-time transfer: z_t(x) + z_s(p_s+x) − z_s(x), no training."""
    from engine.losses import inference_time_logits
    plain_t = prompt_logit_fn(large, tokenizer, None, ctx.dtype)
    prompted_s = prompt_logit_fn(small, tokenizer, small_prompt, ctx.dtype)
    plain_s = prompt_logit_fn(small, tokenizer, None, ctx.dtype)
    return lambda b: inference_time_logits(plain_t(b), prompted_s(b), plain_s(b))


def method_logit_fns(ctx, only=None):
    """name → logit function, for every method whose inputs exist in the run folder (or those in `only`)."""
    from engine import loading
    from engine.prompt import SoftPrompt
    cfg = ctx.config
    large, small, tokenizer = loading.both(ctx)
    small_prompt = SoftPrompt.load(loading.prompt_path(ctx, "tune"))
    fns: dict[str, LogitFn] = {}
    if cfg.eval.full_zs:
        fns["full_zs"] = prompt_logit_fn(large, tokenizer, None, ctx.dtype)
    if cfg.eval.full_pt and loading.prompt_path(ctx, "full_pt").is_file():
        fns["full_pt"] = prompt_logit_fn(large, tokenizer, SoftPrompt.load(loading.prompt_path(ctx, "full_pt")), ctx.dtype)
    fns["cpt"] = prompt_logit_fn(small, tokenizer, small_prompt, ctx.dtype)
    for method in cfg.transfer.methods:
        if METHODS[method].same_width and small_prompt.weight.shape[-1] != large.get_input_embeddings().weight.shape[-1]:
            ctx.once(f"{method}-width", lambda: ctx.log(
                f"{method} is not scored: the student's prompt is {small_prompt.weight.shape[-1]} wide and the large "
                f"model's embeddings {large.get_input_embeddings().weight.shape[-1]} (a smaller pre-trained student); "
                "POST's transfer is what bridges the widths", "warning"))
            continue
        if method == "direct":
            fns["direct"] = prompt_logit_fn(large, tokenizer, small_prompt, ctx.dtype)
        elif method == "inference":
            fns["inference"] = _inference_fn(ctx, large, small, tokenizer, small_prompt)
        else:
            path = loading.prompt_path(ctx, "transfer", method)
            if path.is_file():
                fns[method] = prompt_logit_fn(large, tokenizer, SoftPrompt.load(path), ctx.dtype)
    return {k: v for k, v in fns.items() if only is None or k in only}, tokenizer


def eval_batches_needed(ctx, split: str, names=None) -> int:
    """How many batches evaluate_methods(ctx, split, names) will run: the eval stage's progress total."""
    from engine import loading
    fns, tokenizer = method_logit_fns(ctx, names)
    examples = loading.task(ctx, tokenizer)[split]
    return len(fns) * len(distributed.my_share(eval_batches(examples, ctx.config.eval.batch_size)))  # this rank's


def evaluate_methods(ctx, split: str, names=None, progress: EvalProgress | None = None,
                     predictions: dict[str, list[int]] | None = None, limit: int = 0) -> dict[str, float]:
    """name → accuracy on `split` (its first `limit` examples where > 0); `predictions`, where given, gets
    name → each example's predicted class and "labels" → the true ones."""
    return {name: acc for name, (acc, _) in score_methods(ctx, split, names, progress, predictions, limit).items()}


def score_methods(ctx, split: str, names=None, progress: EvalProgress | None = None,
                  predictions: dict[str, list[int]] | None = None, limit: int = 0) -> dict[str, tuple[float, float]]:
    """name → (accuracy, mean cloze loss) on `split` (its first `limit` examples where > 0)."""
    from engine import loading
    fns, tokenizer = method_logit_fns(ctx, names)
    examples = loading.task(ctx, tokenizer)[split]
    examples = examples.head(limit) if limit else examples
    verbalizer = loading.verbalizer(ctx, tokenizer)
    on_batch = progress.advance if progress is not None else None
    found = {}
    for name, fn in fns.items():
        predicted = [] if predictions is not None else None
        found[name] = score(fn, examples, verbalizer, ctx.config.eval.batch_size, tokenizer.pad_token_id, ctx.device,
                            on_batch, predicted)
        if predictions is not None:
            predictions[name] = predicted
    if predictions is not None:
        predictions["labels"] = list(examples.labels)
    return found
