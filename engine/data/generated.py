"""A public set the large model writes itself (`public.source = "generated"`).

When no public text resembles the user's task (no e-mails among the offline public sets for a spam
filter), the model owner can sample the public set from the large model: for each class it continues
`public.prefix` with `{label}` replaced by the class's first label word. Only the config is read —
the prefix and the label words the transfer already uses — never private data, so the owner's side of
the boundary is unchanged. The texts are sampled once, seeded, and kept: in the cache (so another run
and every rank find the same texts) and in the run's transfer folder (what the prompt was trained on).
"""
from __future__ import annotations

import contextlib
import string
import time

import torch

from engine import artifacts, records
from engine.errors import PostError

GENERATED = "generated"
RECORD = "public_generated.json"  # in the transfer folder: the texts the prompts were trained on
TOP_P = 0.95  # nucleus sampling: varied texts without the tail's junk tokens
BATCH = 16


def check_prefix(prefix: str) -> str:
    """A prefix may name {label} and nothing else; it must say something for the model to continue."""
    if not prefix.strip():
        raise ValueError("is empty: with public.source = \"generated\" give the text the large model continues, "
                         "e.g. \"Here is a news article about {label}:\\n\"")
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(prefix) if name is not None]
    except ValueError:
        raise ValueError("has a stray '{' or '}': write {label} for the class's label word, {{ or }} for a brace") from None
    for name in names:
        if name != "label":
            raise ValueError(f"names {{{name or ''}}}: only {{label}} (the class's first label word) can be filled in")
    return prefix


def prefixes(prefix: str, label_words: list[list[str]]) -> list[str]:
    """One prefix per class, its first label word filled in (the same text for all without {label})."""
    return [prefix.format(label=words[0].strip()) for words in label_words]


def counts(size: int, classes: int) -> list[int]:
    """`size` texts split over the classes as evenly as possible (the first classes get the remainder)."""
    return [size // classes + (1 if c < size % classes else 0) for c in range(classes)]


def key(identity: dict, prefix: str, label_words: list[list[str]], size: int, max_new_tokens: int) -> str:
    """`identity`: the large model as distillation names it (id, tokenizer, weights, dtype, seed, BOS), so
    a model folder changed in place never hits texts another model wrote."""
    return records.digest({**identity, "prefix": prefix, "labels": [w[0] for w in label_words],
                           "size": size, "tokens": max_new_tokens, "top_p": TOP_P})


@torch.inference_mode()
def sample(model, tokenizer, prefix_texts: list[str], per_class: list[int], max_new_tokens: int, seed: int,
           bos: int | None, say=lambda line: None) -> list[str]:
    """Continue each class's prefix `per_class[c]` times; texts in class order, blanks drawn again.
    `say` hears one line per class (minutes on a slow CPU: say how far it is)."""
    start = time.perf_counter()
    device = next(model.parameters()).device
    texts: list[str] = []
    for c, (text, wanted) in enumerate(zip(prefix_texts, per_class)):
        ids = tokenizer(text, add_special_tokens=False).input_ids
        ids = ([bos] if bos is not None else []) + ids
        got: list[str] = []
        for attempt in range(4):  # a sample that ends at once (EOS first) is drawn again, a few times at most
            need = wanted - len(got)
            if need <= 0:
                break
            with _seeded(int(records.digest({"seed": seed, "class": c, "attempt": attempt}), 16) % 2**62, device):
                for offset in range(0, need, BATCH):
                    n = min(BATCH, need - offset)
                    batch = torch.tensor([ids] * n, device=device)
                    out = model.generate(input_ids=batch, attention_mask=torch.ones_like(batch), do_sample=True,
                                         top_p=TOP_P, top_k=0, temperature=1.0, max_new_tokens=max_new_tokens,
                                         pad_token_id=tokenizer.pad_token_id)
                    new = tokenizer.batch_decode(out[:, len(ids):], skip_special_tokens=True)
                    got += [t.strip() for t in new if t.strip()]
        if len(got) < wanted:
            raise PostError(f"the large model wrote {len(got)} non-empty texts of {wanted} after {text!r}: "
                            "change public.prefix so it invites a text (e.g. end it with a colon and a newline)")
        texts += got[:wanted]
        say(f"public set: {len(texts)} of {sum(per_class)} texts written ({time.perf_counter() - start:.0f} s)")
    return texts


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device):
    """Sampling from a fixed seed without disturbing the run's own random streams."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def texts_for(ctx, model, tokenizer, bos: int | None, count: int) -> list[str]:
    """The run's `count` generated public texts (public.size, or with a balanced pick the pool): rank 0 reads
    them from the run folder or the cache when this recipe was sampled before, else samples them; every
    other rank receives rank 0's texts and never reads a cache (a rank on another machine has none, and
    sampling there could differ in the last float digits — the transfer's targets must come from one public set)."""
    from engine import distributed
    from engine.assets import cache_root
    from engine.distill import teacher_identity
    cfg = ctx.config
    words = cfg.task.label_words
    k = key(teacher_identity(cfg, model, tokenizer), cfg.public.prefix, words, count, cfg.public.max_length)
    cached = cache_root() / "public" / f"{k}.json"
    kept = ctx.stage_dir("transfer") / RECORD
    texts = None
    if distributed.is_main():
        # a resumed run keeps the texts its finished prompts were trained on, whatever the cache holds now
        texts = _read(kept, k) or _read(cached, k)
        if texts is None:
            ctx.log(f"public set: the large model writes {count} texts after {cfg.public.prefix!r} "
                    f"({len(words)} classes, up to {cfg.public.max_length} tokens each)")
            texts = sample(model, tokenizer, prefixes(cfg.public.prefix, words), counts(count, len(words)),
                           cfg.public.max_length, cfg.runtime.seed, bos, say=ctx.log)
            cached.parent.mkdir(parents=True, exist_ok=True)
            artifacts.write_json(cached, {"key": k, "texts": texts})
    texts = distributed.gather_objects(texts)[0]
    if distributed.is_main():
        artifacts.write_json(kept, {"key": k, "prefix": cfg.public.prefix, "model": cfg.models.large, "texts": texts})
    return texts


def _read(path, k: str) -> list[str] | None:
    """Cached texts when the file is whole and made for this key; None (sample again) otherwise."""
    return artifacts.read_kept_list(path, k, "texts", str, "generated public set")
