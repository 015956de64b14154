"""Loading causal LMs and making a student from a teacher by keeping some of its blocks."""
from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from engine.errors import PostError
from engine.hub import NO_HUB_KERNELS, model_in_cache, require_hub


def _quiet_libraries() -> None:
    """Progress bars of transformers / hub would interleave with our own display (and stderr's one line)."""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging
    disable_progress_bars()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


_quiet_libraries()


def load(ref: str, seed: int = 0, trust_remote_code: bool = False):
    """Model reference → (model in eval mode, tokenizer).

    A reference is `tiny:gpt2` / `tiny:llama`, an offline asset name (`smollm2-135m`), a local
    folder written by `save_pretrained`, or a hub id.
    """
    if ref.startswith("tiny:"):
        from engine.tiny import FAMILIES, tiny
        if ref.split(":", 1)[1] not in FAMILIES:
            raise PostError(f"unknown tiny model {ref!r}: use tiny:gpt2 or tiny:llama")
        model, tokenizer = tiny(ref, seed=seed)
        return model, _ready(tokenizer)
    return _from_pretrained(ref, trust_remote_code, dtype=torch.float32)


def load_dispatched(ref: str, dtype: torch.dtype, max_memory: dict, trust_remote_code: bool = False):
    """`ref` split over the devices by accelerate (`device_map="auto"`): GPUs first, then the CPU, then
    disk, within `max_memory`. Its hooks move activations between devices; gradients reach a prompt
    through them. Loaded straight to its devices: the whole model never sits in one device's memory."""
    import atexit
    import shutil
    import tempfile
    memory = {int(k) if k.isdigit() else k: v for k, v in max_memory.items()} or None
    scratch = tempfile.mkdtemp(prefix="post-offload-")  # written only for weights not already in safetensors
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    return _from_pretrained(ref, trust_remote_code, dtype=dtype, device_map="auto", max_memory=memory,
                            offload_folder=scratch)


def _from_pretrained(ref: str, trust_remote_code: bool, **how):
    folder = _local_folder(ref)
    if folder is None:
        require_hub("model", ref, cached=model_in_cache(ref))
        folder = ref
    from transformers import AutoModelForCausalLM, AutoTokenizer
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=trust_remote_code,
                                                     **NO_HUB_KERNELS, **how)
    except (OSError, ValueError) as err:
        raise PostError(f"cannot load model {ref!r}: {str(err).splitlines()[0]}") from None
    return model.eval(), _ready(tokenizer)


def input_device(model: nn.Module) -> torch.device:
    """Where the model takes its inputs: its embeddings' device — accelerate's execution device when
    the model is split over devices (an offloaded embedding's weight sits on 'meta')."""
    embed = model.get_input_embeddings()
    device = getattr(getattr(embed, "_hf_hook", None), "execution_device", None)
    if device is None:
        return embed.weight.device
    return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)


def devices_of(model: nn.Module) -> dict[str, int]:
    """Blocks per device of a model split by accelerate (empty when it is whole on one device)."""
    counts: dict[str, int] = {}
    for device in (getattr(model, "hf_device_map", None) or {}).values():
        name = f"cuda:{device}" if isinstance(device, int) else str(device)
        counts[name] = counts.get(name, 0) + 1
    return counts


def _local_folder(ref: str) -> str | None:
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise PostError(f"model folder {ref} has no config.json: point to a folder written by save_pretrained")
        return str(path)
    try:
        from engine.assets import CATALOGUE, ensure
    except ImportError:
        return None
    if ref in CATALOGUE:
        if CATALOGUE[ref].kind != "model":
            raise PostError(f"{ref!r} is a data set asset, not a model")
        return str(ensure(ref))
    if ref.startswith((".", "/", "~")):
        raise PostError(f"model folder {ref} does not exist")
    return None


def _ready(tokenizer):
    # Batches are padded; a model without a pad token pads with EOS (masked out anyway).
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def tokenizer_fingerprint(tokenizer) -> str:
    """Same fingerprint ⇔ same token ↔ id mapping (what prompt transfer relies on); computed once per tokenizer."""
    cached = getattr(tokenizer, "_post_fingerprint", None)
    if cached is None:
        vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
        cached = hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]
        tokenizer._post_fingerprint = cached
    return cached


def check_same_tokenizer(small_tok, large_tok) -> None:
    if tokenizer_fingerprint(small_tok) != tokenizer_fingerprint(large_tok):
        raise PostError("the small and large models use different tokenizers: POST needs a student distilled "
                        "from the large model, or a smaller member of its family with the same tokenizer")


# ---------------------------------------------------------------- students

def block_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's list of transformer blocks and its state-dict prefix."""
    n = model.config.num_hidden_layers
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n and n > 0:
            return name, module
    raise PostError(f"cannot find the transformer blocks of {type(model).__name__}")


def resolve_blocks(blocks: list[int], n_layers: int) -> list[int]:
    resolved = []
    for b in blocks:
        i = b + n_layers if b < 0 else b
        if not 0 <= i < n_layers:
            raise PostError(f"distill.blocks: block {b} is out of range for a model with {n_layers} blocks "
                            f"(use 0..{n_layers - 1} or -1..-{n_layers})")
        if i in resolved:
            raise PostError(f"distill.blocks: block {i} is listed twice")
        resolved.append(i)
    if not resolved:
        raise PostError("distill.blocks is empty: keep at least one block, e.g. [0, -1]")
    return sorted(resolved)


def layer_count(ref: str) -> int | None:
    """The number of blocks of model `ref`, read from its config.json without loading (or fetching)
    anything; None when that file is not on this machine yet (the blocks are then checked at load)."""
    if ref.startswith("tiny:"):
        from engine.tiny import LAYERS
        return LAYERS
    return _config_int(ref, ("num_hidden_layers", "n_layer"))


