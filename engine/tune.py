"""Prompt tuning on private data: the user's stage (on the student) and full PT (on the large model).

With `[privacy]` set, batches come from Poisson sampling and the gradient from the DP
aggregator (engine.privacy); the loop itself is the same. A checkpoint (engine.checkpoint)
lets a killed or cancelled stage continue; under DP the privacy journal, written before each
step, carries every step ever taken into the certificate.
"""
from __future__ import annotations

import time
from pathlib import Path

from engine import artifacts, distributed, fingerprints, loading, records
from engine.errors import PostError
from engine.privacy import accounting, ledger
from engine.checkpoint import Checkpointer
from engine.data.tasks import collate
from engine.evaluate import accuracy, prompt_logit_fn
from engine.events import StageFinished, StageStarted
from engine.losses import cloze_loss
from engine.models import tokenizer_fingerprint
from engine.prompt import SoftPrompt, bos_id, prompted_logits
from engine.sampling import shuffled_batches, steps_for
from engine.training import make_optimizer, mean_gradient, restore_loop, train_prompt

JOURNAL = "privacy.journal.json"


def tune_prompt(ctx, stage: str, model, tokenizer, model_id: str, steps: int | None = None,
                inputs: dict | None = None):
    """Tune a fresh prompt on `model` with the private task (or continue its checkpoint);
    returns (prompt, loop result, privacy session)."""
    cfg = ctx.config
    splits = loading.task(ctx, tokenizer)
    train, val = splits["train"], splits["validation"].head(cfg.tune.eval_size)
    verbalizer = loading.verbalizer(ctx, tokenizer)
    pad = tokenizer.pad_token_id
    prompt = SoftPrompt.from_text(model, tokenizer, cfg.task.prompt_init, cfg.tune.prompt_length,
                                  model_id=model_id, tokenizer_fingerprint=tokenizer_fingerprint(tokenizer),
                                  stage=stage)
    total = steps or steps_for(len(train), cfg.tune.batch_size, cfg.tune.steps, cfg.tune.epochs)
    folder = ctx.stage_dir(stage)
    fingerprint = records.digest(inputs or {})
    checkpoint = Checkpointer(ctx, folder / "checkpoint.pt", fingerprint)

    loss_fn = cloze_loss_fn(ctx, model, tokenizer, train, verbalizer)

    def validate():
        return accuracy(prompt_logit_fn(model, tokenizer, prompt, ctx.dtype), val, verbalizer,
                        cfg.eval.batch_size, pad, ctx.device)

    optimizer = make_optimizer(cfg.tune.optimizer, [prompt.weight], cfg.tune.lr)
    saved = checkpoint.load()
    start = restore_loop(saved[1], prompt, optimizer) if saved else None
    dp = None
    batches, aggregate, after_step, before_step = (shuffled_batches(train, cfg.tune.batch_size, cfg.runtime.seed),
                                                   mean_gradient, None, None)
    if cfg.privacy.enabled:
        dp, start = _dp_session(ctx, stage, inputs or {}, fingerprint, len(train), total, prompt, start)
        checkpoint.each_step = True  # a DP step lost after the last checkpoint is never taken again
        batches, aggregate, after_step, before_step = dp.batches(cfg.runtime.seed), dp.aggregate, dp.after_step, dp.before_step
        total = dp.steps + (start.steps if start is not None else 0)
    elif start is not None:
        for _ in range(start.steps):  # the same batches as an uninterrupted run: replay the sampler
            next(batches)
    if start is not None:
        ctx.log(f"{stage}: continuing from the checkpoint at step {saved[0]} of {total}")
    _begin(ctx, stage)  # only now, after every check passed: a refused run leaves the last prompt as it was
    ctx.emit(StageStarted(stage=stage, total_steps=total, description=f"prompt tuning on {model_id}"))
    batches, aggregate = distributed.spread(batches, aggregate, dp, ctx.cancel_event)  # several processes: a shard of each batch
    try:
        result = train_prompt(ctx, stage, prompt, loss_fn, batches, total, optimizer, aggregate,
                              tokens_of=lambda idx: sum(len(train.input_ids[i]) + prompt.length for i in idx),
                              validate=validate, eval_every=cfg.tune.eval_every, after_step=after_step,
                              patience=0 if dp is not None else cfg.tune.patience, before_step=before_step,
                              checkpoint=checkpoint, start=start)
    except BaseException:
        if dp is not None:  # e.g. a diverged loss: within this process (the TUI) the plan must not stay reserved
            _unreserve(dp)
        raise
    # Keep the prompt with the best validation accuracy — never chosen on test. Under DP every
    # extra look at private validation data would cost privacy, so DP keeps the last step.
    if dp is None and result.best_weight is not None and not result.cancelled:
        prompt.weight.data.copy_(result.best_weight)
    return prompt, result, dp


