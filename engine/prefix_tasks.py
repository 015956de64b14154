"""Prompts the owner tunes on the large model for tasks it makes up (`distill.prefix_source = "tuned"`).

A jittered text span (engine.distill_prefix) is a prefix, but not one that does anything: a prompt
tuned on the large model moves its answer at the task's cue, differently per input. So that the student
learns how the teacher answers to prompts like that, the owner tunes `n` prompts on the teacher, each
for a binary task it invents on the distillation texts — no label anyone wrote, nothing private:

- inputs: distillation texts with the template's cue after them (what a task's inputs look like);
- labels: which side of its median the teacher's own final state at the cue falls along one of that
  state's principal directions over the texts (task k: the k-th). The directions the texts vary most
  along are the features the teacher reads from them most strongly (what a review's sentiment or an
  article's topic is to it), so a prompt can learn to say them, as it does a real task; a random
  direction is not (on SmolLM2, prompts tuned 60 steps for random directions fit 50–65 %). Each task
  is balanced by construction;
- label words: two of the teacher's most likely next tokens after the cue (the words a verbalizer for
  this template would pick).

Each prompt starts from a random span of the texts and is tuned as the user tunes theirs (Adam, the
cloze loss over the two words). These prompts, jittered, are the synthetic prefixes' pool.
"""
from __future__ import annotations

import torch

from engine.data.tasks import Examples, collate
from engine.losses import cloze_loss
from engine.models import input_device
from engine.prompt import bos_id, prompted_logits


def task_inputs(tokenizer, texts: list[str], template: str, max_length: int, limit: int,
                generator: torch.Generator) -> Examples:
    """Up to `limit` templated texts, each cut from the left to `max_length` tokens (the cue kept last)."""
    order = torch.randperm(len(texts), generator=generator)[:limit].tolist()
    rows = []
    for i in order:
        ids = tokenizer(template.replace("{text}", texts[i]), add_special_tokens=False).input_ids
        if ids:
            rows.append(ids[-max_length:])
    return Examples(rows)


@torch.no_grad()
def cue_states(model, tokenizer, examples: Examples, batch_size: int = 16, dtype: str = "float32"):
    """(the teacher's final hidden state at each input's last position, its next-token log-probs there):
    one forward per batch, the vocabulary's logits at that position only (Gemma's head is 262k wide)."""
    states, logps = [], []
    device, bos = input_device(model), bos_id(tokenizer)
    for lo in range(0, len(examples), batch_size):
        batch = collate(examples, list(range(lo, min(lo + batch_size, len(examples)))), tokenizer.pad_token_id or 0, device)
        logits, state = prompted_logits(model, batch["input_ids"], batch["attention_mask"], None, bos, dtype,
                                        with_state=True)
        states.append(state.cpu())
        logps.append(torch.log_softmax(logits, -1).cpu())
    return torch.cat(states), torch.cat(logps)


def make_tasks(states: torch.Tensor, logps: torch.Tensor, n: int, candidates: int,
               generator: torch.Generator) -> list[tuple[list[int], list[int]]]:
    """`n` tasks: (labels per input, the two label-word token ids). Task k's labels split at the median
    of the cue states' k-th principal direction; words drawn from the teacher's `candidates` likeliest
    next tokens."""
    likely = logps.exp().mean(0).topk(candidates).indices
    centred = states - states.mean(0)
    directions = torch.linalg.svd(centred, full_matrices=False).Vh  # rows: principal directions, leading first
    tasks = []
    for k in range(n):
        projection = centred @ directions[k % len(directions)]
        labels = (projection > projection.median()).long().tolist()
        words = likely[torch.randperm(candidates, generator=generator)[:2]].tolist()
        tasks.append((labels, words))
    return tasks


def tune_prompt(model, tokenizer, examples: Examples, labels: list[int], words: list[int], start: torch.Tensor,
                steps: int, lr: float, batch_size: int, generator: torch.Generator, cancelled=lambda: False,
                dtype: str = "float32") -> tuple[torch.Tensor, float] | None:
    """A prompt tuned on `model` for one made-up task (model frozen; the prompt alone trains) and its
    accuracy over the last 5 batches; None if cancelled."""
    prompt = torch.nn.Parameter(start.clone().float())
    optimizer = torch.optim.Adam([prompt], lr=lr)
    bos, device = bos_id(tokenizer), input_device(model)
    tagged = Examples(examples.input_ids, labels)
    word_ids = torch.tensor(words, device=device)
    hits: list[float] = []
    for _ in range(steps):
        if cancelled():
            return None
        picked = torch.randint(0, len(tagged), (batch_size,), generator=generator).tolist()
        batch = collate(tagged, picked, tokenizer.pad_token_id or 0, device)
        logits = prompted_logits(model, batch["input_ids"], batch["attention_mask"], prompt.to(device), bos, dtype)
        loss = cloze_loss(logits[:, word_ids], batch["labels"]).mean()
        hits.append((logits[:, word_ids].argmax(-1) == batch["labels"]).float().mean().item())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return prompt.detach().cpu(), sum(hits[-5:]) / max(1, len(hits[-5:]))


def tuned_pool(ctx, teacher, tokenizer, texts: list[str], spans: torch.Tensor, max_length: int) -> torch.Tensor | None:
    """(n, length, hidden): the owner's prompts for made-up tasks (`spans` (n, length, hidden): their starts;
    each task's inputs cut to `max_length` tokens). None when the run was cancelled."""
    d = ctx.config.distill
    generator = torch.Generator().manual_seed(ctx.config.runtime.seed + 104729)
    examples = task_inputs(tokenizer, texts, d.template, max_length, d.prefix_inputs, generator)
    states, logps = cue_states(teacher, tokenizer, examples, dtype=ctx.dtype)
    tasks = make_tasks(states, logps, len(spans), 20, generator)
    prompts = []
    requires = [p.requires_grad for p in teacher.parameters()]
    teacher.requires_grad_(False)
    try:
        for k, (labels, words) in enumerate(tasks):
            ctx.log(f"distill: tuning the large model's prompt {k + 1} of {len(tasks)} for a made-up task "
                    f"(label words {tokenizer.convert_ids_to_tokens(words)})")
            tuned = tune_prompt(teacher, tokenizer, examples, labels, words, spans[k], d.prefix_steps,
                                 ctx.config.tune.lr, 8, generator, cancelled=lambda: ctx.cancelled, dtype=ctx.dtype)
            if tuned is None:
                return None
            ctx.log(f"distill: prompt {k + 1} fits its made-up task on {100 * tuned[1]:.0f} % of its last "
                    f"inputs (chance 50 %)")
            prompts.append(tuned[0])
    finally:
        for p, flag in zip(teacher.parameters(), requires):
            p.requires_grad_(flag)
    return torch.stack(prompts)
