"""The prompt package (user → model owner): what crosses the boundary after tuning, and nothing else.

    PKG/manifest.json       kind "post-prompt-package", every file's sha256 and role, the kit's
                            fingerprint, whether DP was used and its ε, the day it was made
    PKG/prompt.safetensors  the tuned prompt tensor, no metadata
    PKG/task_card.json      what the transfer needs and the user chooses to share: template, text
                            fields, label words, prompt length and the sentence that initialised it
    PKG/choice.json         optional, without DP only: α the user chose on their validation split
    PKG/privacy.json        with DP: the certificate (accountant, δ, ε, σ, q, steps, history, C, N)

An allow-list, not a filter: each file is written from named fields. No losses, accuracies,
paths, data names, ledger keys or times finer than a day. Under DP nothing else computed from
the private data is inside: the prompt is the noised output, the certificate its accounting.
"""
from __future__ import annotations

from pathlib import Path

from engine import artifacts, manifest, records
from engine.errors import PostError

KIND = "post-prompt-package"
CHOICE = "choice.json"
CARD_FIELDS = ("template", "text_fields", "label_words", "prompt_init")
CERTIFICATE_FIELDS = ("accountant", "delta", "epsilon", "target_epsilon", "clip", "n_examples", "sample_rate",
                      "noise_multiplier", "sampling", "steps", "history", "versions")
MEANING = {
    "prompt.safetensors": "the soft prompt tuned on the student (length × width floats); with DP, the noised result",
    "task_card.json": "how inputs are written and scored: template, text fields, label words per class, prompt length, "
                      "the sentence whose embeddings initialised the prompt",
    "choice.json": "α for the transfer, chosen by the user on their validation split (\"auto\"): one number "
                   "computed from private data, outside ε; never present with DP",
    "privacy.json": "the DP certificate: ε at δ from Opacus' accountant over the (σ, q, steps) history, clip C, "
                    "training-set size N (needed to check δ ≤ 1/N)",
}


def package_prompt_bytes(prompt_path: Path) -> bytes:
    """The prompt as a package holds it: the tensor alone, no metadata (its shape is in the header)."""
    from safetensors.torch import save
    from engine.prompt import SoftPrompt
    return save({"prompt": SoftPrompt.load(prompt_path).weight.detach().float().contiguous()})


def build(run_dir: Path, out: Path, replace: bool = False) -> dict:
    """Write the package of a user's finished tune stage (`replace`: the run folder's own package/)."""
    run_dir, out = Path(run_dir), Path(out)
    if not (run_dir / "config.toml").is_file():
        raise PostError(f"{run_dir} is not a run folder (no config.toml): give the folder post tune wrote")
    record = records.require_done(run_dir / "tune", f"finish it (post tune {run_dir}) before packaging")
    _check_tuned(run_dir, record)
    if out.exists() and any(out.iterdir()) and not replace:
        raise PostError(f"{out} already exists and is not empty: give a new folder for the package")
    student = (record.get("inputs") or {}).get("student") or {}
    kit = student.get("kit") or student.get("key")
    card = _card(record)
    certificate = run_dir / "tune" / "privacy.json"
    with artifacts.atomic_dir(out) as temp:
        artifacts.write_bytes(temp / "prompt.safetensors", package_prompt_bytes(run_dir / "tune" / "prompt.safetensors"))
        artifacts.write_json(temp / "task_card.json", card)
        roles = {"prompt.safetensors": "soft prompt", "task_card.json": "task card"}
        epsilon = None
        if certificate.is_file():
            cert = artifacts.read_json_dict(certificate, "privacy certificate")
            artifacts.write_json(temp / "privacy.json", {k: cert[k] for k in CERTIFICATE_FIELDS if k in cert})
            roles["privacy.json"] = "privacy certificate"
            epsilon = cert.get("epsilon")
        choice = run_dir / "package" / CHOICE  # the user's α choice travels with the prompt it was made for
        if choice.is_file() and out != run_dir / "package":  # rebuilt in place: without it
            artifacts.write_json(temp / CHOICE, _choice_fields(artifacts.read_json_dict(choice, "α choice")))
            roles[CHOICE] = "α choice"
        written = manifest.write(temp, KIND, roles, kit=kit, dp=certificate.is_file(), epsilon=epsilon)
    return written


