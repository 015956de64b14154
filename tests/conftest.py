import os

# No hub in tests: a hub name must fail fast, never hang.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # tiny models: one thread is fastest and steady on a shared 2-core box


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch, request):
    """Students and other cache entries of a test go to a temporary cache (real assets: see test_assets)."""
    if "registry" in request.keywords or "slow" in request.keywords:
        return
    monkeypatch.setenv("POST_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(autouse=True)
def _isolated_ledger(tmp_path_factory, monkeypatch):
    """Every test's privacy ledger is its own: nothing lands in the user's ~/.local/share/post/ledger."""
    monkeypatch.setenv("POST_LEDGER", str(tmp_path_factory.mktemp("ledger")))
