"""Transfer: the model owner learns a large-model prompt from the user's small prompt (shared/POST.md §3).

Reads only the small prompt and the public set — never private data. The three outputs that do
not depend on the prompt being learned, z_s(p_s+x̂), z_s(x̂) and z_t(x̂), are computed once per
public example; each step is then one prompted forward+backward of the large model.
The loss itself is `engine.losses.transfer_loss`.
"""
from __future__ import annotations

import time
from typing import Iterable

import torch

from engine import artifacts, diagnostics, distributed, fingerprints, loading, public_pick, records
from engine import methods as registry
from engine.checkpoint import Checkpointer
from engine.data.tasks import collate, eval_batches
from engine.errors import PostError
from engine.events import StageFinished, StageStarted
from engine.losses import transfer_loss
from engine.models import tokenizer_fingerprint
from engine.prompt import SoftPrompt, bos_id, prompted_logits
from engine.sampling import shuffled_batches
from engine.training import make_optimizer, mean_gradient, restore_loop, train_prompt

TRAINED = set(registry.TRAINED)


@torch.inference_mode()
def fixed_targets(ctx, large, small, tokenizer, small_prompt: SoftPrompt, public) -> dict[str, torch.Tensor]:
    """z_s(p_s+x̂), z_s(x̂), z_t(x̂) for every public example (N, V), computed once.

    Over several processes each rank computes every W-th batch and the rows are all-gathered: every
    rank ends with the same (N, V) targets, each computed by exactly one rank."""
    bos, pad = bos_id(tokenizer), tokenizer.pad_token_id
    weight = small_prompt.weight.to(ctx.device)
    out = {"small_prompted": [], "small_plain": [], "large_plain": []}
    order = []
    for indices in distributed.my_share(eval_batches(public, ctx.config.eval.batch_size)):
        b = collate(public, indices, pad, ctx.device)
        ids, mask = b["input_ids"], b["attention_mask"]
        out["small_prompted"].append(prompted_logits(small, ids, mask, weight, bos, ctx.dtype).cpu())
        out["small_plain"].append(prompted_logits(small, ids, mask, None, bos, ctx.dtype).cpu())
        out["large_plain"].append(prompted_logits(large, ids, mask, None, bos, ctx.dtype).cpu())
        order += indices
    width = {"small_prompted": small, "small_plain": small, "large_plain": large}
    gathered = {}
    for key, parts in out.items():
        local = torch.cat(parts) if parts else torch.zeros(0, width[key].get_output_embeddings().weight.shape[0])
        gathered[key], index = distributed.gather_rows(local, torch.tensor(order, dtype=torch.long))
    inverse = torch.empty(len(index), dtype=torch.long)
    inverse[index] = torch.arange(len(index))
    return {k: v[inverse] for k, v in gathered.items()}  # row i ↔ public example i


def starting_prompt(ctx, large, tokenizer, stage: str, method: str, alpha: float) -> SoftPrompt:
    """The large model's prompt before the transfer: the task's init text (the paper), or with
    transfer.init = "small" the user's small prompt — already released, so starting from it reads
    nothing private (post-processing); the student keeps the large model's embedding width."""
    cfg = ctx.config
    prompt = SoftPrompt.from_text(large, tokenizer, cfg.task.prompt_init, cfg.tune.prompt_length,
                                  model_id=cfg.models.large, tokenizer_fingerprint=tokenizer_fingerprint(tokenizer),
                                  stage=stage, method=method, alpha=str(alpha))
    if cfg.transfer.init == "small":
        prompt.metadata["init"] = "small prompt"
        small_prompt = SoftPrompt.load(loading.small_prompt_path(ctx))  # the package's, checked once per run
        if small_prompt.weight.shape != prompt.weight.shape:
            raise PostError(f"transfer.init = \"small\": the small prompt is {tuple(small_prompt.weight.shape)} and the "
                            f"large model's {tuple(prompt.weight.shape)} (a student of another width): use transfer.init = \"text\"")
        prompt.weight.data.copy_(small_prompt.weight.detach().float())
    return prompt


