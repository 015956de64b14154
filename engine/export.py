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
from engine.errors import PostError

INFO = "post_export.json"
# Fixed, public inputs for the check: sentences of no data set, filled into the task's template.
CHECK_TEXTS = ("A short sentence about nothing in particular.",
               "The weather report said rain, then sun, then rain again for the rest of the week.")
# Largest |logit difference| accepted between PEFT's forward and post's. Both run the same float32 model on
# the same embeddings; they differ only in how the attention mask and positions are passed, so only the
# order of float operations differs (measured ≈ 1e-5 on the tiny and real models).
TOLERANCE = 1e-3


def source(run_dir: Path, method: str) -> tuple[Path, str]:
    """The prompt file of `method` in a finished run, checked against its stage record; and the stage."""
    if method not in methods.EXPORTABLE:
        raise PostError(f"{method!r} has no prompt for the large model to export: choose one of "
                        f"{', '.join(methods.EXPORTABLE)}")
    stage = methods.METHODS[method].prompt_stage
    name = "prompt" if stage in ("tune", "full_pt") else method
    if method == "post":
        name = _selected(run_dir)
    record = records.read(run_dir / stage)
    if record is None or record.get("status") not in records.DONE_STATUSES:
        state = "has not run" if record is None else f"was {record.get('status')}"
        raise PostError(f"the {stage} stage in {run_dir} {state}: finish it (post run --resume {run_dir}) "
                        f"before exporting {method}")
    path = run_dir / stage / f"{name}.safetensors"
    listed = next((entry for entry in (record.get("artifacts") or {}).values()
                   if isinstance(entry, dict) and (run_dir / stage / str(entry.get("path"))).resolve() == path.resolve()),
                  None)
    if not path.is_file() or listed is None:
        how = "set eval.full_pt = true" if stage == "full_pt" else f"add {method} to transfer.methods"
        raise PostError(f"{run_dir} has no {method} prompt ({path.relative_to(run_dir)}): its {stage} stage did not "
                        f"train it ({how} and resume the run)")
    if artifacts.sha256_file(path) != listed.get("sha256"):
        raise PostError(f"{path} is not the prompt its {stage} stage recorded (changed since): resume the run so "
                        f"the stage runs again")
    return path, stage


def _selected(run_dir: Path) -> str:
    """POST's prompt: transfer/post, or under transfer.alpha = "select" the candidate the user's eval chose."""
    from engine.config import read_toml, validate
    cfg = validate(read_toml(run_dir / "config.toml"))
    if cfg.transfer.alpha != "select":
        return "post"
    choice = run_dir / "eval" / "alpha.json"
    eval_record = records.read(run_dir / "eval")
    if not choice.is_file() or eval_record is None or eval_record.get("status") not in records.DONE_STATUSES:
        raise PostError(f"{run_dir} chooses α on validation (transfer.alpha = \"select\") and its eval has not chosen "
                        f"yet: finish the run (post eval {run_dir}), or export a candidate by name: --method output "
                        "(α = 0) or shift (α = 1)")
    chosen = artifacts.read_json_dict(choice, "α choice").get("method")
    if chosen not in methods.SELECT_CANDIDATES:
        raise PostError(f"{choice}: damaged α choice (method {chosen!r}): run post eval {run_dir} again")
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
    path, stage = source(run_dir, method)
    cfg = validate(read_toml(run_dir / "config.toml"))
    if model is None:
        from engine import models
        model, tokenizer = models.load(cfg.models.large, cfg.runtime.seed, cfg.models.trust_remote_code)
    prompt = SoftPrompt.load(path).weight.detach().float()
    width = model.get_input_embeddings().weight.shape[-1]
    if prompt.shape[-1] != width:
        raise PostError(f"the {method} prompt is {prompt.shape[-1]} wide and {cfg.models.large}'s embeddings {width}: "
                        "it runs on the student, not the large model")
    virtual, bos = virtual_tokens(model, tokenizer, prompt)
    with artifacts.atomic_dir(out) as temp:
        _save_adapter(model, virtual, temp)
        check = equivalence(model, tokenizer, temp, prompt, bos, cfg.task.template, cfg.task.text_fields)
        if check["max_abs_logit_difference"] > TOLERANCE:
            raise PostError(f"PEFT runs this prompt differently from post on {cfg.models.large} (logits differ by up "
                            f"to {check['max_abs_logit_difference']:.2g}): nothing exported")
        # no paths: the adapter may travel, and a folder's name can say what the private data is
        info = {"method": method, "label": methods.label(method), "prompt": str(path.relative_to(run_dir)), "prompt_sha256": artifacts.sha256_file(path),
                "large_model": cfg.models.large, "prompt_length": int(prompt.shape[0]),
                "num_virtual_tokens": int(virtual.shape[0]), "bos_is_first_virtual_token": bos is not None,
                "tokenize": ("tokenizer(text, add_special_tokens=False): the adapter's first virtual token is the "
                             "BOS embedding" if bos is not None else "tokenizer(text) as usual (no BOS)"),
                "template": cfg.task.template, "label_words": cfg.task.label_words,
                "privacy": privacy(run_dir, stage), "check": check}
        artifacts.write_json(temp / INFO, info)
    return info


def privacy(run_dir: Path, stage: str) -> dict:
    """ε of the private training the prompt comes from: full PT's own, else the user's tune (which every
    transferred prompt and Direct derive from). Without a certificate the prompt is not private."""
    origin = "full_pt" if stage == "full_pt" else "tune"
    places = [run_dir / "full_pt" / "privacy.json"] if origin == "full_pt" else \
        [run_dir / "tune" / "privacy.json", run_dir / "package" / "privacy.json"]  # the owner's: the package received
    found = [path for path in places if path.is_file()]
    if not found:
        return {"private": False, "from": origin}
    cert = artifacts.read_json_dict(found[0], "privacy certificate")
    return {"private": True, "from": origin, "certificate": str(found[0].relative_to(run_dir)),
            **{k: cert.get(k) for k in ("epsilon", "delta", "accountant")}}


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


def _save_adapter(model, virtual: torch.Tensor, folder: Path) -> None:
    """PEFT writes its own format: a prompt-tuning adapter whose embedding is `virtual`. (Prompt tuning adds
    no layers to the model: its weights are untouched, and the command's process ends after the export.)"""
    from peft import PromptTuningConfig, TaskType, get_peft_model
    config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=int(virtual.shape[0]),
                                token_dim=int(virtual.shape[1]),
                                base_model_name_or_path=getattr(model, "name_or_path", None) or None)
    with warnings.catch_warnings():  # PEFT names the folder the model was loaded from, as it should: not news
        warnings.filterwarnings("ignore", message=".*base_model_name_or_path.*")
        warnings.filterwarnings("ignore", category=FutureWarning)
        peft_model = get_peft_model(model, config)
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.copy_(virtual)
    peft_model.save_pretrained(str(folder))


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
