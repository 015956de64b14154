"""One way to write an artifact: a temp file in the same folder, fsync, `os.replace`.

A reader (or a resumed run after `kill -9`) sees either the old file or the complete new one,
never a torn one. Temp files carry TEMP_MARK and the writer's pid, so the next run removes
those whose writer is gone (`clean_stale`). Reading a damaged JSON artifact raises
`DamagedArtifact` (a PostError) naming the file, never a raw JSONDecodeError.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

from engine.errors import TEMP_MARK, PostError



class DamagedArtifact(PostError):
    """An artifact exists but cannot be read (truncated, not JSON, wrong shape)."""


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # some file systems refuse to open a folder; the data is synced anyway
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_with(path: Path, write: Callable[[Path], None]) -> Path:
    """Let `write(temp)` create the file, then fsync and move it into place atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_path(path)
    try:
        write(temp)
        with open(temp, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    return write_with(path, lambda temp: temp.write_bytes(data))


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def save_tensors(path: Path, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save_file
    return write_with(path, lambda temp: save_file(tensors, str(temp), metadata=metadata))


def torch_save(path: Path, obj: Any) -> Path:
    import torch
    return write_with(path, lambda temp: torch.save(obj, temp))


def copy_file(source: Path, path: Path) -> Path:
    return write_with(path, lambda temp: shutil.copyfile(source, temp))


def fsync_tree(folder: Path) -> None:
    """Every file under `folder` on disk (before a rename or a marker file says the folder is whole)."""
    for file in Path(folder).rglob("*"):
        if file.is_file():
            with open(file, "rb+") as stream:
                os.fsync(stream.fileno())


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temp folder beside `final`; on success it replaces `final` whole (files fsynced)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}{TEMP_MARK}*"):  # a killed writer's (an --out outside a run
        if not _writer_alive(stale.name):                          # folder, which no run's clean_stale visits)
            _restore_or_remove(stale)
    temp = _temp_path(final)
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir()
    try:
        yield temp
        fsync_tree(temp)
        if final.exists():
            old = _temp_path(final)
            old = old.with_name(old.name + PREVIOUS)
            os.replace(final, old)  # a crash between these two renames leaves no `final`: the next writer or
            os.replace(temp, final)  # clean_stale puts the old one back (_restore_or_remove)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temp, final)
        _fsync_dir(final.parent)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def read_json(path: Path, what: str = "artifact") -> Any:
    """The parsed JSON of `path`; DamagedArtifact (one line) if it is missing, truncated or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DamagedArtifact(f"{path}: {what} not found") from None
    except (PermissionError, IsADirectoryError) as err:  # there, but not readable: nothing to run again
        raise PostError(f"cannot read {path} ({what}): {err.strerror.lower() if err.strerror else err} — make it "
                        "readable for this user (chmod u+r), or restore it if it should be a file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DamagedArtifact(f"{path}: damaged {what} ({type(err).__name__}: {err}); "
                              "delete it and resume, the stage that wrote it runs again") from None


def read_kept_list(path: Path, key: str, field: str, item_type: type, what: str) -> list | None:
    """`field` of a kept JSON record when the file is whole, made for `key`, and a list of `item_type`;
    None otherwise (the caller makes it again): a cache or a resumed stage's own record."""
    if not path.is_file():
        return None
    try:
        saved = read_json_dict(path, what)
    except DamagedArtifact:
        return None
    items = saved.get(field)
    if saved.get("key") != key or not isinstance(items, list) or not all(isinstance(i, item_type) for i in items):
        return None
    return items


def read_json_dict(path: Path, what: str = "artifact") -> dict:
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise DamagedArtifact(f"{path}: damaged {what} (expected a JSON object, found {type(data).__name__})")
    return data


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_tree(folder: Path) -> str:
    """One digest of every file in a folder (relative names and contents)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(folder)).encode())
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    path = Path(path)
    return sha256_tree(path) if path.is_dir() else sha256_file(path)


def _writer_alive(name: str) -> bool:
    try:
        pid = int(name.split(TEMP_MARK, 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return False
    return pid_alive(pid)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (another user's counts as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


PREVIOUS = "-previous"  # a folder atomic_dir moved aside to put its new one in place


def _restore_or_remove(stale: Path) -> None:
    """A dead writer's temp file or folder goes; a whole folder it had moved aside for its new one, whose new
    one never landed, goes back where it was (else a crash between the two renames would lose both)."""
    final = stale.with_name(stale.name[1:].split(TEMP_MARK, 1)[0])
    if stale.name.endswith(PREVIOUS) and stale.is_dir() and not final.exists():
        os.replace(stale, final)
    elif stale.is_dir():
        shutil.rmtree(stale, ignore_errors=True)
    else:
        stale.unlink(missing_ok=True)


def clean_stale(folder: Path) -> list[Path]:
    """Remove temp files / folders under `folder` whose writing process is gone; returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.rglob(f"*{TEMP_MARK}*"), key=lambda p: len(p.parts), reverse=True):
        if path.exists() and not _writer_alive(path.name):
            _restore_or_remove(path)
            removed.append(path)
    return removed
