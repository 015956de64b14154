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

from engine.data.generated import GENERATED
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


RECORD = "public_pick.json"  # in the transfer folder: which candidates the prompts were trained on


@torch.inference_mode()
def prompted_classes(logit_fn, verbalizer, examples: Examples, pad_id: int, device, batch_size: int) -> list[int]:
    """The class `logit_fn` (the student with the small prompt) gives each example, in order. Over several
    processes each rank scores every W-th batch and the classes are all-gathered, so every rank holds the
    same list, each class computed by exactly one rank (a near-tie cannot flip on one rank only)."""
    from engine import distributed
    mine: list[tuple[int, int]] = []
    for indices in distributed.my_share(eval_batches(examples, batch_size)):
        batch = collate(examples, indices, pad_id, device)
        mine += zip(indices, verbalizer.class_scores(logit_fn(batch)).argmax(-1).tolist())
    classes = [0] * len(examples)
    for part in distributed.gather_objects(mine):
        for i, c in part:
            classes[i] = c
    return classes


def shares(classes: list[int], n_classes: int) -> list[float]:
    return [round(classes.count(k) / max(len(classes), 1), 2) for k in range(n_classes)]


def pick(ctx, tokenizer, candidates: Examples) -> Examples:
    """`public.size` of the candidates, balanced over the classes the student's prompted answer gives them.

    Rank 0 reads the pick a resumed transfer made before (transfer/public_pick.json, when made for the same
    settings, small prompt and candidates) and hands it to every rank; otherwise the pool is scored and picked
    on every rank alike, and rank 0 keeps the result with the run: every prompt of a run, resumed or not, is
    trained on one public set."""
    from engine import distributed, fingerprints, records
    cfg = ctx.config
    # the candidates' content, not only their settings: a source file edited in place or texts the large
    # model wrote again (a model changed in place) are other candidates, and old indices would pick wrongly
    key = records.digest({**fingerprints.transfer_settings(ctx), "candidates": fingerprints.examples_hash(candidates)})
    kept = ctx.stage_dir("transfer") / RECORD
    chosen = _read(kept, key) if distributed.is_main() else None
    chosen = distributed.gather_objects(chosen)[0]
    if chosen is None:
        chosen, classes = _pick(ctx, tokenizer, candidates)
        if distributed.is_main():
            from engine import artifacts
            artifacts.write_json(kept, {"key": key, "candidates": len(candidates), "chosen": chosen, "classes": classes,
                                        "label_words": [words[0] for words in cfg.task.label_words]})
    return candidates.subset(sorted(chosen))


def _pick(ctx, tokenizer, candidates: Examples) -> tuple[list[int], list[int]]:
    from engine import loading
    from engine.evaluate import prompt_logit_fn
    from engine.prompt import SoftPrompt
    cfg = ctx.config
    student, _ = loading.small(ctx)
    prompt = SoftPrompt.load(loading.small_prompt_path(ctx))
    classes = prompted_classes(prompt_logit_fn(student, tokenizer, prompt, ctx.dtype), loading.verbalizer(ctx, tokenizer),
                               candidates, tokenizer.pad_token_id or 0, ctx.device, cfg.eval.batch_size)
    n_classes = len(cfg.task.label_words)
    chosen = balanced_indices(classes, n_classes, cfg.public.size, cfg.runtime.seed)
    picked = [classes[i] for i in chosen]
    ctx.log(f"public: {len(chosen)} of {len(candidates)} texts, balanced over the student's prompted classes "
            f"(shares {shares(classes, n_classes)} in the pool, {shares(picked, n_classes)} kept)")
    if min(picked.count(k) for k in range(n_classes)) == 0:
        closer = ("change public.prefix so the large model writes texts of every class"
                  if cfg.public.source == GENERATED else "give a public source closer to the task")
        ctx.log("public: the student's prompt gives no pool text some class, so no public text teaches it: "
                f"raise public.pool or {closer}", "warning")
    return chosen, classes


def _read(path, key: str) -> list[int] | None:
    """The kept pick when the file is whole and made for this key; None (pick again) otherwise."""
    from engine import artifacts
    return artifacts.read_kept_list(path, key, "chosen", int, "public pick")
