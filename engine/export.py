"""`post export`: a finished run's large-model prompt as a PEFT prompt-tuning adapter.

    post export RUN_DIR [--method post] --out ADAPTER

    ADAPTER/adapter_config.json, adapter_model.safetensors   PEFT's own files (PromptTuningConfig), written by PEFT
    ADAPTER/post_export.json   which prompt it is, how to tokenize for it, its privacy (ε of the training it
                               comes from, or not private), and the equivalence check

The adapter loads with `PeftModel.from_pretrained(large_model, ADAPTER)`. PEFT puts its virtual tokens
before everything the tokenizer produced, while post lays a sequence out as [BOS][prompt][text]. For a
tokenizer that starts sequences with BOS (Llama, Gemma) the adapter's first virtual token is therefore
the BOS embedding, and inputs must be tokenized without special tokens (`add_special_tokens=False`):
with the tokenizer's own BOS, PEFT would run [prompt][BOS][text], an input the prompt never saw.

Before anything is written, the adapter is loaded back through PEFT onto the large model and its
next-token logits are compared with post's own prompted forward pass on a few fixed sentences in the
task's template (no data is read): an export that PEFT would run differently is refused, not written.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch

from engine import artifacts, methods, records
from engine.errors import PostError, os_problem

INFO = "post_export.json"
# Fixed, public inputs for the check: sentences of no data set, filled into the task's template.
CHECK_TEXTS = ("A short sentence about nothing in particular.",
               "The weather report said rain, then sun, then rain again for the rest of the week.")
# Largest |logit difference| accepted between PEFT's forward and post's. Both run the same float32 model on
# the same embeddings; they differ only in how the attention mask and positions are passed, so only the
# order of float operations differs (measured ≈ 1e-5 on the tiny and real models).
TOLERANCE = 1e-3


def source(run_dir: Path, method: str, cfg) -> tuple[Path, str]:
    """The prompt file of `method` in a finished run and its stage, checked against the stage's record: done,
    the file as recorded, and made from what the run holds now (the large model, the small prompt)."""
    if method not in methods.EXPORTABLE:
        raise PostError(f"{method!r} has no prompt for the large model to export: choose one of "
                        f"{', '.join(methods.EXPORTABLE)}")
    stage = methods.METHODS[method].prompt_stage
    name = "prompt" if stage in ("tune", "full_pt") else method
    if method == "post" and cfg.transfer.alpha == "select":
        name = _selected(run_dir)
    record = records.require_done(run_dir / stage,
                                  f"finish it (post run --resume {run_dir}) before exporting {method}")
    path = run_dir / stage / f"{name}.safetensors"
    if stage == "tune" and not path.is_file() and (run_dir / "package" / "manifest.json").is_file():
        return _received_prompt(run_dir)  # the model owner's folder: the user's prompt is the package's
    recorded = _recorded_sha256(record, run_dir / stage, path)
    if recorded is not None and not path.is_file():
        raise PostError(f"{path} is missing, though its {stage} stage recorded it: resume the run (post run --resume "
                        f"{run_dir}) so the stage runs again")
    if not path.is_file() or recorded is None:
        how = "set eval.full_pt = true" if stage == "full_pt" else f"add {method} to transfer.methods"
        raise PostError(f"{run_dir} has no {method} prompt ({path.relative_to(run_dir)}): its {stage} stage did not "
                        f"train it ({how} and resume the run)")
    if artifacts.sha256_file(path) != recorded:
        raise PostError(f"{path} is not the prompt its {stage} stage recorded (changed since): resume the run so "
                        f"the stage runs again")
    inputs = record.get("inputs") if isinstance(record.get("inputs"), dict) else {}
    from engine.fingerprints import trained_on_another_large  # eval's check: the same weights under any name
    if stage != "tune" and trained_on_another_large(cfg.models.large, inputs) is not None:
        raise PostError(f"the {stage} prompt in {run_dir} was made for {inputs.get('large')!r}, and the run's large "
                        f"model is now {cfg.models.large!r}: resume the run so the {stage} stage runs again")
    if stage == "transfer" and inputs.get("small_prompt") != _small_prompt_hash(run_dir):
        raise PostError(f"the transfer prompts in {run_dir} were made from an earlier small prompt than the run's "
                        f"tuned one now: resume the run so the transfer runs again (post run --resume {run_dir})")
    return path, stage


def _received_prompt(run_dir: Path) -> tuple[Path, str]:
    """The user's small prompt in the model owner's folder: the package received, checked against its manifest."""
    from engine import package
    package.verify(run_dir / "package")
    return run_dir / "package" / "prompt.safetensors", "tune"


def _recorded_sha256(record: dict, stage_dir: Path, path: Path) -> str | None:
    """The sha256 the stage record lists for `path`; None when it does not list it."""
    listed = record.get("artifacts")
    for entry in (listed.values() if isinstance(listed, dict) else ()):
        if isinstance(entry, dict) and isinstance(entry.get("path"), str) and \
                (stage_dir / entry["path"]).resolve() == path.resolve():
            return entry.get("sha256")
    return None


def _small_prompt_hash(run_dir: Path) -> str | None:
    """The small prompt the transfer reads (the package's; before packages, tune's), by its values; on the
    user's machine the package must hold tune's prompt (a newer tune makes an older package stale)."""
    from engine.prompt import tensor_hash
    tuned, packed = run_dir / "tune" / "prompt.safetensors", run_dir / "package" / "prompt.safetensors"
    if (run_dir / "package" / "manifest.json").is_file():
        if tuned.is_file() and tensor_hash(tuned) != tensor_hash(packed):
            raise PostError(f"{run_dir}/package holds an earlier prompt than tune's: resume the run (post run --resume "
                            f"{run_dir}) so the package and the transfer are made again")
        return tensor_hash(packed)
    return tensor_hash(tuned) if tuned.is_file() else None


def _selected(run_dir: Path) -> str:
    """POST under transfer.alpha = "select": the candidate the user's eval chose, as long as the prompt it chose
    (eval/post.safetensors) is still that candidate's transfer prompt."""
    choice = run_dir / "eval" / "alpha.json"
    eval_record = records.read(run_dir / "eval")
    if not choice.is_file() or eval_record is None or eval_record.get("status") not in records.DONE_STATUSES:
        raise PostError(f"{run_dir} chooses α on validation (transfer.alpha = \"select\") and its eval has not chosen "
                        f"yet: finish the run (post eval {run_dir}), or export a candidate by name: --method output "
                        "(α = 0) or shift (α = 1)")
    chosen = artifacts.read_json_dict(choice, "α choice").get("method")
    if not isinstance(chosen, str) or chosen not in methods.SELECT_CANDIDATES:
        raise PostError(f"{choice}: damaged α choice (method {chosen!r}): run post eval {run_dir} again")
    kept, candidate = run_dir / "eval" / "post.safetensors", run_dir / "transfer" / f"{chosen}.safetensors"
    if not kept.is_file() or not candidate.is_file() or \
            artifacts.sha256_file(kept) != artifacts.sha256_file(candidate):
        raise PostError(f"the eval in {run_dir} chose among earlier transfer prompts than the run holds now: run "
                        f"post eval {run_dir} again so the choice is made for these")
    return chosen


