"""Stage records: `<run>/<stage>/done.json`, written last by every stage.

The one definition of "done": a stage is done when its record says `completed` (or
`budget_stopped`: DP stopped where the privacy budget ends, so running again cannot take more
steps), its fingerprint matches the inputs of the run now, and every artifact it lists still
has the recorded sha256. Anything else reruns the stage, and `why_not_done` says why in one line.

The record is removed when a stage starts, so a crash mid-stage never leaves an old
"completed" next to half-written new artifacts.
"""
from __future__ import annotations

import hashlib
import json
import platform
import time
from pathlib import Path
from typing import Any

from engine import artifacts
from engine.artifacts import DamagedArtifact

RECORD = "done.json"
COMPLETED, CANCELLED, BUDGET_STOPPED, FAILED = "completed", "cancelled", "budget_stopped", "failed"
DONE_STATUSES = (COMPLETED, BUDGET_STOPPED)
INPUTS_CHANGED = "its inputs changed: "


def digest(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def describe() -> dict:
    from engine.machine import describe as here  # torch is imported there: not at this module's import
    return here()


def versions() -> dict[str, str]:
    import torch
    import transformers
    from importlib.metadata import PackageNotFoundError, version
    try:
        post = version("post")
    except PackageNotFoundError:
        post = "unknown"
    return {"post": post, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


def path_of(stage_dir: Path) -> Path:
    return Path(stage_dir) / RECORD


def clear(stage_dir: Path) -> None:
    path_of(stage_dir).unlink(missing_ok=True)


def write(stage_dir: Path, stage: str, status: str, inputs: dict, artifacts_: dict[str, Path],
          steps: int | None = None, seconds: float | None = None, **extra: Any) -> dict:
    """Write the record last (atomically); `artifacts_` maps a role to its file or folder."""
    record = {"stage": stage, "status": status, "fingerprint": digest(inputs), "inputs": inputs,
              "artifacts": {role: {"path": _relative(stage_dir, p), "sha256": artifacts.sha256_of(p)}
                            for role, p in artifacts_.items()},
              "steps": steps, "seconds": seconds, "versions": versions(), "machine": describe(),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
    artifacts.write_json(path_of(stage_dir), record)
    return record


def read(stage_dir: Path) -> dict | None:
    """The record, or None when there is none; a damaged record counts as none (the stage reruns)."""
    path = path_of(stage_dir)
    if not path.is_file():
        return None
    try:
        record = artifacts.read_json_dict(path, "stage record")
    except DamagedArtifact:
        return None
    return record if _well_formed(record) else None


def _well_formed(record: dict) -> bool:
    """The fields every reader of a record indexes have the kinds `write` gives them (an edited record with
    `inputs` a text or `artifacts` a list would stop a stage, eval or import in a traceback): else damaged."""
    listed = record.get("artifacts", {})
    return (isinstance(record.get("status"), str) and isinstance(record.get("inputs", {}), dict)
            and isinstance(listed, dict)
            and all(isinstance(e, dict) and isinstance(e.get("path", ""), str) and isinstance(e.get("sha256", ""), str)
                    for e in listed.values()))


def require_done(stage_dir: Path, then: str) -> dict:
    """The stage's record when it says done; else one line naming the stage's state and `then` (what to do)."""
    from engine.errors import PostError
    stage_dir = Path(stage_dir)
    record = read(stage_dir)
    if record is None or record.get("status") not in DONE_STATUSES:
        state = "has not run (or its record is damaged)" if record is None else f"was {record.get('status')}"
        raise PostError(f"the {stage_dir.name} stage in {stage_dir.parent} {state}: {then}")
    return record


def why_not_done(stage_dir: Path, inputs: dict) -> str | None:
    """None when the stage is done for these inputs; otherwise the reason it must run (one line)."""
    path = path_of(stage_dir)
    if not path.is_file():
        return "no record of a finished run"
    record = read(stage_dir)
    if record is None:
        return f"its record {path} is damaged"
    status = record.get("status")
    if status not in DONE_STATUSES:
        steps = record.get("steps")
        return f"it was {status}" + (f" after {steps} steps" if steps is not None else "")
    if record.get("fingerprint") != digest(inputs):
        changed = changed_inputs(record.get("inputs") or {}, inputs)
        return INPUTS_CHANGED + (", ".join(changed) if changed else "fingerprint differs")
    return artifacts_changed(stage_dir, record)


def artifacts_changed(stage_dir: Path, record: dict) -> str | None:
    """None when every file the record lists is there with its recorded sha256; else which is not (one line)."""
    for role, entry in (record.get("artifacts") or {}).items():  # its shape checked where it is read (read)
        file = Path(stage_dir) / entry.get("path", "")  # relative inside the run folder (it may be moved)
        if not file.exists():
            return f"its {role} {file} is missing"
        if not _matches(file, entry.get("sha256")):
            return f"its {role} {file} does not match the recorded sha256 (damaged or edited)"
    return None


def _matches(file: Path, sha256: str | None) -> bool:
    if artifacts.sha256_of(file) == sha256:
        return True
    # A student folder recorded by an earlier post, since wrapped into a kit in place by a later run:
    # the same files one level down, so the same tree digest there.
    from engine import kit
    return file.is_dir() and kit.is_kit(file) and artifacts.sha256_of(kit.student_files(file)) == sha256


def _relative(stage_dir: Path, path: Path) -> str:
    """Inside the run folder: relative to the stage folder, so a copied or moved run stays valid;
    outside (a cached student): absolute."""
    try:
        return "../" + Path(path).resolve().relative_to(Path(stage_dir).resolve().parent).as_posix()
    except ValueError:
        return str(Path(path).resolve())


def changed_inputs(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two input dicts (for the one-line reason)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b, name = old.get(key), new.get(key), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_inputs(a, b, name + ".")
        elif a != b:
            out.append(name)
    return out
