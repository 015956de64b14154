"""What each stage's result depends on — the inputs a stage record and a checkpoint are keyed by.

Each function returns a plain dict (config sections, upstream artifacts' hashes, the data's
content hash); `records.digest` turns it into the fingerprint, and `records.changed_inputs`
names what changed when a resume has to rerun a stage. Computing one may load the models and
data the stage would load anyway (preflight already did).
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib

from engine import artifacts, loading
from engine.config import stable_dump


def examples_hash(examples) -> str:
    """Content hash of a tokenized split: every example's token ids and label."""
    digest = hashlib.sha256()
    for i, ids in enumerate(examples.input_ids):
        digest.update(repr(ids).encode())
        if examples.labels is not None:
            digest.update(f"|{examples.labels[i]};".encode())
    return digest.hexdigest()[:16]


def private_data_hash(ctx, tokenizer, names=("train", "validation")) -> dict[str, str]:
    """Tuning reads train and validation; the test split never changes a prompt."""
    splits = loading.task(ctx, tokenizer)
    return {name: examples_hash(splits[name]) for name in names}


def _runtime(ctx) -> dict:
    """runtime.seed and dtype; "auto" by what it resolved to on this machine (bf16 where the device computes
    it fast, else float32): a run folder moved to a machine that resolves it otherwise trains other prompts.
    Explicit dtypes keep the keys they had."""
    from engine.config import result_runtime
    runtime = result_runtime(ctx.config)
    if runtime.get("dtype") == "auto" and not old_keys():
        runtime["dtype"] = _AUTO_AS.get() or f"auto:{ctx.dtype}"
    return runtime


# A stage run alone (pipeline.check_upstream) goes on from records made where runtime.dtype = "auto" resolved
# otherwise (a folder moved between a bf16 machine and one without): eval scores prompts whichever dtype
# trained them, and training them again — under DP, spending ε again — is no fix. Resume keeps the resolved key.
_AUTO_AS = contextvars.ContextVar("auto_dtype_as", default=None)


@contextlib.contextmanager
def auto_dtype_as(recorded):
    """Key "auto" as the record's resolution ("auto:<dtype>"), when it has one, within the block."""
    token = _AUTO_AS.set(recorded if isinstance(recorded, str) and recorded.startswith("auto:") else None)
    try:
        yield
    finally:
        _AUTO_AS.reset(token)


def student_identity(ctx) -> dict:
    """The student's identity: its folder's content hash (a re-distilled student is another input)."""
    ref = loading.student_ref(ctx)  # checks a kit against its manifest
    folder = None if ctx.config.student_source == "given" else loading.student_kit(ctx)
    if folder is not None:
        from engine import kit, manifest
        return {"kit": manifest.fingerprint(ctx.once(("kit", str(folder)), lambda: kit.verify(folder)))}
    # A run recorded before students were kits keeps its recorded folder name as the reference even after
    # a later run wrapped that folder into a kit: the student files, hence the key, did not change.
    named = ref if ctx.config.student_source == "given" else loading.legacy_student_path(ctx)
    return {"ref": named, "key": ctx.once(("student_hash", ref, old_keys()), lambda: pinned_model(ref))}


_CONTENT: dict[tuple, str] = {}


def content_id(ref: str) -> str:
    """A local file or folder by its content (edited in place, it is another input); else the name
    (a hub id or an offline asset, whose content the name fixes)."""
    from pathlib import Path
    path = Path(ref).expanduser()  # as the data and model readers resolve it
    if not path.exists():
        return ref
    # Hashed once per process while no file's size or mtime moves: a model folder is hundreds of MB,
    # and one run asks for its key several times (preflight, each stage, each α).
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    stamp = (str(path.resolve()), tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))
    if stamp not in _CONTENT:
        _CONTENT[stamp] = artifacts.sha256_of(path)[:16]
    return _CONTENT[stamp]


def local_content(ref: str) -> str | None:
    """content_id of a local file or folder; None for a name (a key that adds it only for local paths keeps
    the keys of runs made on named models and sets as they were)."""
    content = content_id(ref)
    return None if content == ref else content