def cloze_loss_fn(ctx, model, tokenizer, examples, verbalizer):
    """Prompt tuning's per-example loss on `examples` (the training loop's LossFn): the cloze
    cross-entropy over the class scores at the prediction position. Tune, full PT and the audit's
    shadows train with this one."""
    pad, bos = tokenizer.pad_token_id, bos_id(tokenizer)

    def loss_fn(prompt_copy, indices):
        batch = collate(examples, indices, pad, ctx.device)
        logits = prompted_logits(model, batch["input_ids"], batch["attention_mask"],
                                 prompt_copy.to(ctx.device), bos, ctx.dtype)
        return cloze_loss(verbalizer.class_scores(logits), batch["labels"])
    return loss_fn


def _dp_session(ctx, stage, inputs: dict, fingerprint: str, n_train: int, total: int, prompt, start):
    """The DP session, continuing the journal: a resumed stage keeps its plan and history (steps
    lost after the checkpoint stay spent); a new tune on the same data composes with the earlier steps."""
    from engine.privacy import DPSession
    cfg = ctx.config
    journal = ctx.stage_dir(stage) / JOURNAL
    earlier = _journal(journal, n_train, inputs.get("data"))
    history, planned, release, inherited = [], total, None, 0
    if earlier and earlier.get("fingerprint") == fingerprint and not earlier.get("finished"):
        history, planned = earlier["history"], earlier["planned_steps"]
        release, inherited = earlier.get("release"), earlier.get("inherited_steps", 0)
        own = earlier["steps"] - inherited  # the journal's steps include the earlier tunes' it composes with
        if start is not None and own > start.steps:
            ctx.log(f"{stage}: {own - start.steps} steps taken after the last checkpoint are lost "
                    "and stay counted as spent", "warning")
        if start is None and own:
            ctx.log(f"{stage}: no checkpoint; the prompt starts again, the {own} steps already "
                    "taken stay counted as spent", "warning")
    elif earlier and earlier["steps"]:
        history, planned, inherited = earlier["history"], earlier["steps"] + total, earlier["steps"]
        start = None
        ctx.log(f"{stage}: composing with {earlier['steps']} earlier DP steps on the same data")
    else:
        start = None  # a DP checkpoint is only continued with the journal that accounts for its steps
    key = ledger.register_task(cfg.task, cfg.runtime.seed)
    if release is not None:
        release, inherited = _own_release(ctx, stage, key, release, inherited, earlier["steps"])
    release = release or ledger.new_release_id()
    dp = DPSession.create(ctx, stage, cfg.privacy, n_examples=n_train, batch_size=cfg.tune.batch_size,
                          steps=planned, shape=tuple(prompt.weight.shape), history=history, journal=journal,
                          journal_extra={"fingerprint": fingerprint, "data": inputs.get("data"),
                                         "release": release, "ledger": key, "inherited_steps": inherited})
    own = accounting.drop_steps(dp.history, inherited)  # this release's own steps so far (a resume has some)
    plan = accounting.add_steps(own, dp.noise_multiplier, dp.sample_rate, dp.limit)
    with ledger.reserving(key):  # check and entry in one step: a run started meanwhile sees this one's plan
        ledger.check_budget(key, cfg.privacy.budget, plan, dp.delta, exclude=release)  # a refused run spends nothing
        entry = ledger.Release.start(key, private=True, stage=stage, run_dir=ctx.run_dir, release=release,
                                     delta=dp.delta, accountant=dp.accountant, n_examples=n_train,
                                     planned=[list(h) for h in plan])
    entry.update(own)
    dp.on_step = lambda h: entry.update(accounting.drop_steps(h, inherited))
    dp.release = entry
    if start is not None:
        start.steps = dp.resumed_steps  # the loop counts every step spent, the lost ones included
    return dp, start


