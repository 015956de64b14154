"""Where fetched assets live, how we tell a finished one apart, and raw downloads.

Downloads come from PyPI (`pip download`, so pip's own index/proxy settings apply) or, for
npm tarballs, straight from the npm registry over HTTPS (`npm_config_registry` names a
mirror). Either way the file's sha256 must match the catalogue's pin before it is used.

A cache folder counts as finished only if its `post_asset.json` names the current
FORMAT_VERSION: the manifest is written last and the folder is renamed into place in one
step, so a folder from a crash, or from an older layout, never passes for a good one.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

from engine.errors import PostError

from .catalogue import DATASET, NpmPackage, Package

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


NPM_REGISTRY = "https://registry.npmjs.org"
_NPM_TIMEOUT_S = 60  # per connect / read: a black-holed registry fails in minutes, not hours
_NPM_ATTEMPTS = 3  # a dropped connection is retried, like pip's --retries
_NPM_RETRY_DELAY_S = 2.0


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
    from engine import artifacts
    artifacts.write_text(folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")  # whole and on disk, or absent


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


def npm_registry() -> str:
    """$npm_config_registry (npm's own variable for a mirror), else the public registry."""
    return os.environ.get("npm_config_registry", "").strip() or NPM_REGISTRY


def npm_download(package: NpmPackage, dest: Path) -> Path:
    """Download one pinned npm tarball into `dest` with urllib; verify its hash.

    Returns the downloaded file. It is written under a temporary name and only renamed
    once its sha256 matches, so a torn or foreign download never sits where a good one
    would; nothing is unpacked here (the recipes read the tarball in place).
    """
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / package.filename
    partial = dest / f"{package.filename}.part"
    url = package.url(npm_registry())
    for attempt in range(1, _NPM_ATTEMPTS + 1):
        digest = hashlib.sha256()
        try:
            with partial.open("wb") as out:
                for block in _npm_blocks(url, package.requirement):
                    digest.update(block)
                    out.write(block)
            break
        except _Dropped as dropped:
            partial.unlink(missing_ok=True)
            if attempt == _NPM_ATTEMPTS:
                raise PostError(
                    f"cannot reach the package registry to download {package.requirement} "
                    f"({dropped}): check the network, proxy (https_proxy) or npm registry "
                    "setting (npm_config_registry)"
                ) from None
            time.sleep(_NPM_RETRY_DELAY_S * attempt)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    got = digest.hexdigest()
    if got != package.sha256:
        partial.unlink(missing_ok=True)
        raise PostError(
            f"{package.filename} from the registry has sha256 {got[:12]}…, expected "
            f"{package.sha256[:12]}…: the registry served different bytes; "
            "check your registry/mirror"
        )
    partial.replace(target)
    return target


class _Dropped(Exception):
    """The registry could not be reached, or the connection broke: worth another try."""


def _npm_blocks(url: str, requirement: str) -> Iterator[bytes]:
    """The response body in 1 MiB blocks; network failures become _Dropped or PostError.

    Only the network side is translated here: an error writing the blocks to disk is
    raised in the caller and keeps its own message.
    """
    try:
        with urllib.request.urlopen(url, timeout=_NPM_TIMEOUT_S) as response:
            while block := response.read(2**20):
                yield block
    except urllib.error.HTTPError as err:
        if err.code == 404:
            raise PostError(
                f"the package registry offers no {requirement} ({url}): your registry/mirror "
                "does not carry it; check npm_config_registry"
            ) from None
        if err.code >= 500 or err.code == 429:
            raise _Dropped(f"HTTP {err.code}") from None
        raise PostError(
            f"the package registry refused {requirement}: HTTP {err.code} {err.reason} ({url})"
        ) from None
    except urllib.error.URLError as err:
        raise _Dropped(_one_line(err.reason)) from None
    except (TimeoutError, ConnectionError, http.client.HTTPException) as err:
        raise _Dropped(_one_line(err) or type(err).__name__) from None


def _one_line(reason: object) -> str:
    return " ".join(str(reason).split())


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