def check_init_width(ctx, large) -> None:
    """transfer.init = "small" with a pre-trained student (models.small): its prompt must have the large
    model's width — said before tuning, not after it. A distilled student keeps the large model's width."""
    cfg = ctx.config
    if cfg.transfer.init != "small" or not cfg.models.small:
        return
    from engine.models import hidden_size
    small = loading.small(ctx)[0].config.hidden_size if cfg.student_source == "given" else hidden_size(cfg.models.small)
    if small is not None and small != large.config.hidden_size:
        raise PostError(f"transfer.init = \"small\" starts the large prompt at the small one, but {cfg.models.small} is "
                        f"{small} wide and {cfg.models.large} {large.config.hidden_size}: use transfer.init = \"text\"")


def transfer_prompt(ctx, method: str, alpha: float, large, tokenizer, public, targets,
                    checkpoint: Checkpointer | None = None) -> tuple[SoftPrompt, object]:
    cfg = ctx.config
    stage = f"transfer:{method}"
    bos, pad = bos_id(tokenizer), tokenizer.pad_token_id
    prompt = starting_prompt(ctx, large, tokenizer, stage, method, alpha)
    columns = label_columns(ctx, tokenizer)
    targets = {k: v[:, columns].to(ctx.device) for k, v in targets.items()}

    def loss_fn(prompt_copy, indices):
        b = collate(public, indices, pad, ctx.device)
        z_t = prompted_logits(large, b["input_ids"], b["attention_mask"], prompt_copy.to(ctx.device), bos, ctx.dtype)
        z_t = z_t[:, columns]
        idx = b["index"].to(ctx.device)
        return transfer_loss(z_t, targets["small_prompted"][idx], targets["small_plain"][idx],
                             targets["large_plain"][idx], alpha, cfg.transfer.temperature, cfg.transfer.shift_loss)

    optimizer = make_optimizer("adam", [prompt.weight], cfg.transfer.lr)
    batches = shuffled_batches(public, cfg.transfer.batch_size, cfg.runtime.seed)
    saved = checkpoint.load() if checkpoint else None
    start = restore_loop(saved[1], prompt, optimizer) if saved else None
    if start is not None:
        for _ in range(start.steps):  # the same batches as an uninterrupted run
            next(batches)
        ctx.log(f"{stage}: continuing from the checkpoint at step {start.steps} of {cfg.transfer.steps}")
    ctx.emit(StageStarted(stage=stage, total_steps=cfg.transfer.steps, description=f"{method} transfer, alpha={alpha:g}"))
    batches, aggregate = distributed.spread(batches, mean_gradient, cancel=ctx.cancel_event)  # several processes: a shard of each batch
    result = train_prompt(ctx, stage, prompt, loss_fn, batches, cfg.transfer.steps, optimizer, aggregate,
                          tokens_of=lambda idx: sum(len(public.input_ids[i]) + prompt.length for i in idx),
                          checkpoint=checkpoint, start=start)
    return prompt, result


def label_columns(ctx, tokenizer) -> slice | torch.Tensor:
    """Which logits the transfer loss compares: all (the paper) or the label words' first tokens.

    The label words come from the config, not from private data; with the full vocabulary the
    label words are a sliver of the KL's mass, so a short transfer may not move them.
    """
    if ctx.config.transfer.vocab == "full":
        return slice(None)
    return torch.tensor(loading.verbalizer(ctx, tokenizer).flat_token_ids)


def transfer_inputs(ctx, alpha: float) -> str:
    """A fingerprint of everything a transfer prompt trained at `alpha` depends on: a kept prompt must match it.

    At α = 0 the shift loss L2 weighs nothing, so its form (`transfer.shift_loss`) cannot change the
    prompt: an `output` prompt is kept when only that setting changed (one transfer fewer under "select").
    """
    settings = fingerprints.transfer_settings(ctx)
    if alpha == 0:
        settings["transfer"].pop("shift_loss", None)
    return records.digest(settings)