def export(run_dir: Path, method: str, out: Path, model=None, tokenizer=None) -> dict:
    """Write `method`'s prompt of `run_dir` as a PEFT adapter in `out` (atomic); `model`/`tokenizer`:
    the large model already loaded (tests, tiny models), else loaded from the run's config."""
    from engine.config import read_toml, validate
    from engine.prompt import SoftPrompt
    run_dir, out = Path(run_dir), Path(out)
    if not (run_dir / "config.toml").is_file():
        raise PostError(f"{run_dir} is not a run folder (no config.toml): give the folder post run wrote")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PostError(f"{out} already exists and is not an empty folder: give a new folder for the adapter")
    existing = next(p for p in (out.parent, *out.parent.parents) if p.exists())
    if not existing.is_dir():  # checked before minutes of model loading
        raise PostError(f"cannot write {out}: {existing} is a file, not a folder")
    cfg = validate(read_toml(run_dir / "config.toml"))
    path, stage = source(run_dir, method, cfg)
    if model is None:
        from engine import models
        model, tokenizer = models.load(cfg.models.large, cfg.runtime.seed, cfg.models.trust_remote_code)
    prompt = SoftPrompt.load(path).weight.detach().float()
    width = model.get_input_embeddings().weight.shape[-1]
    if prompt.shape[-1] != width:
        raise PostError(f"the {method} prompt is {prompt.shape[-1]} wide and {cfg.models.large}'s embeddings {width}: "
                        "it runs on the student, not the large model")
    virtual, bos = virtual_tokens(model, tokenizer, prompt)
    try:
        return _write(out, model, tokenizer, virtual, prompt, bos, path, run_dir, method, stage, cfg)
    except OSError as err:  # permissions, a full disk: one line, and atomic_dir left nothing behind
        problem = os_problem(err)  # names the folder and what to do; else the error as the OS says it
        raise PostError(problem or f"cannot write {out}: {err.strerror or err}") from None