def _card(record: dict) -> dict:
    """The task card of the prompt as it was tuned: the tune record's settings, not config.toml's (a later
    `--set` rewrites config.toml; the owner must write inputs as the prompt was trained to read them)."""
    inputs = record.get("inputs") or {}
    task, tune = inputs.get("task"), inputs.get("tune")
    if not isinstance(task, dict) or not isinstance(tune, dict) or any(f not in task for f in CARD_FIELDS) \
            or "prompt_length" not in tune:
        raise PostError("the tune record does not say which settings its prompt was tuned with: run post run "
                        "--resume on the run folder (it tunes again), then package")
    return {**{f: task[f] for f in CARD_FIELDS}, "prompt_length": tune["prompt_length"]}


def _check_tuned(run_dir: Path, record: dict) -> None:
    """What is packaged is what the tune wrote: the prompt and certificate its record lists, unchanged,
    and a certificate whose ε the accountant gives again — else a prompt could travel with the ε of
    another, or with none."""
    from engine.privacy.certificate import verify_certificate
    tune = run_dir / "tune"
    again = f"tune again (post tune {run_dir}) before packaging"
    changed = records.artifacts_changed(tune, record)
    if changed:
        raise PostError(f"the tune stage in {run_dir}: {changed}: {again}")
    certified = "certificate" in (record.get("artifacts") or {})
    if (tune / "privacy.json").is_file() and not certified:
        raise PostError(f"{tune / 'privacy.json'} is not the certificate the tune wrote (its record lists none): {again}")
    if certified:
        verify_certificate(tune / "privacy.json")


def _check_choice(folder: Path, choice: dict) -> None:
    """α as the transfer will use it: a number in [0, 1] with the rule that chose it, or a one-line refusal."""
    import math
    alpha = choice.get("alpha")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) \
            or not 0.0 <= alpha <= 1.0 or not isinstance(choice.get("rule"), str):
        raise PostError(f"{folder}/{CHOICE} must hold an alpha in [0, 1] and its rule, not {choice!r}: "
                        "ask the user for the package again")


def _choice_fields(choice: dict) -> dict:
    return {"alpha": float(choice["alpha"]), "rule": str(choice["rule"])}


def add_choice(folder: Path, choice: dict) -> dict:
    """The package again, with the user's α choice in it (the manifest rewritten last)."""
    found = verify(folder)
    if found.get("dp"):
        raise PostError(f"{folder} holds a differentially private prompt: an α chosen on private validation data "
                        "is not covered by ε, so it is not added; set transfer.alpha to a number")
    fields = {k: v for k, v in found.items() if k not in ("kind", "format", "files", "versions", "created")}
    with artifacts.atomic_dir(folder) as temp:
        roles = {}
        for name, entry in found["files"].items():
            artifacts.copy_file(Path(folder) / name, temp / name)
            roles[name] = entry["role"]
        artifacts.write_json(temp / CHOICE, _choice_fields(choice))
        roles[CHOICE] = "α choice"
        return manifest.write(temp, KIND, roles, **fields)


