"""Named presets: TOML files shipped in the `presets` package.

A preset may start with `extends = "other"` to inherit another preset and change a few keys.
"""
from __future__ import annotations

import difflib
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from engine.config import RunConfig, apply_overrides, deep_merge, read_toml, validate
from engine.errors import PostError

OFFLINE_PRESETS = ("demo", "starter", "smoke", "smoke-learn", "mr-smollm2", "bbc-gemma3")


def _preset_files() -> dict[str, Any]:
    folder = resources.files("presets")
    return {p.name[:-5]: p for p in folder.iterdir() if p.name.endswith(".toml")}


def preset_names() -> list[str]:
    return sorted(_preset_files())


def _extends(data: dict[str, Any], where: str) -> str | None:
    parent = data.pop("extends", None)
    if parent is not None and not isinstance(parent, str):
        raise PostError(f"{where}: extends must be a preset name in quotes, e.g. extends = \"smoke\" "
                        f"(got {parent!r})")
    return parent


def preset_data(name: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The preset's TOML as a dict, with `extends` resolved."""
    files = _preset_files()
    if name not in files:
        near = difflib.get_close_matches(name, files, n=1)
        hint = f"did you mean {near[0]}?" if near else f"available: {', '.join(sorted(files))}"
        raise PostError(f"unknown preset {name!r}: {hint} (post presets list shows them all)")
    if name in _seen:
        raise PostError(f"preset {name} extends itself through {' -> '.join(_seen)}")
    own = tomllib.loads(files[name].read_text(encoding="utf-8"))
    parent = _extends(own, f"preset {name}")
    data = deep_merge(preset_data(parent, _seen + (name,)), own) if parent else own
    data["name"] = own.get("name", name)  # a child preset is not named after its parent
    return data


def load_config(preset: str | None = None, config_file: Path | None = None,
                overrides: list[str] | None = None) -> RunConfig:
    """Preset, then the user's file on top, then `--set` overrides; validated."""
    if preset is None and config_file is None:
        raise PostError("give --preset NAME or --config FILE (post presets list shows the presets)")
    data: dict[str, Any] = preset_data(preset) if preset else {}
    if config_file is not None:
        user = read_toml(config_file)
        parent = _extends(user, f"config file {config_file}")
        if parent and not preset:
            data = preset_data(parent)
        data = deep_merge(data, user)
        data["name"] = user.get("name", Path(config_file).stem)
    return validate(apply_overrides(data, list(overrides or [])))


def describe(name: str) -> str:
    return preset_data(name).get("description", "")