def _write(out: Path, model, tokenizer, virtual, prompt, bos, path: Path, run_dir: Path, method: str, stage: str,
           cfg) -> dict:
    with artifacts.atomic_dir(out) as temp:
        _save_adapter(model, virtual, temp, model_name(cfg.models.large))
        check = equivalence(model, tokenizer, temp, prompt, bos, cfg.task.template, cfg.task.text_fields)
        if check["max_abs_logit_difference"] > TOLERANCE:
            raise PostError(f"PEFT runs this prompt differently from post on {cfg.models.large} (logits differ by up "
                            f"to {check['max_abs_logit_difference']:.2g}): nothing exported")
        # no paths: the adapter may travel, and a folder's name can say what the private data is
        info = {"method": method, "label": methods.label(method), "prompt": str(path.relative_to(run_dir)), "prompt_sha256": artifacts.sha256_file(path),
                "large_model": model_name(cfg.models.large), "prompt_length": int(prompt.shape[0]),
                "num_virtual_tokens": int(virtual.shape[0]), "bos_is_first_virtual_token": bos is not None,
                "tokenize": "tokenizer(text, add_special_tokens=False)" + (
                    ": the adapter's first virtual token is the BOS embedding" if bos is not None else ""),
                "checked_inputs": "one text at a time, unpadded (a batch: pad on the right)",
                "template": cfg.task.template, "text_fields": cfg.task.text_fields, **_reading(cfg, tokenizer),
                "privacy": privacy(run_dir, stage), "check": check}
        artifacts.write_json(temp / INFO, info)
    return info


def _reading(cfg, tokenizer) -> dict:
    """How post turns an input into an answer, so that the adapter's user gets post's accuracy: how a long text
    is cut, which tokens score each class and how, in which dtype."""
    from engine.verbalizer import Verbalizer
    verbalizer = Verbalizer.build(tokenizer, cfg.task.label_words)
    return {"label_words": cfg.task.label_words, "label_token_ids": verbalizer.token_ids,
            "max_length": cfg.task.max_length,
            "cut": f"an input longer than max_length = {cfg.task.max_length} tokens has its first text field cut "
                   "from the end until the filled template fits, then only its last max_length tokens are kept "
                   "(the template's cue survives)",
            "scoring": "at the last input position, a class's score is the mean of the next-token logits of its "
                       "label_token_ids (each label word's first token as the word appears after a space); the "
                       "answer is the class with the highest score",
            "dtype": cfg.runtime.dtype}


def privacy(run_dir: Path, stage: str) -> dict:
    """ε of the private training the prompt comes from: full PT's own, else the user's tune (which every
    transferred prompt and Direct derive from) — from a certificate its stage record lists with this sha256,
    or, in the owner's folder, the one in the package received (checked against its manifest). Without a
    certificate the prompt is not private."""
    from engine import package
    origin = "full_pt" if stage == "full_pt" else "tune"
    found = run_dir / origin / "privacy.json"
    if found.is_file():
        record = records.read(run_dir / origin) or {}
        if _recorded_sha256(record, run_dir / origin, found) != artifacts.sha256_file(found):
            raise PostError(f"{found} is not the certificate its {origin} stage recorded: resume the run so the "
                            f"stage runs again")
    elif origin == "tune" and (run_dir / "package" / "manifest.json").is_file():
        found = run_dir / "package" / "privacy.json"
        if "privacy.json" not in package.verify(run_dir / "package")["files"]:
            return {"private": False, "from": origin}
    else:
        return {"private": False, "from": origin}
    cert = artifacts.read_json_dict(found, "privacy certificate")
    out = {"private": True, "from": origin, "certificate": str(found.relative_to(run_dir)),
           **{k: cert.get(k) for k in ("epsilon", "delta", "accountant")}}
    composed = cert.get("ledger") if isinstance(cert.get("ledger"), dict) else {}
    if "composed_epsilon" in composed:  # ε is this release's; the data's lifetime ε composes every release on it
        out.update(composed_epsilon=composed["composed_epsilon"], composed_releases=composed.get("composed_releases"),
                   epsilon_is="this release's; composed_epsilon: every release on the same data, this one included")
        now = _composed_now(composed)
        if now is not None:  # releases on the same data since the certificate (full PT, a later tune) count too
            out.update(composed_epsilon=now["epsilon"], composed_releases=now["releases"],
                       composed_when="at export, from this machine's privacy ledger",
                       composed_at_release={"epsilon": composed["composed_epsilon"],
                                            "releases": composed.get("composed_releases")})
    return out


