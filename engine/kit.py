"""The student kit (model owner → user): the student's weights and tokenizer, the teacher's
identity and the blocks kept — nothing else.

    KIT/manifest.json     kind "post-student-kit", every file's sha256 and role, teacher identity
    KIT/student/…         config.json, model.safetensors, tokenizer files (save_pretrained)

The user sets `models.kit = "KIT"`: the kit is checked against its manifest before the student
loads, and its fingerprint goes into the tune stage's record and the prompt package, so the
owner can refuse a package made for another kit.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from engine import artifacts, manifest
from engine.errors import PostError

KIND = "post-student-kit"


def build(config, out: Path, bus=None, cancel=None) -> dict:
    """Distil (or reuse the cached) student for `config` and write it as a kit at `out`."""
    from engine.pipeline import run
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise PostError(f"{out} already exists and is not empty: give a new folder for the kit")
    if config.models.small or config.models.kit:
        raise PostError("post kit build distils a student from models.large: unset models.small / models.kit")
    scratch = Path(tempfile.mkdtemp(prefix=".kit-run-", dir=out.parent if out.parent.exists() else None))
    try:
        run(config, bus=bus, out=scratch, cancel=cancel, stages=["distill"])
        record = artifacts.read_json_dict(scratch / "distill" / "student.json", "student record")
        summary = artifacts.read_json_dict(scratch / "distill" / "summary.json", "distill summary")
        identity = summary.get("teacher") or {}
        with artifacts.atomic_dir(out) as temp:
            shutil.copytree(record["path"], temp / "student")
            roles = {str(p.relative_to(temp)): "student weights" if p.suffix == ".safetensors" else "student config / tokenizer"
                     for p in (temp / "student").rglob("*") if p.is_file()}
            written = manifest.write(temp, KIND, roles, teacher=config.models.large, teacher_identity=identity,
                                     blocks=summary.get("blocks"), student_key=record.get("key"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return written


def verify(folder: Path) -> dict:
    return manifest.verify(folder, KIND)


def student_folder(folder: Path) -> Path:
    return Path(folder) / "student"


def fingerprint_of(folder: Path) -> str:
    return manifest.fingerprint(verify(folder))