def _own_release(ctx, stage: str, key: str, release: str, inherited: int, journal_steps: int) -> tuple[str, int]:
    """The ledger release a resumed stage continues: its journal's, while that entry is this run's own. A copy
    of an unfinished run folder (a backup, a second try) or a backup restored over a run that went on holds
    the same release id; continuing it would write one run's steps over the other's and leave one prompt's
    noise uncounted. Then the steps go to a new release, which inherits what the old entry already counts
    of this journal (a step journaled but not yet in the entry is counted again: over, never under)."""
    with ledger.reserving(key):
        found = ledger.entry(key, release)
    own = journal_steps - inherited
    if found is None:  # a ledger without it (another machine): the entry is written again from the journal
        return release, inherited
    counted = int(found.get("steps") or 0)
    if found.get("run_dir") == str(Path(ctx.run_dir).resolve()) and not found.get("finished") and counted <= own:
        return release, inherited
    ctx.log(f"{stage}: the privacy ledger's release {release} is not this run's alone ({found.get('run_dir')}, "
            f"{counted} steps; this folder's journal: {own}): its steps from here are a new release, so both "
            "runs' noise is counted", "warning")
    return ledger.new_release_id(), inherited + min(own, counted)


def _journal(path, n_examples: int, data) -> dict | None:
    """The journal of earlier DP steps on the same data, else None."""
    if not path.is_file():
        return None
    try:
        journal = artifacts.read_json_dict(path, "privacy journal")
    except artifacts.DamagedArtifact:
        # never written torn (atomic); if it is unreadable anyway, refuse rather than forget spent steps
        raise artifacts.DamagedArtifact(f"{path}: the privacy journal is unreadable; it records steps already "
                                        "spent, so tuning again would under-report ε: restore it or use a new run folder")
    # the history is (σ, q, steps) per phase, whichever accountant turns it into ε: another accountant composes
    # the same steps (dropping them would restart the folder's total and its privacy.epsilon target)
    same = journal.get("n_examples") == n_examples and journal.get("data") == data
    return journal if same else None


def save_tuned(ctx, stage: str, prompt: SoftPrompt, result, dp, seconds: float, inputs: dict) -> None:
    folder = ctx.stage_dir(stage)
    if result.cancelled:  # no prompt is published; the checkpoint and the record let a resume continue
        if dp is not None:
            _unreserve(dp)
        records.write(folder, stage, records.CANCELLED, inputs, {}, steps=result.steps, seconds=seconds)
        return
    path = folder / "prompt.safetensors"
    kept = "last" if dp is not None or result.best_step is None else f"best validation (step {result.best_step})"
    prompt.save(path, steps=result.steps, kept=kept)
    ctx.saved(stage, path, "soft prompt")
    summary = {"steps": result.steps, "tokens": result.tokens, "final_loss": result.losses[-1] if result.losses else None,
               "first_loss": result.losses[0] if result.losses else None, "kept": kept,
               "val_accuracy": result.best_accuracy if dp is None else (result.validation[-1][1] if result.validation else None),
               "validation": result.validation, "seconds": seconds, "stopped": result.stopped_reason}
    files = {"prompt": path}
    if dp is not None:  # the losses and accuracies above are not noised: they stay on the user's machine
        summary["private_statistics"] = ("losses and validation accuracies here are computed from the private data "
                                         "without noise: keep them on this machine (post package never includes them)")
        own = accounting.drop_steps(dp.history, dp.journal_extra.get("inherited_steps", 0))
        dp.release.update(own, epsilon=accounting.epsilon(own, dp.delta, dp.accountant), finished=True)
        total = ledger.composed(dp.release.key)
        summary["privacy"] = dp.save_certificate(folder, ledger={
            "data": dp.release.key, "release": dp.release.release, "composed_epsilon": total["epsilon"],
            "composed_releases": total["releases"]})
        files["certificate"] = folder / "privacy.json"
    artifacts.write_json(folder / "summary.json", summary)
    files["summary"] = folder / "summary.json"
    status = records.BUDGET_STOPPED if dp is not None and dp.stopped else records.COMPLETED
    records.write(folder, stage, status, inputs, files, steps=result.steps, seconds=seconds)
    if dp is not None:  # only after the record: a journal marked finished before it would make a resume of this
        # same tune compose with its own steps (refused at the same ε) instead of finishing it from its checkpoint
        artifacts.write_json(folder / JOURNAL, {**dp.journal_record(), "finished": True})  # a new tune composes
    (folder / "checkpoint.pt").unlink(missing_ok=True)
    ctx.emit(StageFinished(stage=stage, seconds=seconds, summary=summary))


