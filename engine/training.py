"""The one prompt-training loop (tune, full PT, transfer).

Each step: per-example loss → one backward → per-example gradients of the prompt copy
(`SoftPrompt.per_example`) → an aggregator makes the update's gradient. The plain aggregator
averages; the DP aggregator (engine.privacy) clips each, sums, adds noise and divides by the
expected batch size. Same loop, same code path, with or without privacy.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol

import torch

from engine import distributed, ranks
from engine.errors import PostError
from engine.events import Metric, Progress
from engine.prompt import SoftPrompt

LossFn = Callable[[torch.Tensor, list[int]], torch.Tensor]  # (B,m,d) prompt copy, indices → (B,) losses


class Aggregator(Protocol):
    def __call__(self, per_example_grads: torch.Tensor) -> torch.Tensor: ...


def mean_gradient(per_example_grads: torch.Tensor) -> torch.Tensor:
    return per_example_grads.mean(0)


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr) if name == "adam" else torch.optim.SGD(params, lr=lr)


_LEARNING_RATE = {"tune": "tune.lr", "full_pt": "tune.lr", "transfer": "transfer.lr", "distill": "distill.lr"}
# What a stage starts from, for a loss that is already not finite before its first update (no rate is at fault).
_STARTS_FROM = {"tune": "the student's outputs on the task's examples",
                "full_pt": "the large model's outputs on the task's examples",
                "transfer": "the small prompt (a tune whose last update diverged leaves a huge one: "
                            "tune again with a lower tune.lr) or the models' outputs on the public set",
                "distill": "the teacher's or the student's outputs on the corpus",
                "audit": "the student's outputs on the task's examples"}


def _rate_of(stage: str) -> str:
    """The setting that sets a stage's learning rate ("transfer:post" → transfer.lr)."""
    return _LEARNING_RATE.get(stage.split(":")[0], "the stage's learning rate")


def _advice(stage: str) -> str:
    """What to change after a divergence. The audit's shadows replay the released tune's recipe, which the
    audit refuses to change (engine.audit): its rate is changed by tuning again."""
    if stage.split(":")[0] == "audit":
        return "the shadows replay the tune's recipe: tune again with a lower tune.lr, then audit"
    return f"lower {_rate_of(stage)} and run again"


def check_finite(stage: str, step: int, loss: float) -> None:
    """A loss that is inf or nan poisons every later step and whatever the stage would write (a prompt, a
    cached student): stop at once with one line. Over several processes the loss is the global batch's, the
    same on every rank, so every rank stops at the same step. At step 1 no update has been made yet, so the
    learning rate cannot be at fault: what the stage starts from is named instead."""
    if math.isfinite(loss):
        return
    if step == 1:
        start = _STARTS_FROM.get(stage.split(":")[0], "its inputs")
        raise PostError(f"{stage}: the loss is {loss} at step 1, before any update, so no learning rate is at "
                        f"fault: what the stage starts from is not finite — check {start}")
    raise PostError(f"{stage}: the loss became {loss} at step {step}: the training diverged and nothing of "
                    f"it is kept — {_advice(stage)}")


def check_finite_weights(stage: str, tensors) -> None:
    """The trained weights after the last update, which no later loss has seen (every rank holds the same)."""
    if not all(torch.isfinite(t).all() for t in tensors):
        raise PostError(f"{stage}: the weights became inf or nan in the last update: the training diverged and "
                        f"nothing of it is kept — {_advice(stage)}")


def prompt_step(prompt: SoftPrompt, optimizer, loss_fn: LossFn, indices: list[int],
                aggregate: Aggregator) -> float | None:
    """One update; returns the batch's mean loss (None for an empty batch, a noise-only step).

    Over several processes `indices` is this rank's share of the global batch (maybe empty) and
    `aggregate` an engine.distributed.ShardedAggregator: gradient and loss of the global batch."""
    copy = prompt.per_example(len(indices))
    if indices:
        losses = loss_fn(copy, indices)
        losses.sum().backward()
        grads, losses = copy.grad, losses.detach()
    else:
        grads, losses = torch.zeros_like(copy), torch.zeros(0)
    optimizer.zero_grad(set_to_none=True)
    if getattr(aggregate, "distributed", False):
        grad, loss = aggregate.reduce(grads, losses)  # every rank, every step: one all-reduce
    else:
        grad, loss = aggregate(grads), (losses.mean().item() if losses.numel() else None)
    prompt.weight.grad = grad.to(prompt.weight.dtype)
    optimizer.step()
    return loss


@dataclass
class LoopResult:
    steps: int = 0
    tokens: int = 0  # tokens through the model (prompt included), for throughput reports
    losses: list[float] = field(default_factory=list)
    validation: list[tuple[int, float]] = field(default_factory=list)
    best_step: int | None = None
    best_accuracy: float | None = None
    best_weight: torch.Tensor | None = None
    cancelled: bool = False
    stopped_reason: str = ""


