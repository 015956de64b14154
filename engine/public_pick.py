"""A public set balanced over the student's prompted classes (`public.pick = "balanced"`).

Public text of the task's kind rarely comes in the task's classes' shares — news is mostly politics, a
mailing list is all ham — and the transfer teaches the large prompt what the student's prompt does on the
texts it is shown, so a public set that is mostly one class teaches mostly that class (BENCHMARKS.md,
"Public text of the task's kind from the registries"). The owner therefore draws `public.pool` texts,
asks the student with the small prompt which class each one is, and keeps `public.size` of them, equally
many per class where the pool has enough. Only public texts, the student and the released small prompt
are read: post-processing of the release, at no privacy cost, and never the private data.
"""
from __future__ import annotations

import random

import torch

from engine.data.tasks import Examples, collate, eval_batches

BALANCED = "balanced"


def balanced_indices(classes: list[int], n_classes: int, size: int, seed: int) -> list[int]:
    """`size` positions of `classes`: one of each class in turn (random within a class, seeded) while that
    class has any left, so the classes are equal as far as the scarcest allows and the rest fills up."""
    rng = random.Random(seed)
    by_class = [[i for i, c in enumerate(classes) if c == k] for k in range(n_classes)]
    for members in by_class:
        rng.shuffle(members)
    chosen: list[int] = []
    while len(chosen) < size and any(by_class):
        for members in by_class:
            if members and len(chosen) < size:
                chosen.append(members.pop())
    return chosen


@torch.inference_mode()
def prompted_classes(logit_fn, verbalizer, examples: Examples, pad_id: int, device, batch_size: int) -> list[int]:
    """The class each example gets from `logit_fn` (the student with the small prompt), in order."""
    classes = [0] * len(examples)
    for indices in eval_batches(examples, batch_size):
        batch = collate(examples, indices, pad_id, device)
        for i, c in zip(indices, verbalizer.class_scores(logit_fn(batch)).argmax(-1).tolist()):
            classes[i] = c
    return classes


def shares(classes: list[int], n_classes: int) -> list[float]:
    return [round(classes.count(k) / max(len(classes), 1), 2) for k in range(n_classes)]


def pick(ctx, tokenizer, candidates: Examples) -> Examples:
    """`public.size` of the candidates, balanced over the classes the student's prompted answer gives them."""
    from engine import loading
    from engine.evaluate import prompt_logit_fn
    from engine.prompt import SoftPrompt
    cfg = ctx.config
    student, _ = loading.small(ctx)
    prompt = SoftPrompt.load(loading.small_prompt_path(ctx))
    verbalizer = loading.verbalizer(ctx, tokenizer)
    classes = prompted_classes(prompt_logit_fn(student, tokenizer, prompt, ctx.dtype), verbalizer, candidates,
                               tokenizer.pad_token_id or 0, ctx.device, cfg.eval.batch_size)
    n_classes = len(cfg.task.label_words)
    chosen = balanced_indices(classes, n_classes, cfg.public.size, cfg.runtime.seed)
    picked = [classes[i] for i in chosen]
    ctx.log(f"public: {len(chosen)} of {len(candidates)} texts, balanced over the student's prompted classes "
            f"(shares {shares(classes, n_classes)} in the pool, {shares(picked, n_classes)} kept)")
    if min(picked.count(k) for k in range(n_classes)) == 0:
        ctx.log("public: the student's prompt gives no pool text some class, so no public text teaches it: "
                "raise public.pool or give a public source closer to the task", "warning")
    return candidates.subset(sorted(chosen))
