"""Artifacts that cross between the parties: a folder with a `manifest.json`.

The manifest lists every file of the folder with its sha256 and its role, the kind of artifact,
the versions that wrote it, and kind-specific fields. `verify` refuses a folder whose files do
not match it — a changed, missing or extra file — in one line. Dates are to the day only.
"""
from __future__ import annotations

import time
from pathlib import Path

from engine import artifacts
from engine.errors import PostError

MANIFEST = "manifest.json"
FORMAT = 1


def write(folder: Path, kind: str, roles: dict[str, str], **fields) -> dict:
    """Write the manifest of `folder` last; `roles` maps each file (relative path) to what it is."""
    from engine.records import versions
    folder = Path(folder)
    files = {name: {"sha256": artifacts.sha256_file(folder / name), "bytes": (folder / name).stat().st_size,
                    "role": role} for name, role in sorted(roles.items())}
    manifest = {"kind": kind, "format": FORMAT, "files": files, "versions": versions(),
                "created": time.strftime("%Y-%m-%d", time.gmtime()), **fields}
    artifacts.write_json(folder / MANIFEST, manifest)
    return manifest


def verify(folder: Path, kind: str) -> dict:
    """The manifest of `folder` if every file matches it; PostError naming the first mismatch."""
    folder = Path(folder)
    label = kind.replace("post-", "").replace("-", " ")
    if not folder.is_dir():
        raise PostError(f"{folder} is not a {label} folder (it does not exist or is a file)")
    if not (folder / MANIFEST).is_file():
        raise PostError(f"{folder} is not a {label}: it has no {MANIFEST}")
    try:
        manifest = artifacts.read_json_dict(folder / MANIFEST, f"{label} manifest")
    except artifacts.DamagedArtifact:  # not a stage's output that a resume rewrites: it came from the other party
        raise PostError(f"{folder / MANIFEST} is damaged (not a JSON object): the {label} cannot be checked; "
                        f"ask whoever sent it for the {label} again") from None
    if manifest.get("kind") != kind:
        raise PostError(f"{folder} is a {manifest.get('kind')!r}, not a {kind!r}")
    if manifest.get("format") != FORMAT:
        raise PostError(f"{folder}: {label} format {manifest.get('format')!r}, this post reads format {FORMAT}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise PostError(f"{folder}/{MANIFEST} lists no files: the {label} is damaged")
    for name, entry in files.items():
        path = folder / name
        if not path.is_file():
            raise PostError(f"{folder}: {name} is listed in the manifest but missing: the {label} is incomplete")
        if not isinstance(entry, dict) or artifacts.sha256_file(path) != entry.get("sha256"):
            raise PostError(f"{folder}: {name} does not match its sha256 in the manifest: the {label} was "
                            "changed or damaged; ask for it again")
    extra = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                   if p.is_file() and p.name != MANIFEST and str(p.relative_to(folder)) not in files)
    if extra:
        raise PostError(f"{folder}: {extra[0]} is not in the manifest: a {label} holds only what it lists")
    return manifest


def fingerprint(manifest: dict) -> str:
    """One digest of a manifest's files (what another artifact refers to)."""
    from engine.records import digest
    return digest({name: entry["sha256"] for name, entry in manifest["files"].items()})
