"""Reaching the Hugging Face hub — or failing fast and saying what works offline.

Asking transformers for a hub name on a machine that cannot reach the hub hangs for ~45 s;
we check first (cache, then a 5 s connection probe) and fail with one line naming the
offline presets and assets.
"""
from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from engine.errors import PostError

PROBE_TIMEOUT_S = 5.0

# transformers >= 5 "kernelizes" a model at load by default (`use_kernels`): layers are swapped for code
# fetched from the hub. Offline that load fails on CUDA (seen on an H200: "kernels-community/rotary is not
# in the local cache"); online it runs downloaded code beside private data and changes the numerics
# between machines. post loads every model with the library's own layers.
NO_HUB_KERNELS = {"use_kernels": False}


def _offline_hint() -> str:
    from engine.presets import OFFLINE_PRESETS
    try:
        from engine.assets import CATALOGUE
        assets = ", ".join(sorted(CATALOGUE))
    except ImportError:  # the asset catalogue is optional at import time
        assets = "see post fetch --list"
    return f"offline presets: {', '.join(OFFLINE_PRESETS)}; offline assets: {assets}"


def hub_reachable() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=PROBE_TIMEOUT_S).close()
        return True
    except OSError:
        return False


def cached_snapshot(repo_id: str, revision: str | None = None):
    """The folder of a hub model's snapshot in the local hub cache (the one refs/main names, or `revision`),
    found by its config.json; None when it is not cached or `repo_id` is not a hub id."""
    from pathlib import Path
    from huggingface_hub import try_to_load_from_cache
    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:  # an invalid repo id is simply "not cached"
        return None
    return Path(found).parent if isinstance(found, str) else None


def model_in_cache(repo_id: str) -> bool:
    return cached_snapshot(repo_id) is not None


def require_hub(what: str, repo_id: str, cached: bool = False) -> None:
    """Raise a one-line PostError unless `repo_id` can be had (cached or hub reachable)."""
    if cached or hub_reachable():
        return
    raise PostError(f"{what} {repo_id!r} needs the Hugging Face hub, which cannot be reached from here "
                    f"(no network or HF_HUB_OFFLINE=1); {_offline_hint()}")