# Keys as post wrote them before 2026-12-07 (no hub commits or rows, privacy.budget and task.test_split as set,
# runtime.dtype "auto" as the word, a tied head's freeze and a hub corpus's rows left out): a record written
# then is still done when these inputs match it (pipeline.why_rerun), so an upgrade does not rerun
# finished stages — or refuse a DP tune as out of ε. A record written since is never matched by them.
_BEFORE_2026_12_07 = contextvars.ContextVar("keys_before_2026_12_07", default=False)


@contextlib.contextmanager
def keys_before_2026_12_07():
    token = _BEFORE_2026_12_07.set(True)
    try:
        yield
    finally:
        _BEFORE_2026_12_07.reset(token)


def old_keys() -> bool:
    return _BEFORE_2026_12_07.get()


def hub_revision(ref: str) -> str | None:
    """The commit of a hub model's snapshot in the local hub cache — what from_pretrained loads (a stage's key
    is taken after preflight loaded the model); None for a local path, an offline asset, a tiny test model or a
    model not fetched here yet (eval's check then matches by name: trained_on_another_large)."""
    from pathlib import Path
    if old_keys() or ref.startswith("tiny:") or Path(ref).expanduser().exists():
        return None
    try:
        from engine.assets import CATALOGUE
        if ref in CATALOGUE:
            return None
    except ImportError:
        pass
    from engine.hub import cached_snapshot
    snapshot = cached_snapshot(ref)
    return None if snapshot is None else snapshot.name


def pinned_model(ref: str) -> str:
    """A model by what fixes its weights: a local folder's content hash, a hub id with its cached commit
    (`id@commit`: the hub's owner may push new weights under the same name), an offline asset's name as it is."""
    content = local_content(ref)
    if content is not None:
        return content
    revision = hub_revision(ref)
    return ref if revision is None else f"{ref}@{revision}"


def large_identity(ctx) -> dict:
    """The large model by its name, and by what fixes its weights where the name does not (pinned_model): a
    folder replaced in place, or new weights pushed under a hub id, are another model whose prompts must be
    trained again (an offline asset's key stays its name)."""
    return _large_by_name(ctx.config.models.large)


def _large_by_name(name: str) -> dict:
    pin = pinned_model(name)
    return {"large": name} if pin == name else {"large": name, "large_content": pin}


def trained_on_another_large(large: str, inputs: dict) -> str | None:
    """The model prompts recorded with `inputs` (a transfer or full PT record's) were trained on when it is not
    `large` (this run's models.large), else None. The same weights under two local paths, or under a hub id
    and a folder, match by content."""
    ours, theirs = _large_by_name(large), {k: inputs.get(k) for k in ("large", "large_content")}
    if theirs["large"] == large and not (theirs["large_content"] and ours.get("large_content")):
        # one side unpinned: a record of a post that kept no hub commit, or a hub model this machine has not
        # fetched yet (eval loads it by this name, and a run's own stages are keyed by what it loads)
        return None
    if _weights_ids(ours["large"], ours.get("large_content")) & _weights_ids(theirs["large"], theirs["large_content"]):
        return None
    return f"{theirs['large']} ({theirs['large_content'] or 'by its name'})"


def _weights_ids(name: str, pin: str | None) -> set[str]:
    """What identifies a model's weights: its pin (a folder's content hash, or id@commit with, when that
    snapshot is in the hub cache here, the snapshot folder's content hash), else its name."""
    if not pin:
        return {name}
    ids = {pin}
    repo, _, commit = pin.rpartition("@")
    if repo and len(commit) == 40:
        from engine.hub import cached_snapshot
        snapshot = cached_snapshot(repo, commit)
        if snapshot is not None:
            ids.add(content_id(str(snapshot)))
    return ids


def distill_inputs(ctx) -> dict:
    from engine.distill import student_plan
    teacher, tokenizer = loading.large(ctx)
    return {"student_key": student_plan(ctx.config, teacher, tokenizer)[2]}


def _trained_on(cfg) -> dict:
    """The task and privacy settings a prompt trained on private data depends on. The test split is read by
    eval alone, and privacy.budget only refuses a run before it starts (a budget-stopped stage stays done, as
    every finished one): changing either must not train — and, under DP, spend ε — again. Both are keyed at
    their defaults, so the keys of runs made before stay as they were."""
    from engine.config import PrivacyConfig, TaskConfig
    task, privacy = cfg.task.model_dump(), cfg.privacy.model_dump()
    if old_keys():
        return {"task": task, "privacy": privacy}
    task["test_split"] = TaskConfig.model_fields["test_split"].default
    privacy["budget"] = PrivacyConfig.model_fields["budget"].default
    return {"task": task, "privacy": privacy}