def hidden_size(ref: str) -> int | None:
    """The embedding width of model `ref` from its config.json, like layer_count; None when unknown."""
    return None if ref.startswith("tiny:") else _config_int(ref, ("hidden_size", "n_embd"))


def _config_int(ref: str, keys: tuple[str, ...]) -> int | None:
    path = Path(ref).expanduser()
    if not path.is_dir():
        try:
            from engine.assets import CATALOGUE, asset_dir
        except ImportError:
            CATALOGUE = {}
        if ref in CATALOGUE:
            path = asset_dir(ref)
        else:
            from engine.hub import cached_snapshot
            path = cached_snapshot(ref)
            if path is None:  # not cached, or not a hub id either: load() says what is wrong
                return None
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    for section in (config, config.get("text_config") or {}):
        for key in keys:
            if isinstance(section.get(key), int):
                return section[key]
    return None


def check_blocks(ref: str, blocks: list[int]) -> None:
    """distill.blocks against the model's block count when it can be read without loading the model."""
    n = layer_count(ref)
    if n is not None:
        resolve_blocks(blocks, n)


def _student_config(config, keep: list[int]):
    cfg = copy.deepcopy(config)
    cfg.num_hidden_layers = len(keep)
    # Per-layer settings (e.g. Gemma 3's sliding/full attention pattern) follow their block.
    for attr in ("layer_types",):
        value = getattr(cfg, attr, None)
        if isinstance(value, list) and len(value) == config.num_hidden_layers:
            setattr(cfg, attr, [value[i] for i in keep])
    return cfg


def read_weights(model: nn.Module, wanted) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of every tensor of `model` whose name `wanted` accepts, one module at a time:
    resident ones as they are (no copy: callers copy what they keep, load_state_dict does), and
    weights accelerate offloaded (the module's own tensors on 'meta') read back to the CPU, so a
    teacher split over devices or disk never needs to fit in memory whole — only what the caller
    keeps (the student's blocks; under a merged start, running means of them)."""
    import contextlib
    from accelerate.utils import align_module_device, has_offloaded_params
    for name, module in model.named_modules():
        persistent = [k for k, _ in module.named_buffers(recurse=False) if k not in module._non_persistent_buffers_set]
        own = [k for k, _ in module.named_parameters(recurse=False)] + persistent  # what state_dict() holds
        keys = [k for k in own if wanted(f"{name}.{k}" if name else k)]
        if not keys:
            continue
        offloaded = has_offloaded_params(module)
        with align_module_device(module, "cpu") if offloaded else contextlib.nullcontext():
            tensors = {**dict(module.named_parameters(recurse=False)), **dict(module.named_buffers(recurse=False))}
            # an offloaded module's tensors go back to 'meta' when the context ends: keep a copy of those only
            chunk = [(f"{name}.{k}" if name else k, tensors[k].detach().to("cpu", copy=True) if offloaded
                      else tensors[k].detach()) for k in keys]
        yield from chunk


def merge_groups(keep: list[int], n_layers: int) -> dict[int, int]:
    """Teacher block → the student block that absorbs it under `distill.init = "merged"`: a dropped
    block goes to the nearer kept neighbour (a run of dropped blocks is split in half between the
    kept blocks around it; ties to the earlier one), blocks before the first kept one to it, after
    the last kept one to it. Every teacher block belongs to exactly one group."""
    owner = {}
    for block in range(n_layers):
        before = [k for k in keep if k <= block]
        after = [k for k in keep if k >= block]
        if not before or (after and after[0] - block < block - before[-1]):
            owner[block] = keep.index(after[0])
        else:
            owner[block] = keep.index(before[-1])
    return owner


def make_student(teacher: nn.Module, blocks: list[int], init: str = "kept") -> nn.Module:
    """A copy of `teacher` that keeps only `blocks`; embeddings, final norm and LM head copied.
    init "kept": each student block is its teacher block; "merged": the mean of the teacher blocks of
    its group (merge_groups), so the dropped blocks' weights are not simply thrown away."""
    n_layers = teacher.config.num_hidden_layers
    keep = resolve_blocks(blocks, n_layers)
    prefix, _ = block_list(teacher)
    student = type(teacher)(_student_config(teacher.config, keep))
    if init == "merged":
        group_of = merge_groups(keep, n_layers)
    else:
        group_of = {old: new for new, old in enumerate(keep)}
    sizes = {new: list(group_of.values()).count(new) for new in set(group_of.values())}
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.(.*)$")
    state = {}
    for key, value in read_weights(teacher, lambda k: (m := pattern.match(k)) is None or int(m.group(1)) in group_of):
        match = pattern.match(key)
        if match is None:
            state[key] = value
            continue
        new_key = f"{prefix}.{group_of[int(match.group(1))]}.{match.group(2)}"
        if sizes[group_of[int(match.group(1))]] == 1:
            state[new_key] = value
        else:  # a running mean in float32: no list of the group's tensors is held
            part = value.detach().to(torch.float32) / sizes[group_of[int(match.group(1))]]
            state[new_key] = state[new_key] + part if new_key in state else part
    missing, unexpected = student.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith(("attn.bias", "masked_bias", "rotary_emb.inv_freq"))]
    if missing or unexpected:
        raise PostError(f"cannot build the student: missing {missing[:3]}, unexpected {unexpected[:3]}")
    student.config.post_student_of_blocks = keep
    if init == "merged":
        student.config.post_student_init = "merged"
    return student.eval()
