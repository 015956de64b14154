"""Prompt-aware distillation: corpus rows that begin with a soft prefix (`distill.prefix_share`).

A student distilled on text only is never shown a soft prompt, yet the user tunes one on it and
the owner transfers its effect. A tuned prompt sits off the token manifold: on SmolLM2 a tuned
prompt's vectors lie about 0.3–0.37 embedding standard deviations per coordinate from the text
they started from (measured on the student-curve rows, BENCHMARKS.md). So a share of the rows get,
after their BOS, `length` vectors that look like a prompt in the middle of tuning: the embeddings
of a random span of corpus text plus Gaussian noise of `noise` embedding standard deviations. The
teacher's states for those rows are what the student learns to reproduce, so it learns how the
large model answers to such a prefix, not only to text.

Every other row gets, in the same slot, the embeddings of the text that precedes it in the packed
stream: plain text, so every row has one length and a batch is one forward. The loss reads the
row's own positions only (BOS and its text), never the prefix slot, so the cached teacher states
keep the rows' shape. The prefixes are drawn once from the run's seed and fixed: the teacher's
cached states and the student see the same vectors.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Prefixes:
    vectors: torch.Tensor    # (rows, length, hidden) float32: what follows BOS in each row
    synthetic: torch.Tensor  # (rows,) bool: a prompt-like prefix (else the preceding text)
    n_head: int              # tokens before the slot (1 with BOS, else 0)

    @property
    def length(self) -> int:
        return self.vectors.shape[1]

    def fingerprint(self) -> bytes:
        """The prefixes' values, for the teacher-state cache's key."""
        return self.vectors.contiguous().numpy().tobytes() + self.synthetic.numpy().tobytes()


def _embedded(embed, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([embed(ids[i:i + 256]).float().cpu() for i in range(0, len(ids), 256)])


def text_spans(rows: torch.Tensor, embed, n_head: int, n: int, length: int, seed: int) -> torch.Tensor:
    """(n, length, hidden): the embeddings of `n` random spans of the rows' text (the tuned pool's starts)."""
    generator = torch.Generator().manual_seed(seed + 15485863)
    stream = rows[:, n_head:].reshape(-1)
    starts = torch.randint(0, max(1, len(stream) - length), (n,), generator=generator)
    return _embedded(embed, stream[(starts.unsqueeze(1) + torch.arange(length)) % len(stream)])


def _draw_synthetic(n: int, share: float, seed: int) -> tuple[torch.Tensor, torch.Generator]:
    """Which of `n` rows get a synthetic prefix — the first draw of make's own random stream (the row
    order's is untouched) — and that stream, for make's later draws."""
    generator = torch.Generator().manual_seed(seed + 7919)
    return torch.rand(n, generator=generator) < share, generator


def synthetic_rows(n: int, share: float, seed: int) -> torch.Tensor:
    """The rows make() will prefix synthetically (a check before the owner's prompts are tuned)."""
    return _draw_synthetic(n, share, seed)[0]


def make(rows: torch.Tensor, embed, n_head: int, share: float, length: int, noise: float,
         seed: int, pool: torch.Tensor | None = None) -> Prefixes:
    """Each row's prefix. `embed` maps token ids (any shape) to their input embeddings (the
    teacher's: the vectors are fixed before the student changes anything). `pool` (k, length, hidden):
    prompts the synthetic prefixes are drawn from (engine.prefix_tasks), instead of text spans."""
    synthetic, generator = _draw_synthetic(len(rows), share, seed)
    n, body = len(rows), rows[:, n_head:]
    stream, width = body.reshape(-1), body.shape[1]
    offsets = torch.arange(length)
    # plain rows: the `length` tokens before the row's text in the packed stream (wrapping at the start)
    before = (torch.arange(n).unsqueeze(1) * width - length + offsets) % len(stream)
    starts = torch.randint(0, max(1, len(stream) - length), (n,), generator=generator)
    spans = (starts.unsqueeze(1) + offsets) % len(stream)
    ids = torch.where(synthetic.unsqueeze(1), stream[spans], stream[before])
    vectors = _embedded(embed, ids) if n else torch.zeros(0, length, 0)
    if n and pool is not None:  # a synthetic row's prefix: one of the pool's prompts
        choice = torch.randint(0, len(pool), (n,), generator=generator)
        vectors = torch.where(synthetic.view(-1, 1, 1), pool.float()[choice], vectors)
    if n and synthetic.any() and noise > 0:
        scale = noise * vectors[synthetic].std()
        jitter = torch.randn(vectors.shape, generator=generator) * scale
        vectors = vectors + jitter * synthetic.view(-1, 1, 1)
    return Prefixes(vectors, synthetic, n_head)


def final_hidden(model, ids: torch.Tensor, prefix: torch.Tensor, n_head: int) -> torch.Tensor:
    """Final normalised hidden states of [head][prefix][text] at the head and text positions only:
    (B, L, hidden) for ids (B, L), as `engine.distill.final_hidden` gives for the rows alone."""
    embed = model.get_input_embeddings()
    tokens = embed(ids)
    x = torch.cat([tokens[:, :n_head], prefix.to(tokens.device, tokens.dtype), tokens[:, n_head:]], dim=1)
    hidden = model.base_model(inputs_embeds=x, use_cache=False).last_hidden_state
    m = prefix.shape[1]
    return torch.cat([hidden[:, :n_head], hidden[:, n_head + m:]], dim=1)
