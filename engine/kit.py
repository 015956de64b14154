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
    """Distil (or reuse the cached) student for `config` and copy its kit to `out`.

    The distill stage writes every student as a kit (`write`), so the one-machine `post run` and
    the user of a kit built here tune the very same artifact, checked by the same manifest."""
    from engine.pipeline import run
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise PostError(f"{out} already exists and is not empty: give a new folder for the kit")
    if not config.distills:
        raise PostError("post kit build distils a student (from models.large's blocks, or models.small with "
                        "distill.align = true): unset models.kit, and models.small unless it is aligned")
    scratch = Path(tempfile.mkdtemp(prefix=".kit-run-", dir=out.parent if out.parent.exists() else None))
    try:
        run(config, bus=bus, out=scratch, cancel=cancel, stages=["distill"])
        record = artifacts.read_json_dict(scratch / "distill" / "student.json", "student record")
        source = Path(record.get("kit") or "")
        verify(source)
        with artifacts.atomic_dir(out) as temp:  # files fsynced, the folder renamed into place whole
            shutil.copytree(source, temp, dirs_exist_ok=True)
        return verify(out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write(folder: Path, model, tokenizer, teacher: str, identity: dict, blocks: list[int], key: str) -> dict:
    """Save a freshly distilled student as a kit at `folder`, atomically (the manifest last)."""
    with artifacts.atomic_dir(folder) as temp:
        model.save_pretrained(temp / "student")
        tokenizer.save_pretrained(temp / "student")
        return _write_manifest(temp, teacher, identity, blocks, key)


def adopt(folder: Path, teacher: str, identity: dict, blocks: list[int], key: str) -> dict:
    """Wrap a student folder cached by an earlier post (save_pretrained files at its top) into a kit."""
    folder = Path(folder)
    with artifacts.atomic_dir(folder) as temp:
        shutil.copytree(folder, temp / "student")
        return _write_manifest(temp, teacher, identity, blocks, key)


def _write_manifest(temp: Path, teacher: str, identity: dict, blocks, key: str) -> dict:
    roles = {str(p.relative_to(temp)): "student weights" if p.suffix == ".safetensors" else "student config / tokenizer"
             for p in (temp / "student").rglob("*") if p.is_file()}
    return manifest.write(temp, KIND, roles, teacher=teacher, teacher_identity=identity, blocks=blocks, student_key=key)


def is_kit(folder: Path) -> bool:
    return (Path(folder) / manifest.MANIFEST).is_file()


def verify(folder: Path) -> dict:
    return manifest.verify(folder, KIND)


def student_folder(folder: Path) -> Path:
    return Path(folder) / "student"


def student_files(folder: Path) -> Path:
    """Where a recorded student's files are: in `student/` once the folder is a kit — also a folder an
    earlier post recorded and a later run wrapped into a kit in place (adopt) — else the folder itself."""
    return student_folder(folder) if is_kit(folder) else Path(folder)


def fingerprint_of(folder: Path) -> str:
    return manifest.fingerprint(verify(folder))
