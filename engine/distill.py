"""Distillation: the model owner's one-time stage (shared/POST.md §1).

The student is the teacher with most blocks dropped. `distill.loss = "kd"` trains it as the
paper does: the teacher's output distribution (KD), the data (LM) and the teacher's last hidden
states (cosine), all through the LM head. `"hidden"` matches only the final normalised hidden
states (MSE + cosine): no LM head in the loop, and when the steps read the corpus more than once
the teacher's states are computed once per row and cached (on disk, bf16), so extra epochs cost
only the student; otherwise the teacher runs beside the student at each step. A student is cached by everything
that determines it, so a second run reuses it.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import torch

from engine import artifacts, distill_prefix, distill_shards, distributed, kit, loading, ranks, records
from engine.checkpoint import Checkpointer
from engine.data.tasks import load_corpus
from engine.errors import PostError
from engine.events import Metric, Progress, StageFinished, StageStarted
from engine.losses import bridge_state_loss, distillation_loss, hidden_state_loss
from engine.models import make_student, resolve_blocks, tokenizer_fingerprint
from engine.prompt import autocast
from engine.training import check_finite, check_finite_weights


def pack(tokenizer, texts: list[str], seq_len: int) -> torch.Tensor:
    """Concatenate texts (EOS between them) and cut into full rows: no padding to compute on.

    Each row begins the way tuning and eval inputs begin: with BOS where the tokenizer starts
    sequences with one (`bos_id`; Gemma's states without it are far from those the student meets later).
    """
    from engine.prompt import bos_id
    bos = bos_id(tokenizer)
    head = [] if bos is None else [bos]
    sep = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    stream: list[int] = []
    for ids in tokenizer(texts, add_special_tokens=False).input_ids:
        stream += ids + sep
    width = seq_len - len(head)
    rows = len(stream) // width if width > 0 else 0
    if rows == 0:
        from engine.errors import PostError
        raise PostError(f"the distillation corpus has {len(stream)} tokens, fewer than one row of "
                        f"distill.seq_len={seq_len}: use a bigger corpus or a shorter seq_len")
    body = torch.tensor(stream[:rows * width], dtype=torch.long).view(rows, width)
    return torch.cat([torch.tensor(head, dtype=torch.long).expand(rows, len(head)), body], dim=1)


def weights_fingerprint(model) -> str:
    """Cheap identity of the teacher's weights (a sample of its first and last tensors + size): enough for a
    named model, whose name fixes its content; a local folder is hashed whole as well (teacher_identity)."""
    from engine.models import read_weights
    named = list(model.named_parameters())
    h = hashlib.sha256(str(sum(p.numel() for _, p in named)).encode())
    ends = (named[0][0], named[-1][0])
    found = dict(read_weights(model, lambda k: k in ends))  # offloaded by accelerate: read back from disk
    for name in ends:
        h.update(found[name].flatten()[:4096].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def teacher_identity(cfg, teacher, tokenizer) -> dict:
    from engine.config import result_runtime
    from engine.prompt import bos_id
    from engine.fingerprints import pinned_model
    identity = {"teacher": cfg.models.large, "tokenizer": tokenizer_fingerprint(tokenizer),
                "weights": weights_fingerprint(teacher), **result_runtime(cfg)}
    pin = pinned_model(cfg.models.large)
    if pin != cfg.models.large:  # a local folder: all of it (the sample misses a tensor changed mid-model);
        identity["content"] = pin  # a hub id: its commit
    if bos_id(tokenizer) is not None:  # rows begin with BOS (pack): students distilled without it are not reused
        identity["rows_begin_with_bos"] = True
    return identity


def _digest(blob: dict) -> str:
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


# settings one loss never reads: changing them must not force a new student
_UNUSED_BY = {"hidden": {"temperature", "weight_kd", "weight_lm", "freeze_head"}, "kd": {"weight_mse", "cue_weight", "bridge_weight"}}


_TUNED_PREFIX = ("prefix_source", "prefix_tasks", "prefix_steps", "prefix_inputs")


def student_key(cfg, identity: dict, keep: list[int] | None = None) -> str:
    """Everything that determines the distilled student; `keep`: the blocks resolved against the
    teacher, so [0, 1, -2, -1] and [0, 1, 28, 29] of a 30-block model are the same student."""
    d = cfg.distill.model_dump(exclude={"enabled", "eval_every"} | _UNUSED_BY[cfg.distill.loss])
    if d.get("cue_weight") == 1.0:  # the default: keys of students made before this setting stay valid
        d.pop("cue_weight")
    if not d.get("align"):  # likewise: students made before distill.align keep their keys
        d.pop("align", None)
    if not d.get("bridge_weight"):  # likewise: students made before the bridge loss keep their keys
        d.pop("bridge_weight", None)
    if d.get("init") == "kept":  # likewise: the default start leaves earlier students' keys as they were
        d.pop("init")
    if not d.get("prefix_share"):  # likewise: no prefixes, and their shape settings then change nothing
        for name in ("prefix_share", "prefix_length", "prefix_noise", *_TUNED_PREFIX):
            d.pop(name, None)
    else:  # 0 means the prompt's length: the length the prefixes really have
        d["prefix_length"] = d["prefix_length"] or cfg.tune.prompt_length
        if d.get("prefix_source") == "text":  # text prefixes: the tuned pool's settings change nothing
            for name in _TUNED_PREFIX:
                d.pop(name, None)
        else:  # the owner's prompts for the made-up tasks are tuned at tune.lr
            d["prefix_lr"] = cfg.tune.lr
    from engine.fingerprints import old_keys
    if cfg.distill.loss == "hidden" and not cfg.distill.freeze_embeddings and not old_keys():
        # a tied head is the input embedding: freezing the head freezes the embeddings the hidden loss trains
        d["freeze_head"] = cfg.distill.freeze_head
    if keep is not None:
        d["blocks"] = list(keep)
    from engine.data.sources import from_hub
    from engine.fingerprints import content_id
    d["corpus"] = corpus_source(cfg)
    sources = d["corpus"] if isinstance(d["corpus"], list) else [d["corpus"]]
    contents = [content_id(source) for source in sources]
    if contents != sources:  # a local corpus file: its content, so an edit makes a new student
        d["corpus_content"] = contents if isinstance(d["corpus"], list) else contents[0]
    if any(from_hub(source) for source in sources) and not old_keys():  # a hub set's name does not fix its rows (a new revision)
        d["corpus_rows"] = _corpus_rows(cfg)
    return _digest({**identity, "distill": d, "v": 2})


_CORPUS_ROWS: dict[str, str] = {}  # read once per process: the key is asked for several times in one run


def _corpus_rows(cfg) -> str:
    """Content hash of the distillation texts as corpus_texts reads them."""
    d = cfg.distill
    where = json.dumps([corpus_source(cfg), d.corpus_subset, d.corpus_split, d.corpus_field, d.max_texts,
                        cfg.runtime.seed])
    if where not in _CORPUS_ROWS:
        digest = hashlib.sha256()
        for text in corpus_texts(cfg):
            digest.update(text.encode("utf-8") + b"\0")
        _CORPUS_ROWS[where] = digest.hexdigest()[:16]
    return _CORPUS_ROWS[where]


def corpus_key(identity: dict, rows: torch.Tensor, prefixes: distill_prefix.Prefixes | None = None,
               bridge: list[int] | None = None) -> str:
    """The teacher and the packed rows themselves (not the settings that made them: a corpus
    file edited in place must not hit an old cache entry), their soft prefixes' values if any, and
    the teacher blocks whose input states are cached beside the final ones (distill.bridge_weight)."""
    blob = {**identity, "rows": hashlib.sha256(rows.numpy().tobytes()).hexdigest(), "v": 1}
    if prefixes is not None:
        blob["prefixes"] = hashlib.sha256(prefixes.fingerprint()).hexdigest()
    if bridge:
        blob["bridge"] = list(bridge)
    return _digest(blob)


def corpus_source(cfg) -> str | list[str]:
    return cfg.distill.corpus or cfg.public.source


def corpus_texts(cfg) -> list[str]:
    """The distillation texts: one source's, or a mix's — each source gives an equal share of
    distill.max_texts (the first sources one more where it does not divide; all their texts when 0),
    one source after the other; the student's steps draw
    rows in a shuffled order, so the sources mix in every epoch."""
    d, sources = cfg.distill, corpus_source(cfg)
    if isinstance(sources, str):
        return load_corpus(sources, d.corpus_subset, d.corpus_split, d.corpus_field, d.max_texts, cfg.runtime.seed)
    shares = [d.max_texts // len(sources) + (i < d.max_texts % len(sources)) for i in range(len(sources))]
    if d.max_texts and min(shares) == 0:
        raise PostError(f"distill.max_texts = {d.max_texts} cannot give each of the {len(sources)} corpora a text: "
                        f"set it to at least {len(sources)}, or 0 for every text")
    return [t for source, share in zip(sources, shares)  # max_texts 0: every text of each source
            for t in load_corpus(source, d.corpus_subset, d.corpus_split, d.corpus_field, share, cfg.runtime.seed)]


def _learning_rate(step: int, total: int, warmup: float) -> float:
    """Linear warm-up over the first `warmup` fraction, then linear decay to zero (a multiplier)."""
    warm = max(1, math.ceil(warmup * total))
    return step / warm if step < warm else max(0.0, (total - step) / max(1, total - warm))


def final_hidden(model, input_ids: torch.Tensor, prefix: torch.Tensor | None = None, n_head: int = 0) -> torch.Tensor:
    """Final normalised hidden states, no LM head (`base_model` is Llama's `.model`, GPT-2's `.transformer`);
    with `prefix` (B, m, d) after the first `n_head` tokens, at the rows' own positions (engine.distill_prefix)."""
    if prefix is not None:
        return distill_prefix.final_hidden(model, input_ids, prefix, n_head)
    return model.base_model(input_ids=input_ids, use_cache=False).last_hidden_state


def bridge_blocks(keep: list[int] | None) -> list[int]:
    """The teacher blocks whose input states the bridge loss matches: every kept block after the first
    (the first one's input is the embeddings, the same in both). Student block j ↔ teacher block keep[j]."""
    return list(keep[1:]) if keep else []


def teacher_states(model, input_ids: torch.Tensor, prefix: torch.Tensor | None = None, n_head: int = 0,
                   bridge: list[int] | None = None) -> torch.Tensor:
    """final_hidden (B, L, d); with `bridge` (teacher blocks), (B, 1 + K, L, d): the final states, then
    the state entering each of those blocks (hidden_states[k] is block k's input)."""
    if not bridge:
        return final_hidden(model, input_ids, prefix, n_head)
    out = model.base_model(input_ids=input_ids, output_hidden_states=True, use_cache=False)
    return torch.stack([out.last_hidden_state] + [out.hidden_states[k] for k in bridge], dim=1)


def teacher_hidden_states(ctx, teacher, rows: torch.Tensor, key: str, path: Path | None = None,
                          prefixes: distill_prefix.Prefixes | None = None,
                          bridge: list[int] | None = None) -> torch.Tensor | None:
    """The teacher's final hidden states for every row, computed once and cached on disk (bf16);
    with `bridge`, also the states entering those blocks (teacher_states: rows × (1 + K) × L × d).

    None if the run was cancelled part-way (nothing is written then). Peak memory is one copy of
    the states: rows × seq_len × hidden × 2 bytes (SmolLM2, 2150 rows of 32 tokens: 79 MB).
    `path`: where (over several processes, this rank's shard: engine.distill_shards.cache_path);
    `prefixes`: the rows' soft prefixes (engine.distill_prefix; the same rows, in the same order).
    """
    from safetensors.torch import load_file
    path = path or _cache_dir("teacher_hidden") / f"{key}.safetensors"
    if path.is_file():
        try:
            hidden = load_file(path)["hidden"]
            if hidden.shape[0] == rows.shape[0] and hidden.shape[-2] == rows.shape[1] and \
                    hidden.dim() == (4 if bridge else 3) and (not bridge or hidden.shape[1] == 1 + len(bridge)):
                ctx.log(f"reusing cached teacher hidden states {path}")
                return hidden
        except Exception:  # a damaged file is recomputed below, never trusted
            pass
    batch, hidden, start = 32, None, time.perf_counter()
    said = start
    ctx.log(f"caching the teacher's hidden states for {len(rows)} corpus rows (once; later epochs and runs reuse them)")
    # no_grad, not inference_mode: these tensors are later saved for the student's backward pass
    with torch.no_grad(), autocast(ctx.device, ctx.dtype):
        for i in range(0, len(rows), batch):
            if ctx.cancelled:
                return None
            prefix = None if prefixes is None else prefixes.vectors[i:i + batch]
            states = teacher_states(teacher, rows[i:i + batch].to(ctx.device), prefix,
                                    0 if prefixes is None else prefixes.n_head, bridge)
            if hidden is None:
                hidden = torch.empty(len(rows), *states.shape[1:], dtype=torch.bfloat16)
            hidden[i:i + batch] = states.to("cpu", torch.bfloat16)
            if time.perf_counter() - said >= 30:  # minutes on a slow CPU: say how far it is, not nothing
                said = time.perf_counter()
                ctx.log(f"teacher hidden states: {min(i + batch, len(rows))} of {len(rows)} rows "
                        f"({said - start:.0f} s)")
    artifacts.save_tensors(path, {"hidden": hidden})
    ctx.log(f"teacher hidden states cached in {time.perf_counter() - start:.0f} s: {path}")
    return hidden


def _kd_step_loss(cfg, teacher, forward, batch, ctx):
    """`forward`: the student's full forward (engine.distill_shards.StudentForward, DDP-wrapped over ranks)."""
    with torch.no_grad(), autocast(ctx.device, ctx.dtype):
        t_out = teacher(input_ids=batch, output_hidden_states=True, use_cache=False)
    with autocast(ctx.device, ctx.dtype):
        s_out = forward(batch)
    # a teacher split over devices (models.device_map) answers on its last one
    s_hidden, t_hidden = s_out.hidden_states[-1], t_out.hidden_states[-1].to(s_out.logits.device)
    same_width = s_hidden.shape[-1] == t_hidden.shape[-1]  # an aligned smaller model: no cosine on states
    return distillation_loss(s_out.logits, t_out.logits.to(s_out.logits.device), s_hidden, t_hidden, batch, torch.ones_like(batch),
                             cfg.temperature, cfg.weight_kd, cfg.weight_lm, cfg.weight_cos if same_width else 0.0)


def cue_positions(tokenizer, template: str, rows: torch.Tensor) -> torch.Tensor:
    """(rows, L) bool: positions whose token ends the template's cue (the text after `{text}`,
    e.g. " It was"), where the teacher predicts the task's label word."""
    cue = tokenizer(template.split("{text}", 1)[1], add_special_tokens=False).input_ids
    found = torch.zeros_like(rows, dtype=torch.bool)
    if not cue:
        return found
    k = len(cue)
    if rows.shape[1] >= k:
        windows = rows.unfold(1, k, 1)  # (rows, L - k + 1, k)
        found[:, k - 1:] = (windows == torch.tensor(cue, dtype=rows.dtype)).all(-1)
    return found


def _hidden_step_loss(cfg, teacher, forward, batch, ctx, target=None, weights=None, prefix=None, n_head=0,
                      bridge=None):
    """`forward`: the student's final hidden states (StudentForward, DDP-wrapped over ranks), with
    `bridge` (teacher blocks) stacked with the states entering its blocks after the first;
    `prefix`: the batch rows' soft prefixes (engine.distill_prefix), or None."""
    if target is None:  # corpus read once: no cache, the teacher runs beside the student
        with torch.no_grad(), autocast(ctx.device, ctx.dtype):
            target = teacher_states(teacher, batch, prefix, n_head, bridge)
    with autocast(ctx.device, ctx.dtype):
        hidden = forward(batch) if prefix is None else forward(batch, prefix, n_head)
    target = target.to(hidden.device)
    w = None if weights is None else weights.to(hidden.device)
    if not bridge:
        return hidden_state_loss(hidden, target, cfg.weight_mse, cfg.weight_cos, w)
    loss, parts = hidden_state_loss(hidden[:, 0], target[:, 0], cfg.weight_mse, cfg.weight_cos, w)
    between = bridge_state_loss(hidden[:, 1:], target[:, 1:], w)
    return loss + cfg.bridge_weight * between, {**parts, "bridge": between.detach()}


def train_student(ctx, teacher, student, rows: torch.Tensor, targets: torch.Tensor | None = None,
                  weights: torch.Tensor | None = None, checkpoint=None,
                  prefixes: distill_prefix.Prefixes | None = None) -> list[float]:
    """`targets`: the teacher's cached hidden states per row (hidden loss only), else computed per step;
    over several processes only this rank's shard of them (rows r, r + W, ...: engine.distill_shards);
    `weights`: per-position loss weights (hidden loss only; `distill.cue_weight`);
    `prefixes`: each row's soft prefix (hidden loss only; `distill.prefix_share`).

    `checkpoint` (engine.checkpoint.Checkpointer) saves the student, optimizer, schedule, data
    order and random states when due and on cancel; a matching checkpoint is continued exactly.
    Over several processes each step's global batch is the one a single process draws; each rank
    trains on the rows it owns, DDP averages the gradients (engine.distill_shards).
    """
    cfg = ctx.config.distill
    if cfg.freeze_embeddings:
        student.get_input_embeddings().requires_grad_(False)
    if cfg.freeze_head and student.get_output_embeddings() is not None:
        student.get_output_embeddings().requires_grad_(False)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _learning_rate(s, cfg.steps, cfg.warmup))
    generator = torch.Generator().manual_seed(ctx.config.runtime.seed)
    order, cursor, losses = torch.randperm(len(rows), generator=generator), 0, []
    saved = checkpoint.load() if checkpoint else None
    if saved:
        state = saved[1]
        student.load_state_dict(state["student"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        order, cursor, losses = state["order"], state["cursor"], state["losses"]
        ctx.log(f"distill: continuing from the checkpoint at step {len(losses)} of {cfg.steps}")

    def state_now() -> dict:
        return {"student": student.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                "generator": generator.get_state(), "torch_rng": torch.get_rng_state(), "order": order,
                "cursor": cursor, "losses": losses}

    student.train()
    bridge = bridge_blocks(getattr(student.config, "post_student_of_blocks", None)) if cfg.bridge_weight else None
    forward = distill_shards.wrap(student, hidden_only=cfg.loss == "hidden", bridge=bool(bridge))
    split, stop = distill_shards.RowSplit(len(rows), weights), bool(distributed.sum_over_ranks(int(ctx.cancelled)))
    for step in range(len(losses) + 1, cfg.steps + 1):
        if stop or (ctx.cancelled and not distributed.active()):  # several processes: only the all-reduced stop
            if checkpoint and losses:
                checkpoint.save(len(losses), state_now())
            ctx.cancel_event.set()  # a stop another rank asked for stops this one's pipeline too
            break
        if cursor + cfg.batch_size > len(order):  # next epoch over the corpus
            order, cursor = torch.randperm(len(rows), generator=generator), 0
        picked, fraction = split.mine(order[cursor:cursor + cfg.batch_size])  # one process: the whole batch
        batch = rows[picked].to(ctx.device)
        cursor += cfg.batch_size
        start = time.perf_counter()
        if cfg.loss == "hidden":
            loss, parts = _hidden_step_loss(cfg, teacher, forward, batch, ctx,
                                            None if targets is None else targets[split.local(picked)],
                                            None if weights is None else weights[picked],
                                            None if prefixes is None else prefixes.vectors[picked].to(ctx.device),
                                            0 if prefixes is None else prefixes.n_head, bridge)
        else:
            loss, parts = _kd_step_loss(cfg, teacher, forward, batch, ctx)
        optimizer.zero_grad(set_to_none=True)
        (loss * split.grad_scale(fraction)).backward()  # DDP: the ranks' gradients averaged here
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        schedule.step()
        seconds = time.perf_counter() - start
        value, parts, stop = split.reduce(loss.detach(), parts, fraction, ctx.cancelled)  # the global batch's
        check_finite("distill", step, value)  # a NaN student is never cached
        losses.append(value)
        _emit_step(ctx, step, cfg.steps, value, parts, seconds, cfg.batch_size * batch.shape[1])
        ranks.record_work(batch.numel() if fraction else 0, seconds)
        ranks.tick(ctx, "distill", step)
        if checkpoint and checkpoint.due(step) and step < cfg.steps:
            checkpoint.save(step, state_now())
    check_finite_weights("distill", params)  # the last update, which no loss has seen: a NaN student is never cached
    student.eval().requires_grad_(False)
    return losses


def _emit_step(ctx, step: int, total: int, loss: float, parts: dict[str, float], seconds: float, tokens: int) -> None:
    ctx.emit(Metric(stage="distill", step=step, name="loss", value=loss))
    for name, value in parts.items():
        ctx.emit(Metric(stage="distill", step=step, name=name, value=value))
    ctx.emit(Progress(stage="distill", step=step, total_steps=total, step_seconds=seconds,
                      tokens_per_s=tokens / seconds))


def _cache_dir(name: str) -> Path:
    from engine.assets import cache_root
    folder = cache_root() / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run_distill(ctx) -> Path | None:
    """Make (or reuse) the student; records its folder in `<run>/distill/student.json`.

    Returns None when cancelled: then only the checkpoint and a `cancelled` record are written,
    never a half-trained student in the cache. Over several processes every rank trains the one
    student (data parallel: engine.distill_shards); rank 0 alone writes its checkpoints and the
    cached student, the others keep the same weights in memory.
    """
    return _run_distill(ctx)


def student_plan(cfg, teacher, tokenizer) -> tuple[list[int] | None, dict, str]:
    """(blocks kept, identity, key) of the student this config makes. An aligned student starts
    from models.small, whose content is part of its identity; it keeps no teacher blocks."""
    identity = teacher_identity(cfg, teacher, tokenizer)
    if cfg.student_source == "aligned":
        from engine.fingerprints import pinned_model
        identity = {**identity, "aligned_from": cfg.models.small, "start": pinned_model(cfg.models.small)}
        return None, identity, student_key(cfg, identity)
    keep = resolve_blocks(cfg.distill.blocks, teacher.config.num_hidden_layers)
    return keep, identity, student_key(cfg, identity, keep)


def _starting_student(ctx, teacher, keep):
    """The student before training, float32 master weights: the teacher's kept blocks, or models.small."""
    if keep is not None:
        return make_student(teacher, keep, ctx.config.distill.init).to(ctx.device, torch.float32)
    from engine.models import check_same_tokenizer, load
    model, tokenizer = load(ctx.config.models.small, ctx.config.runtime.seed, ctx.config.models.trust_remote_code)
    large = loading.large(ctx)
    check_same_tokenizer(tokenizer, large[1])
    rows, want = model.get_output_embeddings().weight.shape[0], large[0].get_output_embeddings().weight.shape[0]
    if rows != want:  # one tokenizer, padded differently (e.g. across a family's sizes): logits would not line up
        raise PostError(f"{ctx.config.models.small} scores {rows} tokens and {ctx.config.models.large} {want}: "
                        "aligning needs the same output vocabulary; use distill.align = false")
    return model.to(ctx.device, torch.float32)


def _run_distill(ctx) -> Path | None:
    cfg = ctx.config
    teacher, tokenizer = loading.large(ctx)
    keep, identity, key = student_plan(cfg, teacher, tokenizer)
    inputs = {"student_key": key}
    final = _cache_dir("students") / key
    folder = ctx.stage_dir("distill")
    records.clear(folder)
    merged = ", each the mean of its group of blocks" if cfg.distill.init == "merged" else ""
    what = (f"student keeps blocks {keep} of {teacher.config.num_hidden_layers}{merged}" if keep is not None else
            f"aligning {cfg.models.small} to {cfg.models.large}")
    ctx.emit(StageStarted(stage="distill", total_steps=cfg.distill.steps, description=what))
    start = time.time()
    summary = {"blocks": keep, "key": key, "path": str(final), "loss": cfg.distill.loss, "teacher": identity}
    reuse = distributed.is_main() and _cached_kit(ctx, final, (cfg.models.large, identity, keep, key))
    if distributed.same_on_every_rank(int(reuse)):  # rank 0's cache decides
        if not kit.is_kit(final):
            raise PostError(f"rank {distributed.rank()}: rank 0 reuses the cached student {final}, which this "
                            "machine lacks: copy it here, or build a kit (post kit build) and set models.kit")
        ctx.log(f"reusing cached student {final}")
        summary["reused"] = True
    else:
        d = cfg.distill
        texts = corpus_texts(cfg)
        rows = pack(tokenizer, [d.template.replace("{text}", t) for t in texts], d.seq_len)
        prefixes = _prefixes(ctx, teacher, tokenizer, rows, keep)
        if ctx.cancelled:  # stopped while tuning the owner's prompts: nothing trained, nothing cached
            records.write(folder, "distill", records.CANCELLED, inputs, {}, steps=0, seconds=time.time() - start)
            return None
        if prefixes is not None:
            summary["prefixed_rows"] = int(prefixes.synthetic.sum())
        targets = None
        if d.loss == "hidden" and d.steps * d.batch_size > len(rows):  # the corpus is read more than once
            cache_start = time.time()
            bridge = bridge_blocks(keep) if d.bridge_weight else None
            targets = _cached_targets(ctx, teacher, rows, corpus_key(identity, rows, prefixes, bridge), prefixes, bridge)
            summary["teacher_cache_seconds"] = time.time() - cache_start
        weights = None
        if d.loss == "hidden" and d.cue_weight != 1.0:
            cues = cue_positions(tokenizer, d.template, rows)
            weights = 1.0 + (d.cue_weight - 1.0) * cues.float()
            summary["cue_positions"] = int(cues.sum())
        if d.bridge_weight:
            summary["bridge_blocks"] = bridge_blocks(keep)
        student = _starting_student(ctx, teacher, keep)
        checkpoint = Checkpointer(ctx, folder / "checkpoint.pt", records.digest(inputs)) if distributed.is_main() else None
        losses = train_student(ctx, teacher, student, rows, targets, weights, checkpoint, prefixes)  # [] when stopped before
        if ctx.cancelled:  # a half-trained student is never cached as if complete
            records.write(folder, "distill", records.CANCELLED, inputs, {}, steps=len(losses),
                          seconds=time.time() - start)
            return None
        summary.update(reused=False, first_loss=losses[0] if losses else None,
                       final_loss=losses[-1] if losses else None, steps=len(losses), corpus_rows=len(rows),
                       tokens=len(losses) * cfg.distill.batch_size * cfg.distill.seq_len)
        if distributed.is_main():  # the others hold the same weights (DDP) and use them from memory
            kit.write(final, student, tokenizer, cfg.models.large, identity, keep, key)  # what post kit build hands out
            checkpoint.discard()
        distributed.barrier()  # on one machine the others then find the saved kit (their records hash it)
        summary["processes"] = distributed.world_size()
        # as a later stage loads it (frozen, in runtime.dtype's storage): `post run` tunes on the very student
        # that `post tune` alone or a resume reads back, so their prompts agree to the bit
        ctx.cache["small"] = (loading.prepare(ctx, student), tokenizer)
    artifacts.write_json(folder / "student.json", {"path": str(kit.student_folder(final)), "kit": str(final), "key": key})
    ctx.saved("distill", final, "student kit")
    seconds = time.time() - start
    summary["seconds"] = seconds
    artifacts.write_json(folder / "summary.json", summary)
    records.write(folder, "distill", records.COMPLETED, inputs,
                  {**({"student": final} if final.is_dir() else {}),  # not on another machine than rank 0's
                   "record": folder / "student.json", "summary": folder / "summary.json"},
                  steps=summary.get("steps"), seconds=seconds)
    ctx.emit(StageFinished(stage="distill", seconds=seconds, summary=summary))
    return final


def _cached_kit(ctx, final: Path, identity: tuple) -> bool:
    """A cached student is reused only as a whole, unchanged kit; a damaged one is made again. A
    student cached before students were kits (the same key: the same recipe) is wrapped into one."""
    if not kit.is_kit(final):
        if not (final / "config.json").is_file():
            return False
        kit.adopt(final, *identity)
        ctx.log(f"cached student {final} (from an earlier post) wrapped into a kit")
    try:
        kit.verify(final)
    except PostError as err:
        ctx.log(f"cached student not reused, distilled again: {err}")
        return False
    return True


def _prefixes(ctx, teacher, tokenizer, rows: torch.Tensor, keep) -> distill_prefix.Prefixes | None:
    """The rows' soft prefixes when `distill.prefix_share` asks for them (a student of the teacher's
    own blocks: it reads the teacher's embeddings), else None."""
    from engine.models import input_device
    from engine.prompt import bos_id
    d = ctx.config.distill
    if not d.prefix_share:
        from engine.config import idle_prefix_settings
        idle = idle_prefix_settings(d)
        if idle:
            ctx.log(f"distill: {', '.join(idle)} do nothing here: distill.prefix_share is 0 (text only)")
        return None
    if keep is None:
        raise PostError("distill.prefix_share needs a student made of the teacher's blocks (models.small aligns "
                        "another model, whose embeddings differ): set distill.prefix_share = 0")
    embedding = teacher.get_input_embeddings()
    embed = lambda ids: embedding(ids.to(input_device(teacher)))  # noqa: E731 — the teacher's, on its device
    length, n_head, seed = d.prefix_length or ctx.config.tune.prompt_length, int(bos_id(tokenizer) is not None), \
        ctx.config.runtime.seed
    if not distill_prefix.synthetic_rows(len(rows), d.prefix_share, seed).any():  # the owner's prompts for nothing
        raise PostError(f"distill.prefix_share = {d.prefix_share} prefixes none of the {len(rows)} distillation "
                        f"rows at runtime.seed {seed}: raise it, or set 0 for text only")
    from engine.prompt import context_length
    limit = context_length(teacher)
    if limit is not None and rows.shape[1] + length > limit:
        raise PostError(f"a prefixed distillation row is {rows.shape[1] + length} positions (distill.seq_len "
                        f"{d.seq_len} + a prefix of {length}), more than {ctx.config.models.large}'s context of "
                        f"{limit}: lower distill.prefix_length or distill.seq_len")
    pool = None
    if d.prefix_source == "tuned":  # the owner's prompts for made-up tasks (engine.prefix_tasks)
        from engine import prefix_tasks
        starts = distill_prefix.text_spans(rows, embed, n_head, d.prefix_tasks, length, seed)
        # each made-up task's input is BOS + prompt + text: the text gets what the context leaves it
        room = d.seq_len if limit is None else min(d.seq_len, limit - length - n_head)
        pool = prefix_tasks.tuned_pool(ctx, teacher, tokenizer, corpus_texts(ctx.config), starts, room)
        if distributed.sum_over_ranks(int(pool is None)):  # a stop asked on any rank while tuning stops all;
            ctx.cancel_event.set()                         # the caller writes the cancelled record
            return None
        # several processes: rank 0's prompts for every rank (hundreds of optimizer steps can amplify
        # float differences between machines; the prefixes, the teacher's states and the student must agree)
        distributed.sync_tensor_(pool)
        if not torch.isfinite(pool).all():  # rank 0's pool on every rank: every rank refuses alike
            raise PostError("distill: a prompt the owner tuned for a made-up task diverged (inf or nan): lower "
                            "tune.lr, which tunes those prompts too, and run again")
    return distill_prefix.make(rows, embed, n_head, d.prefix_share, length, d.prefix_noise, seed, pool)


def _cached_targets(ctx, teacher, rows: torch.Tensor, key: str,
                    prefixes: distill_prefix.Prefixes | None = None, bridge: list[int] | None = None) -> torch.Tensor | None:
    """The teacher's states of this rank's corpus shard (all rows with one process), cached; rank 0
    writes the shards' manifest. A stop asked on any rank while caching stops every rank here."""
    owned = distill_shards.RowSplit(len(rows)).owned(len(rows))
    path = distill_shards.cache_path(_cache_dir("teacher_hidden"), key)
    mine = None if prefixes is None else distill_prefix.Prefixes(prefixes.vectors[owned], prefixes.synthetic[owned],
                                                                  prefixes.n_head)
    targets = teacher_hidden_states(ctx, teacher, rows[owned], key, path, mine, bridge)
    if distributed.sum_over_ranks(int(targets is None)):
        ctx.cancel_event.set()
        return None
    distill_shards.write_manifest(path, key, len(rows), len(owned))
    return targets