def _composed_now(composed: dict) -> dict | None:
    """The data's composition in this machine's ledger now, where the ledger holds the certificate's release
    (the user's machine); None where it does not (the model owner's: the certificate's figure stands)."""
    from engine.privacy import ledger
    key, release = composed.get("data"), composed.get("release")
    if not isinstance(key, str) or not isinstance(release, str) or ledger.entry(key, release) is None:
        return None
    return ledger.composed(key)


def model_name(ref: str) -> str:
    """How the adapter names its large model: an offline asset's or a hub id as given; a local folder by its
    name only (the adapter may travel; an absolute path says where things live on this machine)."""
    return Path(ref).name if Path(ref).exists() else ref


def virtual_tokens(model, tokenizer, prompt: torch.Tensor) -> tuple[torch.Tensor, int | None]:
    """The adapter's virtual tokens: [BOS embedding] + prompt where the tokenizer starts with BOS."""
    from engine.prompt import bos_id
    bos = bos_id(tokenizer)
    if bos is None:
        return prompt, None
    with torch.no_grad():
        embed = model.get_input_embeddings()
        first = embed(torch.tensor([bos], device=embed.weight.device)).float().cpu()
    return torch.cat([first, prompt], dim=0), bos


def _save_adapter(model, virtual: torch.Tensor, folder: Path, base: str | None = None) -> None:
    """PEFT writes its own format: a prompt-tuning adapter whose embedding is `virtual`, for the model named
    `base`. (Prompt tuning adds no layers: the model's weights are untouched, though PEFT marks them frozen.)"""
    from peft import PromptTuningConfig, TaskType, get_peft_model
    config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=int(virtual.shape[0]),
                                token_dim=int(virtual.shape[1]), base_model_name_or_path=base)
    own_name, own_config_name = model.name_or_path, getattr(model.config, "_name_or_path", "")
    # PEFT names the adapter's base (config and model card) after the model: the name we give, no local path
    model.name_or_path = model.config._name_or_path = base or ""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            peft_model = get_peft_model(model, config)
        with torch.no_grad():
            peft_model.prompt_encoder["default"].embedding.weight.copy_(virtual)
        # prompt tuning leaves the vocabulary alone: no embedding layers, and no hub lookup to find that out
        peft_model.save_pretrained(str(folder), save_embedding_layers=False)
    finally:
        model.name_or_path, model.config._name_or_path = own_name, own_config_name


def equivalence(model, tokenizer, adapter: Path, prompt: torch.Tensor, bos: int | None, template: str,
                fields: list[str]) -> dict:
    """Next-token logits through PEFT (the adapter as saved) against post's prompted forward, per fixed text."""
    from peft import PeftModel
    from engine.data.tasks import fill
    from engine.prompt import prompted_logits
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        loaded = PeftModel.from_pretrained(model, str(adapter))
    worst = 0.0
    try:
        with torch.no_grad():
            for text in CHECK_TEXTS:
                _, whole = fill(template, {f: text for f in fields}, fields)
                ids = torch.tensor([tokenizer(whole, add_special_tokens=False).input_ids])
                mask = torch.ones_like(ids)
                ours = prompted_logits(model, ids, mask, prompt, bos)
                theirs = loaded(input_ids=ids, attention_mask=mask).logits[:, -1].float()
                difference = (ours - theirs).abs().max().item()
                worst = max(worst, difference if math.isfinite(difference) else math.inf)  # NaN must not pass
    finally:
        del loaded
    return {"texts": len(CHECK_TEXTS), "max_abs_logit_difference": worst, "tolerance": TOLERANCE}