def finished_methods(ctx, alpha: float) -> dict[str, float]:
    """Methods whose prompt a previous attempt finished with this α and the same inputs → its seconds.

    A resumed run trains only the rest: three transfers cost minutes each on a CPU. A prompt an
    earlier attempt trained for *another* method at the α this one needs (post at α = 1 before
    `transfer.alpha = "select"` asks for shift) is the same training, so it is copied now, before
    that method is trained again at its new α and its file replaced.
    """
    folder = ctx.stage_dir("transfer")
    if not loading.small_prompt_path(ctx).is_file():
        return {}
    kept = {m: summary for m in registry.TRAINED if (summary := _finished(ctx, folder, m)) is not None}
    wanted = {m: registry.alpha_of(m, alpha) for m in ctx.config.transfer.methods if m in TRAINED}
    done = {m: kept[m].get("seconds", 0.0) for m, a in wanted.items() if m in kept and _same_alpha(kept[m], a)}
    # every copy is planned on the files as the earlier attempt left them, and their bytes read before
    # any is written: a method that receives a copy must not then serve as another's donor under its old α
    plan = {m: donor for m in wanted if m not in done
            if (donor := next((d for d in kept if d != m and _same_alpha(kept[d], wanted[m])), None)) is not None}
    prompts = {d: (folder / f"{d}.safetensors").read_bytes() for d in set(plan.values())}
    counted = set(done)  # an earlier attempt's minutes count once, however many methods its prompt serves
    for method, donor in plan.items():
        _adopt(ctx, folder, donor, method, kept[donor], prompts[donor])
        done[method] = 0.0 if donor in counted else kept[donor].get("seconds", 0.0)
        counted.add(donor)
    return done


def _finished(ctx, folder, method: str) -> dict | None:
    """The summary of a prompt a previous attempt finished with today's inputs at its α; None if there is none."""
    summary_path, path = folder / f"{method}.json", folder / f"{method}.safetensors"
    if not (summary_path.is_file() and path.is_file()):
        return None
    try:
        summary = artifacts.read_json_dict(summary_path, "transfer summary")
    except artifacts.DamagedArtifact:
        return None  # trained again
    alpha = summary.get("alpha")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool):
        return None  # not a summary this code wrote: trained again
    if summary.get("stopped") == "cancelled" or summary.get("inputs") != transfer_inputs(ctx, alpha) \
            or summary.get("prompt_sha256") != artifacts.sha256_file(path):
        return None
    return summary


def _same_alpha(summary: dict, alpha: float) -> bool:
    return abs(summary.get("alpha", -1) - alpha) < 1e-12


def _adopt(ctx, folder, donor: str, method: str, summary: dict, prompt: bytes) -> None:
    """Keep an earlier attempt's `donor` prompt as `method`'s (its bytes read before any copy was written)."""
    write_copy(folder, donor, method, prompt, summary)
    ctx.log(f"transfer:{method}: an earlier attempt's {donor} prompt was trained at alpha={summary['alpha']:g} "
            "with the same inputs, kept as this method's")
    ctx.saved(f"transfer:{method}", folder / f"{method}.safetensors", f"{method} prompt for the large model ({donor}'s)")


def write_copy(folder, donor: str, method: str, prompt: bytes, summary: dict) -> dict:
    """`donor`'s prompt and summary written as `method`'s — the prompt first, the summary last: a stop
    between leaves no summary, so the method is trained again rather than kept half-copied."""
    artifacts.write_bytes(folder / f"{method}.safetensors", prompt)
    copied = {**summary, "method": method, "copied_from": donor}
    artifacts.write_json(folder / f"{method}.json", copied)
    return copied