def verify(folder: Path, kit_fingerprint: str | None = None) -> dict:
    """The package's manifest after checking files, certificate and (if given) that it was made for this kit."""
    from engine.privacy import verify_certificate
    found = manifest.verify(folder, KIND)
    if kit_fingerprint is not None and found.get("kit") != kit_fingerprint:
        raise PostError(f"{folder} was made for another student kit ({found.get('kit')}), not this one "
                        f"({kit_fingerprint}): the user must tune with the kit the transfer uses")
    if found.get("dp") and "privacy.json" not in found["files"]:
        raise PostError(f"{folder}: the manifest says DP but the package has no privacy.json")
    if "privacy.json" in found["files"]:
        checked = verify_certificate(Path(folder) / "privacy.json")
        # the manifest's ε is what `inspect` and the owner see first: it must be the certificate's, never less
        if found.get("dp") is not True or not _same_epsilon(found.get("epsilon"), checked["recorded"]):
            raise PostError(f"{folder}: the manifest says dp={found.get('dp')!r}, ε={found.get('epsilon')!r} but its "
                            f"certificate records ε={checked['recorded']!r}: the package was edited; make it again "
                            "with post package")
        if CHOICE in found["files"]:
            raise PostError(f"{folder} holds a DP prompt and an α chosen on private data, which ε does not cover: "
                            "the package is refused; make it again without the choice")
    if CHOICE in found["files"]:
        _check_choice(folder, artifacts.read_json_dict(Path(folder) / CHOICE, "α choice"))
    card = artifacts.read_json_dict(Path(folder) / "task_card.json", "task card")
    missing = [f for f in (*CARD_FIELDS, "prompt_length") if f not in card]
    if missing:
        raise PostError(f"{folder}/task_card.json lacks {', '.join(missing)}: the package is damaged")
    rows, _ = prompt_shape(folder)
    if card["prompt_length"] != rows:  # the owner's large prompt would get the card's length, not the tuned one's
        raise PostError(f"{folder}: task_card.json says prompt_length = {card['prompt_length']!r} but prompt.safetensors "
                        f"holds {rows} vectors: the package was edited; make it again with post package")
    return found


def prompt_shape(folder: Path) -> tuple[int, int]:
    """(vectors, width) of the package's prompt, refused here — before the owner writes anything — when the file
    is no prompt (the run-folder words of SoftPrompt.load, "resume the run", do not fit a received package)."""
    from safetensors.torch import load_file
    from engine.prompt import not_a_prompt
    path = Path(folder) / "prompt.safetensors"
    try:
        weight = load_file(str(path)).get("prompt")
    except Exception as err:  # not a safetensors file
        problem = f"not a safetensors file: {type(err).__name__}"
    else:
        problem = "no tensor named 'prompt'" if weight is None else not_a_prompt(weight)
    if problem:
        raise PostError(f"{folder}: prompt.safetensors does not hold a prompt ({problem}): ask whoever sent it for the "
                        "prompt package again")
    return weight.shape[0], weight.shape[1]


def _same_epsilon(manifest_value, certificate_value) -> bool:
    numbers = [v for v in (manifest_value, certificate_value) if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return len(numbers) == 2 and numbers[0] == numbers[1]


def inspect(folder: Path) -> list[str]:
    """Every file and field of a package, with what it means (for `post package inspect`)."""
    found = verify(folder)
    lines = [f"{folder}: a prompt package made {found['created']} by post {found['versions'].get('post')}",
             f"  for the student kit {found.get('kit')}; "
             + (f"differentially private, ε = {found['epsilon']:.4g}" if found.get("dp") else "NOT differentially private")]
    for name, entry in found["files"].items():
        lines.append(f"  {name}  ({entry['bytes']} bytes, sha256 {entry['sha256'][:16]}…): {MEANING.get(name, entry['role'])}")
    card = artifacts.read_json_dict(Path(folder) / "task_card.json", "task card")
    for key, value in card.items():
        lines.append(f"    task_card.{key} = {value!r}")
    if CHOICE in found["files"]:
        for key, value in artifacts.read_json_dict(Path(folder) / CHOICE, "α choice").items():
            lines.append(f"    choice.{key} = {value!r}")
    if "privacy.json" in found["files"]:
        cert = artifacts.read_json_dict(Path(folder) / "privacy.json", "privacy certificate")
        for key in CERTIFICATE_FIELDS:
            lines.append(f"    privacy.{key} = {cert.get(key)!r}")
    return lines
