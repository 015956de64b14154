"""The two-party flow: what each side runs with the artifacts that cross between them.

    owner:  post kit build --preset P --out KIT                       → KIT (engine.kit)
    user:   post tune --preset P --set models.kit=KIT --out RUN       (private data stays here)
    user:   post package RUN --out PKG                                → PKG (engine.package)
    owner:  post transfer --kit KIT --package PKG --out OWNER --preset P   (public data only)
    user:   post eval RUN --from OWNER                                (the owner's prompts, scored locally)

The owner's run folder is made from the kit, the package (kept as received in `package/`, which
the transfer reads — as the one-machine `post run` does with the package its tune stage writes)
and the owner's own config (large model, public data, transfer settings); its task section holds
only the package's task card, its `task.source` is "withheld": no private path, label, loss or
accuracy can be written there.
"""
from __future__ import annotations

import json
from pathlib import Path

from engine import artifacts, fingerprints, kit, manifest, package, records
from engine.errors import PostError
from engine.runlock import RunLock

WITHHELD = "withheld"


def owner_config(config, kit_dir: Path, card: dict):
    """The owner's config with the student from the kit and the task from the card, nothing private."""
    from engine.config import validate
    data = json.loads(config.model_dump_json())
    data["models"].update(kit=str(Path(kit_dir).resolve()), small="")
    data["distill"]["align"] = False  # the kit is the student, however it was made
    task = {"source": WITHHELD, **{k: card[k] for k in package.CARD_FIELDS}}
    data["task"] = task
    data["tune"]["prompt_length"] = card["prompt_length"]
    data["privacy"] = {}
    data["eval"]["full_pt"] = False
    try:
        return validate(data)
    except PostError as err:  # the card's task settings are the package's, not the owner's config
        if not any(f"task.{k}" in str(err) for k in package.CARD_FIELDS) and "prompt_length" not in str(err):
            raise
        raise PostError(f"the package's task_card.json does not hold a valid task ({err}): ask the user for the "
                        "package again (post package RUN)") from None


def users_folder(run_dir: Path) -> bool:
    """A user's run folder: its tune record keys private data, or it holds the note tune writes. By what the
    folder holds — not by a --set task.source, nor by a note alone, which a user may delete."""
    from engine.tune import PRIVATE_NOTE
    run_dir = Path(run_dir)
    record = records.read(run_dir / "tune") or {}
    return (run_dir / PRIVATE_NOTE).exists() or "data" in (record.get("inputs") or {})


def owner_transfer(config, kit_dir: Path, package_dir: Path, out: Path, bus=None, cancel=None) -> None:
    """Transfer a user's package to the large model in the owner's own folder (public data only)."""
    found = package.verify(package_dir, kit.fingerprint_of(kit_dir))
    if config.transfer.alpha == "auto" and package.CHOICE not in found["files"]:
        raise PostError("transfer.alpha = \"auto\" is chosen by the user on their validation split, and this package "
                        "carries no choice: give a number, or \"select\" (the user picks among the candidates)")
    card = artifacts.read_json_dict(Path(package_dir) / "task_card.json", "task card")
    _check_prompt_width(package_dir, kit_dir)
    cfg = owner_config(config, kit_dir, card)
    out = Path(out)
    if users_folder(out):  # the owner's transfer would overwrite its tune record and train unchecked
        raise PostError(f"{out} is a user's run folder (its prompt was tuned there on private data): give the "
                        "owner's transfer its own --out folder")
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out):  # the package and the tune record below are written into the folder too
        _receive_and_transfer(cfg, found, package_dir, out, bus, cancel)


def _check_prompt_width(package_dir: Path, kit_dir: Path) -> None:
    """The package's prompt is as wide as the kit's student embeddings (checked before the owner's folder is made)."""
    from engine.models import hidden_size
    _, width = package.prompt_shape(package_dir)
    expected = hidden_size(str(kit.student_folder(kit_dir)))
    if expected is not None and width != expected:
        raise PostError(f"{package_dir}: its prompt is {width} wide but the student kit {kit_dir} embeds in {expected}: "
                        "the prompt was not tuned on this kit; ask the user for the package of a tune on it")


def _receive_and_transfer(cfg, found: dict, package_dir: Path, out: Path, bus, cancel) -> None:
    from engine.pipeline import run
    target = out / "package"
    if (target / "manifest.json").is_file() and artifacts.sha256_file(target / "manifest.json") != \
            artifacts.sha256_file(Path(package_dir) / "manifest.json"):
        raise PostError(f"{out} holds the transfer of another package: give a new --out folder")
    with artifacts.atomic_dir(target) as temp:  # the package as received: the transfer reads it from here
        for name in [*found["files"], manifest.MANIFEST]:
            artifacts.copy_file(Path(package_dir) / name, temp / name)
    records.write(out / "tune", "tune", records.COMPLETED, {"package": manifest.fingerprint(found)},
                  {"package": target / "manifest.json"})
    run(cfg, bus=bus, out=out, cancel=cancel, stages=["transfer"], resume=True)