def run_transfer(ctx, alpha: float, skip: Iterable[str] = ()) -> dict[str, float]:
    """Train the large-model prompt for each trained method (α for `post`, resolved by the pipeline).

    Methods in `skip` (finished by an earlier attempt, see finished_methods) are not trained again.
    The stage record is written last: completed when every method's prompt is, else cancelled.
    """
    cfg = ctx.config
    folder = ctx.stage_dir("transfer")
    stage_inputs = fingerprints.transfer_inputs(ctx, alpha)
    records.clear(folder)
    large, small, tokenizer = loading.both(ctx)
    small_prompt = SoftPrompt.load(loading.small_prompt_path(ctx))
    public = loading.public(ctx, tokenizer)
    used = {m: registry.alpha_of(m, alpha) for m in skip}
    for method in skip:
        ctx.log(f"transfer:{method}: finished earlier with alpha={used[method]:g}, kept")
        ctx.emit(StageFinished(stage=f"transfer:{method}", seconds=0.0, summary={"reused": True}))
    methods = [m for m in cfg.transfer.methods if m in TRAINED and m not in used]
    cancelled, start = False, time.time()
    check = diagnostics.needed(ctx)
    if methods or check:
        targets = ctx.once("transfer_targets", lambda: fixed_targets(ctx, large, small, tokenizer, small_prompt, public))
    if check:  # before minutes of training: does the small prompt carry anything? (no extra forward pass)
        diagnostics.report(ctx, targets, loading.verbalizer(ctx, tokenizer))
    for method in methods:
        a = registry.alpha_of(method, alpha)
        twin = next((m for m, used_alpha in used.items() if used_alpha == a), None)
        if twin is not None:
            copy_twin(ctx, folder, twin, method)
            used[method] = a
            continue
        cancelled = not _train_method(ctx, folder, method, a, transfer_inputs(ctx, a), large, tokenizer, public, targets)
        if cancelled:
            break
        used[method] = a
    trained = {f"{m}{suffix}": folder / f"{m}{suffix}" for m in cfg.transfer.methods if m in TRAINED
               for suffix in (".safetensors", ".json")}
    for kept, made in _public_records(cfg).items():  # what the prompts were trained on, checked like them
        if made and (folder / kept).is_file():
            trained[kept] = folder / kept
        elif not made:  # left by a run with other public settings: not what these prompts saw
            (folder / kept).unlink(missing_ok=True)
    status = records.CANCELLED if cancelled else records.COMPLETED
    earlier = sum(skip.values()) if isinstance(skip, dict) else 0.0  # minutes an earlier attempt spent on kept prompts
    records.write(folder, "transfer", status, stage_inputs, {} if cancelled else trained,
                  seconds=time.time() - start + earlier)
    return used


def _public_records(cfg) -> dict[str, bool]:
    """The public set's own files the transfer keeps, and whether the current settings make each."""
    from engine.data import generated
    return {generated.RECORD: cfg.public.source == generated.GENERATED,
            public_pick.RECORD: cfg.public.pick == public_pick.BALANCED}


def _train_method(ctx, folder, method: str, alpha: float, inputs: str, large, tokenizer, public, targets) -> bool:
    """Train one method's prompt and write it with its summary; False when cancelled (checkpoint kept)."""
    start = time.time()
    checkpoint = Checkpointer(ctx, folder / f"{method}.checkpoint.pt", records.digest({"inputs": inputs, "alpha": alpha}))
    prompt, result = transfer_prompt(ctx, method, alpha, large, tokenizer, public, targets, checkpoint)
    if result.cancelled:
        return False
    path = folder / f"{method}.safetensors"
    prompt.save(path, steps=result.steps)
    ctx.saved(f"transfer:{method}", path, f"{method} prompt for the large model")
    seconds = time.time() - start
    summary = {"method": method, "alpha": alpha, "inputs": inputs, "steps": result.steps, "tokens": result.tokens,
               "public_examples": len(public), "prompt_sha256": artifacts.sha256_file(path),
               "first_loss": result.losses[0] if result.losses else None,
               "final_loss": result.losses[-1] if result.losses else None, "seconds": seconds,
               "stopped": result.stopped_reason}
    artifacts.write_json(folder / f"{method}.json", summary)
    checkpoint.discard()
    ctx.emit(StageFinished(stage=f"transfer:{method}", seconds=seconds, summary=summary))
    return True


def copy_twin(ctx, folder, twin: str, method: str) -> None:
    """`method` has the same α as `twin` (post at α = 0 or 1): same loss, start, batches and seed, so
    training would give the same prompt (up to float summation order); copy it instead of paying minutes for it again."""
    summary = artifacts.read_json_dict(folder / f"{twin}.json", "transfer summary")
    summary = write_copy(folder, twin, method, (folder / f"{twin}.safetensors").read_bytes(), {**summary, "seconds": 0.0})
    ctx.log(f"transfer:{method}: same α as {twin}, its prompt copied")
    ctx.saved(f"transfer:{method}", folder / f"{method}.safetensors", f"{method} prompt for the large model")
    ctx.emit(StageFinished(stage=f"transfer:{method}", seconds=0.0, summary={**summary, "reused": True}))