def _unreserve(dp) -> None:
    """A DP tune that ends without a prompt: its steps stay spent; its plan is no longer reserved (ledger.in_progress)."""
    dp.release.update(accounting.drop_steps(dp.history, dp.journal_extra.get("inherited_steps", 0)), pid=None)


def _begin(ctx, stage: str) -> None:
    """A stage that runs again first forgets its old outcome: the record goes, and so does a
    certificate that would otherwise describe a prompt it did not produce."""
    folder = ctx.stage_dir(stage)
    records.clear(folder)
    for name in ("privacy.json", "summary.json", "prompt.safetensors", "alpha.json", "prospect.json"):
        (folder / name).unlink(missing_ok=True)
    if stage == "tune":  # the package of the old prompt goes with it
        import shutil
        shutil.rmtree(ctx.run_dir / "package", ignore_errors=True)


def _run(ctx, stage: str, model, tokenizer, model_id: str, steps: int | None) -> None:
    inputs = fingerprints.stage_inputs(ctx, stage)
    if not ctx.config.privacy.enabled:  # a release without DP: the ledger records ε = ∞ for this data
        key = ledger.register_task(ctx.config.task, ctx.config.runtime.seed)
        if ctx.config.privacy.budget is not None:
            raise PostError(f"privacy.budget is set but {stage} runs without DP (ε = ∞): set privacy.epsilon, "
                            "or remove privacy.budget")
        ledger.Release.start(key, private=False, stage=stage, run_dir=ctx.run_dir)
    start = time.time()
    prompt, result, dp = tune_prompt(ctx, stage, model, tokenizer, model_id, steps, inputs)
    save_tuned(ctx, stage, prompt, result, dp, time.time() - start, inputs)


PRIVATE_NOTE = "PRIVATE.txt"
PRIVATE_TEXT = """This run folder is the user's side: it holds what was computed from the private data.
Losses, validation and test accuracies, each step's token count and timing (events.jsonl,
tune/summary.json, results.json, plots) are NOT noised, even when the prompt was trained with
differential privacy: they are not covered by the certificate's epsilon. Keep this folder on this
machine. What may leave it is the prompt package (post package RUN --out PKG), whose contents
`post package inspect PKG` lists.
"""


def run_tune(ctx) -> None:
    """The user's stage: tune p_s on the student with the private data, then pack it as the owner
    receives it (`<run>/package`, engine.package): the transfer reads that package in either flow."""
    model, tokenizer = loading.small(ctx)
    artifacts.write_text(ctx.run_dir / PRIVATE_NOTE, PRIVATE_TEXT)
    _run(ctx, "tune", model, tokenizer, loading.student_ref(ctx), None)
    record = records.read(ctx.stage_dir("tune"))
    if record and record.get("status") in records.DONE_STATUSES:
        from engine import package
        package.build(ctx.run_dir, ctx.run_dir / "package", replace=True)
        ctx.saved("tune", ctx.run_dir / "package", "prompt package (what the model owner receives)")


def run_full_pt(ctx) -> None:
    """The expensive reference: tune a prompt on the large model itself."""
    model, tokenizer = loading.large(ctx)
    _run(ctx, "full_pt", model, tokenizer, ctx.config.models.large, ctx.config.eval.full_pt_steps or None)
