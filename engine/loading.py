"""Models, tokenizers and data, loaded once per run and shared by the stages."""
from __future__ import annotations

from pathlib import Path

from engine import models, public_pick
from engine.data import generated
from engine.data.tasks import Examples, encode, load_public, load_task
from engine.errors import PostError
from engine.verbalizer import Verbalizer


def prepare(ctx, model):
    model.requires_grad_(False)  # only prompts (or the student, in distill) ever get gradients
    if ctx.config.runtime.dtype == "auto":
        ctx.once("dtype-said", lambda: ctx.log(
            f"runtime.dtype = auto → {ctx.dtype} ({ctx.dtype_reason}): frozen model weights in "
            f"{str(ctx.frozen_dtype).removeprefix('torch.')}, prompts and a student in training in float32"))
    return model.to(ctx.device, ctx.frozen_dtype).eval()


def large(ctx):
    """(model, tokenizer) of the large model."""
    cfg = ctx.config
    def make():
        ctx.log(f"loading large model {cfg.models.large}")
        if cfg.models.device_map:
            return _dispatched(ctx)
        model, tok = models.load(cfg.models.large, cfg.runtime.seed, cfg.models.trust_remote_code)
        return prepare(ctx, model), tok
    return ctx.once("large", make)


def student_ref(ctx) -> str:
    """Where the student is: models.small, or the student folder of a kit — the owner's (models.kit)
    or the one this run's distill stage wrote; a kit is checked against its manifest once per run."""
    if ctx.config.student_source == "given":
        return ctx.config.models.small
    from engine import kit
    folder = student_kit(ctx)
    if folder is not None:
        ctx.once(("kit", str(folder)), lambda: kit.verify(folder))
        return str(kit.student_folder(folder))
    path = Path(legacy_student_path(ctx))
    if kit.is_kit(path):  # since wrapped into a kit in place by a later run: checked like any kit
        ctx.once(("kit", str(path)), lambda: kit.verify(path))
    return str(kit.student_files(path))


def legacy_student_path(ctx) -> str:
    """The folder a run's distill record names when it was written before students were kits."""
    from engine.artifacts import DamagedArtifact, read_json_dict
    record = ctx.run_dir / "distill" / "student.json"
    path = read_json_dict(record, "student record").get("path")
    if not isinstance(path, str) or not path:
        raise DamagedArtifact(f"{record}: damaged student record (no path): resume the run, distill runs again")
    return path


def student_kit(ctx) -> Path | None:
    """The kit the student comes from: models.kit, or the kit the distill stage recorded."""
    if ctx.config.models.kit:
        return Path(ctx.config.models.kit)
    record = ctx.run_dir / "distill" / "student.json"
    if not record.is_file():
        raise PostError(f"no student in {ctx.run_dir}: run the distill stage first or set models.small")
    from engine.artifacts import read_json_dict
    found = read_json_dict(record, "student record").get("kit")
    return Path(found) if isinstance(found, str) and found else None


def small(ctx):
    """(model, tokenizer) of the student; checked to share the large model's tokenizer when both are loaded."""
    def make():
        ref = student_ref(ctx)
        ctx.log(f"loading student {ref}")
        model, tok = models.load(ref, ctx.config.runtime.seed, ctx.config.models.trust_remote_code)
        if "large" in ctx.cache:
            models.check_same_tokenizer(tok, ctx.cache["large"][1])
        return prepare(ctx, model), tok
    return ctx.once("small", make)


def both(ctx):
    (lm, ltok), (sm, stok) = large(ctx), small(ctx)
    models.check_same_tokenizer(stok, ltok)
    return lm, sm, ltok


def task(ctx, tokenizer) -> dict[str, Examples]:
    return ctx.once("task", lambda: load_task(ctx.config.task, tokenizer, ctx.config.runtime.seed,
                                              warn=lambda note: ctx.log(note, "warning")))


def public(ctx, tokenizer) -> Examples:
    """The public set: read from its source or written by the large model (public.source = "generated"),
    and with public.pick = "balanced" picked from those candidates by the student with the small prompt."""
    if ctx.config.public.pick == public_pick.BALANCED:
        return ctx.once("public", lambda: public_pick.pick(ctx, tokenizer, public_candidates(ctx, tokenizer)))
    return public_candidates(ctx, tokenizer)


def public_candidates(ctx, tokenizer) -> Examples:
    """The public texts read from a source (read in preflight to check it before any stage runs) or written
    by the large model (in the transfer stage): the public set itself, or with public.pick = "balanced" the
    pool it is picked from."""
    cfg = ctx.config.public
    if cfg.source != generated.GENERATED:
        return ctx.once("public_candidates", lambda: load_public(cfg, tokenizer, ctx.config.runtime.seed))

    def write():
        from engine.prompt import bos_id
        model, _ = large(ctx)
        count = cfg.pool if cfg.pick == public_pick.BALANCED else cfg.size
        texts = generated.texts_for(ctx, model, tokenizer, bos_id(tokenizer), count)
        return Examples([encode(tokenizer, cfg.template, {"text": t}, ["text"], cfg.max_length, "public")
                         for t in texts])
    return ctx.once("public_candidates", write)


def _dispatched(ctx):
    """The large model split over devices by accelerate (models.device_map = "auto"): frozen, in the
    frozen dtype, never moved as a whole; inputs go to its embeddings' device, logits come back."""
    from engine import distributed
    cfg = ctx.config
    if distributed.world_size() > 1:
        raise PostError("models.device_map = \"auto\" splits the model within one process: run without "
                        "torchrun / --nproc (or give each process the whole model)")
    model, tok = models.load_dispatched(cfg.models.large, ctx.frozen_dtype, cfg.models.max_memory,
                                        cfg.models.trust_remote_code)
    model.requires_grad_(False)
    placed = models.devices_of(model) or {str(models.input_device(model)): 1}
    ctx.log("large model split by accelerate: " + ", ".join(f"{n} part(s) on {d}" for d, n in placed.items()))
    return model, tok


def verbalizer(ctx, tokenizer) -> Verbalizer:
    return ctx.once("verbalizer", lambda: Verbalizer.build(tokenizer, ctx.config.task.label_words))


def small_prompt_path(ctx) -> Path:
    """The small prompt the transfer reads: the prompt package's (checked against its manifest), the
    same artifact in the one-machine flow and the owner's; a folder from before packages: tune's."""
    folder = ctx.run_dir / "package"
    if (folder / "manifest.json").is_file():
        from engine import fingerprints, package
        made_for = fingerprints.student_identity(ctx).get("kit")  # a package tuned on another kit is refused
        ctx.once("package", lambda: package.verify(folder, made_for))
        return folder / "prompt.safetensors"
    return prompt_path(ctx, "tune")


def prompt_path(ctx, stage: str, name: str = "prompt") -> Path:
    return ctx.run_dir / stage / f"{name}.safetensors"