def tune_inputs(ctx) -> dict:
    _, tokenizer = loading.small(ctx)
    return {**tune_settings(ctx), "data": private_data_hash(ctx, tokenizer)}


def tune_settings(ctx) -> dict:
    """tune_inputs without the private data's content: what a stage that never opens the data (the
    transfer) can check of the prompt it carries on."""
    cfg = ctx.config
    trained_on = _trained_on(cfg)
    return {"task": trained_on["task"], "tune": cfg.tune.model_dump(), "privacy": trained_on["privacy"],
            "student": student_identity(ctx), **_runtime(ctx)}


def full_pt_inputs(ctx) -> dict:
    cfg = ctx.config
    _, tokenizer = loading.large(ctx)
    trained_on = _trained_on(cfg)
    return {"task": trained_on["task"], "tune": cfg.tune.model_dump(), "privacy": trained_on["privacy"],
            **large_identity(ctx), "steps": cfg.eval.full_pt_steps,
            "data": private_data_hash(ctx, tokenizer), **_runtime(ctx)}


def audit_inputs(ctx) -> dict:
    """The shadows repeat tune's recipe on tune's data: tune's inputs, the steps the released tune took (the
    shadows' passes follow them) and how many shadows on which pool."""
    summary = ctx.stage_dir("tune") / "summary.json"
    steps = artifacts.read_json_dict(summary, "tune summary").get("steps") if summary.is_file() else None
    return {**tune_inputs(ctx), "released_steps": steps, "audit": ctx.config.audit.model_dump()}


def transfer_settings(ctx) -> dict:
    """Everything a transfer prompt depends on except α (the small prompt's bytes included)."""
    cfg = ctx.config
    transfer = {k: v for k, v in stable_dump(cfg)["transfer"].items() if k not in ("alpha", "methods")}
    return {"transfer": transfer, "public": {**public_settings(cfg), **hub_public_rows(ctx)},
            **large_identity(ctx), "student": student_identity(ctx), **_runtime(ctx),
            "small_prompt": _file_hash(loading.small_prompt_path(ctx))}


def public_settings(cfg) -> dict:
    """What the public set depends on. Settings at their defaults that runs made before them never had
    (public.prefix; public.pick and public.pool, config.LATE_DEFAULTS) are left out, so those runs'
    transfers stay valid."""
    public = stable_dump(cfg)["public"]
    if not cfg.public.prefix:
        public.pop("prefix")
    if cfg.public.prefix:  # a generated public set depends on the label words its prefixes name
        public["labels"] = [words[0] for words in cfg.task.label_words]
    content = local_content(cfg.public.source)
    if content is not None:  # a local file or folder: edited in place, it is another public set
        public["content"] = content
    return public


def hub_public_rows(ctx) -> dict:
    """A public set read from the hub by the content of its rows: the name does not fix them (the set's
    owner may push a new revision), and a transfer trained on the old rows must not be kept. Named assets,
    local paths (public_settings) and generated sets are left as they were keyed."""
    from engine.data.sources import from_hub
    source = ctx.config.public.source
    if old_keys() or not from_hub(source):
        return {}
    _, tokenizer = loading.large(ctx)  # the transfer reads the public set with the large model's tokenizer
    return {"rows": ctx.once(("public_rows", source), lambda: examples_hash(loading.public_candidates(ctx, tokenizer)))}


def _file_hash(path) -> str:
    from engine.errors import PostError
    from engine.prompt import tensor_hash
    try:
        return tensor_hash(path) if path.is_file() else "missing"
    except PostError:
        return "damaged"


def transfer_inputs(ctx, alpha) -> dict:
    return {**transfer_settings(ctx), "alpha": alpha, "methods": sorted(ctx.config.transfer.methods)}


def stage_inputs(ctx, stage: str, alpha=None) -> dict:
    if stage == "distill":
        return distill_inputs(ctx)
    if stage == "tune":
        return tune_inputs(ctx)
    if stage == "full_pt":
        return full_pt_inputs(ctx)
    if stage == "transfer":
        return transfer_inputs(ctx, alpha)
    if stage == "audit":
        return audit_inputs(ctx)
    raise ValueError(f"no fingerprint for stage {stage}")