IMPORTED_FROM = "imported_from"  # in a transfer record brought in from the owner's folder


def import_transfer(run_dir: Path, owner_dir: Path, full_pt: bool = False, large: str | None = None) -> list[str]:
    """Copy the owner's finished transfer prompts into the user's run, checked to be of this run's prompt and
    (given `large`, the eval's models.large) of the large model the eval scores them on; `full_pt`: the eval
    that follows scores full PT, so its stage must be finished first."""
    run_dir, owner_dir = Path(run_dir), Path(owner_dir)
    with RunLock(run_dir):
        return _import_transfer(run_dir, owner_dir, full_pt, large)


def _check_rest_of_eval(run_dir: Path, owner_dir: Path, full_pt: bool) -> None:
    """What eval needs besides the owner's transfer (full PT, when the eval scores it) is finished."""
    if full_pt:
        records.require_done(run_dir / "full_pt", f"eval scores full PT: run post full-pt {run_dir} first (or set "
                             f"eval.full_pt = false); nothing was imported from {owner_dir}")


def _listed_files(stage_dir: Path, record: dict) -> list[tuple[Path, str]]:
    """The prompt and summary files a stage record lists in its own folder, each with its recorded sha256."""
    found = []
    for entry in (record.get("artifacts") or {}).values():
        path = Path(stage_dir) / entry.get("path", "")
        if path.suffix in (".safetensors", ".json") and path.resolve().parent == Path(stage_dir).resolve():
            found.append((path.resolve(), entry.get("sha256")))
    return sorted(found)


def _clear_for_import(target: Path, names: set[str]) -> None:
    """The run's own transfer folder before an import: its record goes first (an import cut short leaves a stage
    that is not done), then any prompt or summary the imported record will not list (an earlier transfer's
    prompt left beside the owner's would be scored as if it were theirs)."""
    records.clear(target)
    if target.is_dir():
        for path in target.iterdir():
            if path.suffix in (".safetensors", ".json") and path.name not in names:
                path.unlink()


def _import_transfer(run_dir: Path, owner_dir: Path, full_pt: bool, large: str | None) -> list[str]:
    record = records.read(owner_dir / "transfer")
    if record is None or record.get("status") not in records.DONE_STATUSES:
        raise PostError(f"{owner_dir} has no finished transfer (transfer/done.json missing, damaged or not done): the "
                        "owner runs post transfer first, or sends the folder as its transfer left it")
    other = None if large is None else fingerprints.trained_on_another_large(large, record.get("inputs") or {})
    if other is not None:
        raise PostError(f"{owner_dir}'s prompts were trained on the large model {other}, not on this run's "
                        f"models.large = {large!r}, which eval scores them on: set models.large to the owner's model; "
                        f"nothing was imported")
    from engine.prompt import tensor_hash
    ours = tensor_hash(run_dir / "tune" / "prompt.safetensors")
    theirs = (record.get("inputs") or {}).get("small_prompt")
    if theirs != ours:
        raise PostError(f"{owner_dir} transferred another prompt ({theirs}), not this run's tuned prompt ({ours}): "
                        "send the owner the package of this run")
    changed = records.artifacts_changed(owner_dir / "transfer", record)
    if changed is not None:  # the owner's files as its record made them, or nothing lands here
        raise PostError(f"{owner_dir}'s transfer is not what its record says: {changed} — ask the owner for the "
                        "folder as its transfer left it; nothing was imported")
    _check_rest_of_eval(run_dir, owner_dir, full_pt)  # before copying: a refused import leaves the run as it was
    copied = []
    source, target = owner_dir / "transfer", run_dir / "transfer"
    listed = _listed_files(source, record)
    _clear_for_import(target, {path.name for path, _ in listed})
    for path, sha256 in listed:  # only what the record vouches for: a file left by an
        artifacts.copy_file(path, target / path.name)    # earlier transfer of the owner's is not this one's
        if artifacts.sha256_of(target / path.name) != sha256:  # changed while it was copied
            raise PostError(f"{path} changed while it was imported: ask the owner for the folder as its transfer "
                            "left it, then run the import again")
        copied.append(path.name)
    # last: the stage is done once it lands; marked as the owner's, so a later `post eval` checks its files and
    # prompt (its inputs are the owner's settings, not this run's config)
    artifacts.write_json(target / records.RECORD, {**record, IMPORTED_FROM: str(owner_dir.resolve())})
    return copied
