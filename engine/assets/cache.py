"""Where fetched assets live, how we tell a finished one apart, and raw downloads.

A cache folder counts as finished only if its `post_asset.json` names the current
FORMAT_VERSION: the manifest is written last and the folder is renamed into place in one
step, so a folder from a crash, or from an older layout, never passes for a good one.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from engine.errors import PostError

from .catalogue import DATASET, Package

FORMAT_VERSION = 1  # bump whenever the layout of a cache folder changes
MANIFEST = "post_asset.json"
SPLITS = ("train", "validation", "test")

# Files a folder of each kind must hold besides the manifest (a user may delete files by hand).
_DATASET_FILES = tuple(f"{split}.parquet" for split in SPLITS)
_MODEL_FILES = ("config.json", "tokenizer_config.json")

# Phrases pip prints when it cannot talk to the index at all (as opposed to "no such version").
_UNREACHABLE = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "Connection refused",
    "ConnectTimeoutError",
    "Read timed out",
    "ProxyError",
    "No route to host",
)


def cache_root() -> Path:
    """$POST_CACHE, else ~/.cache/post (read on every call so tests can redirect it)."""
    configured = os.environ.get("POST_CACHE", "").strip()
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "post"


def asset_dir(name: str) -> Path:
    return cache_root() / name


def read_manifest(folder: Path) -> dict | None:
    """The folder's post_asset.json, or None when it is missing or unreadable."""
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_manifest(folder: Path, manifest: dict) -> None:
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def is_complete(folder: Path, name: str) -> bool:
    """True when `folder` holds a finished asset `name` in the current format."""
    manifest = read_manifest(folder)
    if manifest is None or manifest.get("format_version") != FORMAT_VERSION:
        return False
    if manifest.get("name") != name:
        return False
    needed = _DATASET_FILES if manifest.get("kind") == DATASET else _MODEL_FILES
    if not all((folder / file).is_file() for file in needed):
        return False
    # A model needs weights; save_pretrained writes one file or an index plus shards.
    if manifest.get("kind") != DATASET and not any(folder.glob("*.safetensors")):
        return False
    return True


def is_cached(name: str) -> bool:
    return is_complete(asset_dir(name), name)


def folder_size_mb(folder: Path) -> float:
    total = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    return round(total / 2**20, 1)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def pip_download(package: Package, dest: Path) -> Path:
    """Download one pinned wheel/sdist (never its dependencies) into `dest`; verify its hash.

    Returns the downloaded file. pip is run as a subprocess of this interpreter so that it
    uses the same registry configuration (index URLs, proxies, certificates) as `pip install`.
    """
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.iterdir())
    # A few retries, not zero: pip only names the connection error when it retries.
    # A bounded timeout: an unreachable (black-holed) registry fails in minutes, not hours.
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--disable-pip-version-check", "--retries", "3", "--timeout", "60",
               "--dest", str(dest)]
    if package.sdist:
        command += ["--no-binary", ":all:"]
    command.append(package.requirement)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise PostError(_pip_failure(package.requirement, result.stdout + result.stderr))
    new = sorted(set(dest.iterdir()) - before)
    if len(new) != 1:
        raise PostError(
            f"pip download {package.requirement} produced {len(new)} files instead of one; "
            "check your pip configuration"
        )
    got = sha256_of(new[0])
    if got != package.sha256:
        raise PostError(
            f"{new[0].name} from the registry has sha256 {got[:12]}…, expected "
            f"{package.sha256[:12]}…: the registry served different bytes; check your index/mirror"
        )
    return new[0]


def _pip_failure(requirement: str, output: str) -> str:
    """One line explaining why pip failed: unreachable registry vs. anything else."""
    if any(marker in output for marker in _UNREACHABLE):
        return (
            f"cannot reach the package registry to download {requirement}: "
            "check the network, proxy or pip index settings (pip config list)"
        )
    if "(from versions: none)" in output:
        # Our requirements are pinned versions that exist on PyPI, so "none" means the
        # configured index is not PyPI (or a mirror without it), or it could not be read.
        return (
            f"the package registry offers no {requirement}: it is unreachable or your "
            "index/mirror does not carry it; check the network and pip index settings"
        )
    if "No module named pip" in output:
        return f"pip is not installed in {sys.executable}: run `python -m ensurepip` first"
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    # pip's own "is ignored" warnings about unused local indexes are noise, not the cause.
    lines = [line for line in lines if "is ignored" not in line] or ["no output"]
    errors = [line for line in lines if line.startswith("ERROR")]
    reason = (errors or lines)[-1]
    return f"pip could not download {requirement}: {reason}"
