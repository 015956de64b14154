"""One shadow prompt: the user's tuning recipe on its half of the audit pool, then φ on the whole pool.

The recipe is the released prompt's: the same prompt length and init, optimizer, learning rate and
batch size, and the same number of passes over its data (the released tune's steps × batch / N,
so a shadow on fewer examples takes proportionally fewer steps and each example is seen as often).
Under DP the shadow runs DP-SGD with the run's δ and expected batch at the run's target ε (σ planned
for the shadow's own sampling rate and steps) or at the run's σ when the config gives one: the audit
then measures what the guarantee lets through. A shadow keeps its last step (the released non-DP prompt keeps its best
validation step; validation is not read here). Shadows are never released and spend no budget:
like accuracies they are statistics of the private data, kept on the user's machine.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from engine.audit.lira import confidence_logit
from engine.data.tasks import Examples, collate, eval_batches
from engine.events import Metric, Progress
from engine.prompt import SoftPrompt
from engine.sampling import shuffled_batches
from engine.training import make_optimizer, mean_gradient, train_prompt
from engine.tune import cloze_loss_fn


@dataclass
class Recipe:
    steps: int            # optimizer steps of this shadow
    dp: dict | None       # {"noise_multiplier", "sample_rate", "clip", "delta", "epsilon"} under DP


def shadow_steps(released_steps: int, n_train: int, n_members: int) -> int:
    """Steps that give a shadow on n_members examples the released prompt's passes over its n_train."""
    return max(1, round(released_steps * n_members / n_train))


def dp_recipe(privacy_cfg, n_train: int, n_members: int, batch_size: int, steps: int) -> dict:
    """σ, q, C, δ and ε of a DP shadow: the released tune's δ and expected batch (q·N), σ planned for the
    run's target ε at the shadow's q and steps (or the run's σ when the config gives one)."""
    from engine.privacy import accounting, resolve_delta, resolve_sample_rate
    delta = resolve_delta(privacy_cfg, n_train)
    q = min(1.0, resolve_sample_rate(privacy_cfg, n_train, batch_size) * n_train / n_members)
    if privacy_cfg.epsilon is not None:
        sigma = accounting.plan_noise(float(privacy_cfg.epsilon), delta, q, steps, privacy_cfg.accountant)
    else:
        sigma = float(privacy_cfg.noise_multiplier)
    eps = accounting.epsilon(accounting.add_steps([], sigma, q, steps), delta, privacy_cfg.accountant)
    return {"noise_multiplier": sigma, "sample_rate": q, "clip": float(privacy_cfg.clip), "delta": delta,
            "epsilon": eps, "accountant": privacy_cfg.accountant}


class StepsAfter:
    """The run context as one shadow's training sees it: its step events numbered after the steps of
    the shadows before it, out of all the shadows' steps, so a progress bar and a loss curve run once
    over the whole audit instead of starting again with every shadow. Everything else is ctx's."""

    def __init__(self, ctx, stage: str, done: int, total: int):
        self._ctx, self._stage, self._done, self._total = ctx, stage, done, total

    def emit(self, event) -> None:
        if isinstance(event, Progress) and event.stage == self._stage:
            event = dataclasses.replace(event, step=self._done + event.step, total_steps=self._total)
        elif isinstance(event, Metric) and event.stage == self._stage:
            event = dataclasses.replace(event, step=self._done + event.step)
        self._ctx.emit(event)

    def __getattr__(self, name):
        return getattr(self._ctx, name)


def train_shadow(ctx, model, tokenizer, members: Examples, verbalizer, recipe: Recipe, seed: int,
                 label: str) -> tuple[SoftPrompt, bool]:
    """The shadow's prompt and whether it finished (False: cancelled midway; nothing of it is kept)."""
    cfg = ctx.config
    prompt = SoftPrompt.from_text(model, tokenizer, cfg.task.prompt_init, cfg.tune.prompt_length)
    loss_fn = cloze_loss_fn(ctx, model, tokenizer, members, verbalizer)  # tune's own loss

    optimizer = make_optimizer(cfg.tune.optimizer, [prompt.weight], cfg.tune.lr)
    if recipe.dp is None:
        batches, aggregate = shuffled_batches(members, cfg.tune.batch_size, seed), mean_gradient
    else:
        batches, aggregate = _dp_mechanism(ctx, label, recipe.dp, len(members), tuple(prompt.weight.shape), seed)
    result = train_prompt(ctx, label, prompt, loss_fn, batches, recipe.steps, optimizer, aggregate,
                          tokens_of=lambda idx: sum(len(members.input_ids[i]) + prompt.length for i in idx))
    return prompt, not result.cancelled


def _dp_mechanism(ctx, label: str, dp: dict, n_members: int, shape: tuple[int, ...], seed: int):
    """Poisson batches and clip + noise: the released tune's own mechanism (engine.privacy.DPSession),
    seeded (a shadow is never released, so its noise need not be secret), without a journal or ledger."""
    from engine.privacy import DPSession
    session = DPSession(ctx, label, accountant=dp["accountant"], delta=dp["delta"], target_epsilon=None,
                        noise_multiplier=dp["noise_multiplier"], sample_rate=dp["sample_rate"], clip=dp["clip"],
                        n_examples=n_members, steps=0, planned_total=0, shape=shape, history=[], limit=0, seed=seed)
    return session.batches(seed), session.aggregate


@torch.inference_mode()
def pool_phi(ctx, model, tokenizer, prompt: SoftPrompt, pool: Examples, verbalizer) -> torch.Tensor:
    """(N,) φ of every pool example under the prompt, in the pool's order (float64)."""
    from engine.evaluate import prompt_logit_fn
    logits_of = prompt_logit_fn(model, tokenizer, prompt, ctx.dtype)  # the eval's prompted forward
    phi = torch.empty(len(pool), dtype=torch.float64)
    for indices in eval_batches(pool, ctx.config.eval.batch_size):
        batch = collate(pool, indices, tokenizer.pad_token_id, ctx.device)
        phi[torch.tensor(indices)] = confidence_logit(verbalizer.class_scores(logits_of(batch)), batch["labels"]).cpu()
    return phi
