"""The soft prompt and the prompted forward pass.

Unlike PEFT's prompt module (one prompt broadcast over the batch), the prompt here is
expanded *per example* into a leaf tensor of shape (B, m, d). After one backward pass its
`.grad[i]` is exactly example i's gradient — what DP-SGD clips — and its mean is the ordinary
gradient. Inside the model, every sequence is laid out left-padded as

    [pad … pad] [BOS?] [p_1 … p_m] [x_1 … x_n]

whatever the caller's padding side, with position ids counting real tokens only, so the
prediction position is always the last one and the LM head runs there alone.
"""
from __future__ import annotations

import contextlib
import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from engine.errors import PostError
from engine.models import input_device


class SoftPrompt(nn.Module):
    def __init__(self, length: int, dim: int, metadata: dict[str, str] | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(length, dim))
        self.metadata = dict(metadata or {})

    @property
    def length(self) -> int:
        return self.weight.shape[0]

    @classmethod
    def from_text(cls, model, tokenizer, text: str, length: int, **metadata: str) -> "SoftPrompt":
        """Initialise from the token embeddings of `text`, repeated / truncated to `length`."""
        ids = tokenizer(text, add_special_tokens=False).input_ids
        if length and not ids:
            raise PostError("task.prompt_init tokenizes to nothing: give a sentence describing the task")
        limit = context_length(model)
        if limit is not None and length >= limit:
            raise PostError(f"tune.prompt_length={length} does not fit the model's context of {limit} tokens")
        ids = (ids * (length // max(len(ids), 1) + 1))[:length]
        with torch.no_grad():
            emb = model.get_input_embeddings()(torch.tensor(ids, dtype=torch.long, device=input_device(model)))
        prompt = cls(length, model.config.hidden_size, {"init_text": text, **metadata})
        prompt.weight.data.copy_(emb.float().cpu() if length else prompt.weight.data)
        return prompt

    def per_example(self, batch_size: int) -> torch.Tensor:
        """A (B, m, d) leaf copy whose `.grad[i]` will hold example i's gradient."""
        return self.weight.detach().unsqueeze(0).repeat(batch_size, 1, 1).requires_grad_(True)

    def save(self, path: Path, **metadata: str) -> None:
        meta = {**self.metadata, **{k: str(v) for k, v in metadata.items()},
                "length": str(self.length), "dim": str(self.weight.shape[1])}
        from engine import artifacts
        artifacts.save_tensors(path, {"prompt": self.weight.detach().float().cpu().contiguous()}, metadata=meta)

    @classmethod
    def load(cls, path: Path) -> "SoftPrompt":
        from safetensors import safe_open
        if not Path(path).is_file():
            raise PostError(f"prompt file {path} not found: run the tune stage first")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            weight = load_file(str(path))["prompt"]
        except Exception as err:  # truncated or not a safetensors file: say which file, not a raw traceback
            raise PostError(f"prompt file {path} is damaged ({type(err).__name__}); resume the run so the "
                            "stage that wrote it runs again") from None
        problem = not_a_prompt(weight)
        if problem:  # a prompt that would score or transfer garbage: refused where it enters
            raise PostError(f"prompt file {path} does not hold a prompt ({problem}): give a prompt post wrote, or "
                            "run the stage that wrote it again (post tune / full-pt / transfer RUN_DIR)")
        prompt = cls(weight.shape[0], weight.shape[1], meta)
        prompt.weight.data.copy_(weight)
        return prompt


def not_a_prompt(weight: torch.Tensor) -> str:
    """What is wrong with a loaded tensor as a prompt; "" when nothing is."""
    if weight.ndim != 2 or 0 in weight.shape:
        return f"a tensor of shape {tuple(weight.shape)}, not vectors × width"
    if not weight.is_floating_point():
        return f"{str(weight.dtype).removeprefix('torch.')} values, not floating point"
    if not torch.isfinite(weight).all():
        return "inf or nan values"
    return ""


def tensor_hash(path: Path) -> str:
    """Identity of a saved prompt by its values (not its file: metadata may differ between copies)."""
    import hashlib
    weight = SoftPrompt.load(path).weight.detach().float().contiguous()
    digest = hashlib.sha256(str(tuple(weight.shape)).encode())
    digest.update(weight.numpy().tobytes())
    return digest.hexdigest()[:16]


def context_length(model) -> int | None:
    cfg = model.config
    for attr in ("n_positions", "max_position_embeddings"):
        value = getattr(cfg, attr, None)
        if isinstance(value, int):
            return value
    return None


def bos_id(tokenizer) -> int | None:
    """The BOS id when the tokenizer starts sequences with one (it then stays first, before the prompt)."""
    ids = tokenizer("a").input_ids
    if tokenizer.bos_token_id is not None and ids and ids[0] == tokenizer.bos_token_id:
        return tokenizer.bos_token_id
    return None


def _layout(attention_mask: torch.Tensor, m: int, n_bos: int):
    """Indices that place [BOS][prompt][tokens] at the right end of each row.

    Source rows are cat([bos (n_bos), prompt (m), tokens (L)]); returns the gather index (B, T),
    the new attention mask and position ids, T = n_bos + m + L.
    """
    B, L = attention_mask.shape
    T = n_bos + m + L
    mask = attention_mask.long()
    n = mask.sum(1, keepdim=True)                       # real tokens per row
    start = mask.argmax(1, keepdim=True)                # first real token (left or right padding)
    j = torch.arange(T, device=mask.device).unsqueeze(0)
    offset = T - (n_bos + m + n)                        # where each row's content begins
    k = j - offset                                      # position inside [bos, prompt, tokens]
    token_src = n_bos + m + start + (k - n_bos - m)
    index = torch.where(k < n_bos + m, k, token_src).clamp(0, T - 1)
    index = torch.where(k < 0, torch.zeros_like(index), index)
    new_mask = (k >= 0).long()
    position_ids = (new_mask.cumsum(1) - 1).clamp(min=0)
    return index, new_mask, position_ids


def autocast(device: torch.device, dtype: str):
    if dtype == "bfloat16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prompted_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    prompt: torch.Tensor | None = None, bos: int | None = None,
                    dtype: str = "float32", with_state: bool = False):
    """Next-token logits (B, V) at the prediction position of `prompt + input`.

    `prompt` is (B, m, d) (see `SoftPrompt.per_example`), (m, d), or None for no prompt.
    `with_state`: also the final hidden state (B, d) there, from the same forward.
    """
    embed = model.get_input_embeddings()
    B = input_ids.shape[0]
    tokens = embed(input_ids)
    d = tokens.shape[-1]
    if prompt is None:
        prompt = tokens.new_zeros(B, 0, d)
    elif prompt.dim() == 2:
        prompt = prompt.unsqueeze(0).expand(B, -1, -1)
    parts = [prompt.to(tokens.device, tokens.dtype), tokens]  # a split model's embeddings may sit elsewhere
    n_bos = 0
    if bos is not None:
        parts.insert(0, embed(torch.full((B, 1), bos, dtype=torch.long, device=input_ids.device)))
        n_bos = 1
    source = torch.cat(parts, dim=1)
    index, mask, position_ids = _layout(attention_mask, prompt.shape[1], n_bos)
    embeds = source.gather(1, index.to(source.device).unsqueeze(-1).expand(-1, -1, d))
    with autocast(input_ids.device, dtype):
        out = model(inputs_embeds=embeds, attention_mask=mask.to(source.device),
                    position_ids=position_ids.to(source.device), logits_to_keep=1, use_cache=False,
                    output_hidden_states=with_state)
    logits = out.logits[:, -1].float().to(input_ids.device)  # from a split model's last device, back to the batch's
    if with_state:
        return logits, out.hidden_states[-1][:, -1].float().to(input_ids.device)
    return logits


def init_warning(tokenizer, text: str, length: int, label_words: list[list[str]]) -> str | None:
    """Say so when `task.prompt_init` is cut to the prompt's length, and which classes the kept part names.

    A cut init can name one class and not the others: on bbc the 10 tokens kept of a 19-token init end in
    "…news article: business", and that start alone cost SmolLM2 11 points of zero-shot (BENCHMARKS.md)."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if length == 0 or len(ids) <= length or not re.search(r"\w", tokenizer.decode(ids[length:])):
        return None  # fits, or only a full stop is cut
    kept = tokenizer.decode(ids[:length])
    named = [words[0] for words in label_words
             if any(re.search(rf"\b{re.escape(w.strip())}\b", kept, re.IGNORECASE) for w in words)]
    bias = (f"; it names the class{'es' if len(named) > 1 else ''} {', '.join(repr(n) for n in named)} and not the others"
            if named and len(named) < len(label_words) else "")
    return (f"task.prompt_init is {len(ids)} tokens and tune.prompt_length is {length}: the prompts start from "
            f"{kept!r} only{bias}: shorten task.prompt_init to at most {length} tokens")