def train_prompt(ctx, stage: str, prompt: SoftPrompt, loss_fn: LossFn, batches: Iterator[list[int]],
                 steps: int, optimizer, aggregate: Aggregator = mean_gradient,
                 tokens_of: Callable[[list[int]], int] = len,
                 validate: Callable[[], float] | None = None, eval_every: int = 0,
                 after_step: Callable[[int], str | None] | None = None, patience: int = 0,
                 before_step: Callable[[int], None] | None = None,
                 checkpoint=None, start: LoopResult | None = None) -> LoopResult:
    """Train `prompt` for `steps`; emits loss, throughput and validation accuracy events.

    `before_step(step)` runs before a step is taken (DP writes it to the privacy journal there);
    `after_step(step)` may return a reason to stop early (e.g. the privacy budget is spent);
    `patience` > 0 stops once that many validations in a row have not beaten the best one.
    `checkpoint` (engine.checkpoint.Checkpointer) saves the loop's state when due and on cancel;
    `start` is the LoopResult a resumed run continues from (prompt and optimizer restored by the caller).
    """
    result = start or LoopResult()
    save = (lambda: checkpoint.save(result.steps, loop_state(prompt, optimizer, result))) if checkpoint else None
    for step in range(result.steps + 1, steps + 1):
        if _stop_requested(ctx, aggregate):
            result.cancelled, result.stopped_reason = True, "cancelled"
            break
        if before_step:
            before_step(step)
        indices = next(batches)
        start_time = time.perf_counter()
        loss = prompt_step(prompt, optimizer, loss_fn, indices, aggregate)
        seconds = time.perf_counter() - start_time
        result.steps = step
        tokens = tokens_of(getattr(indices, "global_batch", indices))  # several processes: the whole step's
        result.tokens += tokens
        ranks.record_work(tokens_of(indices) if hasattr(indices, "global_batch") else tokens, seconds)  # this rank's share
        if loss is not None:
            check_finite(stage, step, loss)
            result.losses.append(loss)
            ctx.emit(Metric(stage=stage, step=step, name="loss", value=loss))
        ctx.emit(Progress(stage=stage, step=step, total_steps=steps, step_seconds=seconds,
                          tokens_per_s=tokens / seconds if seconds > 0 else None))
        if save and checkpoint.each_step:  # DP: a journaled step is never taken again: kept before a validation
            save()
        if validate is not None and eval_every and (step % eval_every == 0 or step == steps):
            _validate(ctx, stage, step, prompt, validate, result)
            if patience and _since_best(result) >= patience:
                result.stopped_reason = f"validation accuracy stopped improving (best at step {result.best_step})"
                break
        ranks.tick(ctx, stage, step)  # several processes: every rank's memory and speed, now and then
        reason = after_step(step) if after_step else None
        if reason:
            result.stopped_reason = reason
            break
        if save and checkpoint.due(step) and (step < steps or checkpoint.each_step):  # DP: with this validation
            save()
    distributed.sync_tensor_(prompt.weight)  # several processes: every rank keeps rank 0's prompt
    check_finite_weights(stage, [prompt.weight])
    if result.cancelled:
        if save and result.steps:
            save()  # the next run continues from here
        return result
    if validate is not None and result.steps and (not result.validation or result.validation[-1][0] != result.steps):
        _validate(ctx, stage, result.steps, prompt, validate, result)
    return result


def _stop_requested(ctx, aggregate) -> bool:
    """Cancelled? Over several processes only a request every rank has seen in the same step's
    all-reduce counts (engine.distributed.ShardedAggregator), so all ranks stop at the same step."""
    return aggregate.stop_requested if getattr(aggregate, "distributed", False) else ctx.cancelled


def loop_state(prompt: SoftPrompt, optimizer, result: LoopResult) -> dict:
    return {"prompt": prompt.weight.detach().clone(), "optimizer": optimizer.state_dict(),
            "result": dataclasses.asdict(result)}


def restore_loop(state: dict, prompt: SoftPrompt, optimizer) -> LoopResult:
    """Put a checkpoint's prompt and optimizer back; returns the loop history to continue."""
    prompt.weight.data.copy_(state["prompt"])
    optimizer.load_state_dict(state["optimizer"])
    result = LoopResult(**state["result"])
    result.cancelled, result.stopped_reason = False, ""
    return result


def _since_best(result: LoopResult) -> int:
    """Validations after the best one."""
    return sum(1 for step, _ in result.validation if step > result.best_step)


def _validate(ctx, stage, step, prompt, validate, result: LoopResult) -> None:
    accuracy = validate()
    result.validation.append((step, accuracy))
    ctx.emit(Metric(stage=stage, step=step, name="val_accuracy", value=accuracy))
    if result.best_accuracy is None or accuracy > result.best_accuracy:
        result.best_step, result.best_accuracy = step, accuracy
        result.best_weight = prompt.weight.detach().clone()
