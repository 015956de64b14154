"""The owner's side reads public data only: a public set or distillation corpus that holds the private texts.

POST's promise is that nothing but the noised prompt leaves the user's side. The transfer trains on the
public set and the distillation on its corpus, without noise and outside the privacy accountant, so the
same texts given there (the private file named twice, a copy of it, its test split) would train the
large model's prompt on private data while the run still reports the tune's ε. The check compares
text values, not file names, and runs where the private data is open anyway (the stages that tune on
it), so a stage of the owner's never has to open it. What was compared is kept in the run folder
(CHECKED: the fingerprints of the public texts, and of those found in the private data), so a transfer
run alone, which never opens the private data, trains only on a public set that was compared.

A few short texts may be shared by chance between unrelated sets ("great movie!", a one-word tweet), so
texts shorter than MIN_WORDS words do not count, and a handful of longer shared texts are reported, not
refused. Refused: more than PRIVATE_SHARE of the texts (that is the private data, however small the set),
or FEW texts or more when they are over SHARED_LIMIT of them (too many to be chance).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from engine import artifacts
from engine.errors import PostError

CHECKED = "boundary.json"  # in the run folder: the public texts compared, per private data set (`checked`)
MIN_WORDS = 5         # a text this short can be anyone's
PRIVATE_SHARE = 0.10  # of the texts (long enough to count) found in the private data: refused above it
FEW, SHARED_LIMIT = 3, 0.01  # and refused from FEW such texts up when they are over SHARED_LIMIT of them


def _fingerprint(text: str) -> str:
    return hashlib.sha256(" ".join(text.split()).casefold().encode("utf-8")).hexdigest()[:16]


def _countable(texts) -> set[str]:
    return {_fingerprint(t) for t in texts if isinstance(t, str) and len(t.split()) >= MIN_WORDS}


def private_texts(task_cfg, seed: int) -> set[str]:
    """Fingerprints of every text of the private task's splits (train, validation, test): each string cell,
    not only the task's text fields (a title column the task does not read is private too)."""
    from engine.data.sources import read_split
    splits = [task_cfg.train_split, task_cfg.test_split, task_cfg.validation_split]
    found: set[str] = set()
    for split in dict.fromkeys(s for s in splits if s):
        rows = read_split(task_cfg.source, split, task_cfg.subset, seed)
        found |= _countable(value for row in rows for value in row.values())
    return found


def shared(texts: list[str], private: set[str]) -> tuple[int, int]:
    """(texts of `texts` also in the private data, texts long enough to count)."""
    mine = [_fingerprint(t) for t in texts if isinstance(t, str) and len(t.split()) >= MIN_WORDS]
    return sum(f in private for f in mine), len(mine)


def check(what: str, key: str, texts: list[str], private: set[str], log) -> None:
    """Refuse `texts` (the public set, the distillation corpus) when they are the private data; say so
    when a few are shared."""
    hits, counted = shared(texts, private)
    if not hits:
        return
    if hits > PRIVATE_SHARE * counted or (hits >= FEW and hits > SHARED_LIMIT * counted):
        raise PostError(f"{hits} of the {counted} texts of {what} ({key}) are texts of the private task data: the "
                        f"owner's side would train on private data, outside the privacy accounting — give "
                        f"{key} public data that is not the task's (any split of it)")
    log(f"{hits} of the {counted} texts of {what} ({key}) are also in the private task data (few: taken as "
        "chance); the owner's side trains on them without noise", "warning")


def checked(run_dir: Path) -> dict[str, list[str]]:
    """What CHECKED keeps: per private data set ("@<task>"), the fingerprints of the public texts compared with
    it ("public@"), those of them found in it ("shared@": public texts too) and its own digest ("private@")."""
    path = run_dir / CHECKED
    if not path.is_file():
        return {}
    kept = artifacts.read_json(path, "record of the public data compared with the private data")
    if not isinstance(kept, dict) or not all(isinstance(k, str) and isinstance(v, list) and all(isinstance(d, str) for d in v) for k, v in kept.items()):
        raise PostError(f"{path} is not a record of the public data compared with the private data: "
                        "delete it, and the next run that tunes compares again")
    return kept


def compared_with(task_cfg, seed: int) -> str:
    """Which private data a comparison was made with, by the settings that name it (no private text): a set
    compared with one task's data is not thereby compared with another's tuned in the same folder later."""
    named = [task_cfg.source, task_cfg.subset, task_cfg.train_split, task_cfg.validation_split, task_cfg.test_split,
             str(seed)]
    return hashlib.sha256("\n".join(str(n) for n in named).encode()).hexdigest()[:16]


def _private_digest(private: set[str]) -> str:
    """One digest of the private texts' fingerprints (not the stage records' data key: only texts that count)."""
    return hashlib.sha256("\n".join(sorted(private)).encode()).hexdigest()[:32]


def _current(kept: dict, task: str, private: set[str]) -> dict:
    """`kept` without what was compared with other private texts than `private` under the same `task` key."""
    ours = [_private_digest(private)]
    if kept.get(f"private@{task}") == ours:
        return dict(kept)
    return {**{k: v for k, v in kept.items() if not k.endswith(f"@{task}")}, f"private@{task}": ours}


def forget_if_changed(run_dir: Path, task: str, private: set[str]) -> None:
    """Where the private texts changed since a comparison (the file edited in place), what was compared with
    the old ones no longer counts — also when this run compares nothing (a generated or unreadable public set)."""
    before = checked(run_dir)
    if f"private@{task}" in before and _current(before, task, private) != before:
        artifacts.write_json(run_dir / CHECKED, _current(before, task, private))


def keep_compared(run_dir: Path, texts: list[str], task: str, private: set[str]) -> None:
    """Add the public `texts` compared with `private` (the data `task` names) to CHECKED. Where the private
    texts changed since an earlier comparison (the file edited in place), what was compared with the old
    ones no longer counts."""
    before = checked(run_dir)
    kept = _current(before, task, private)
    mine = {_fingerprint(t) for t in texts}
    kept[f"public@{task}"] = sorted(set(kept.get(f"public@{task}", [])) | mine)
    kept[f"shared@{task}"] = sorted(set(kept.get(f"shared@{task}", [])) | (mine & private))
    if kept != before:
        artifacts.write_json(run_dir / CHECKED, kept)


def check_compared(run_dir: Path, texts: list[str], task: str, log) -> bool:
    """`check` the public `texts` as against the private data, from CHECKED alone: False where some were never
    compared with it. Every text compared is kept with whether it was found, so any set of them — another
    size, pool or pick of the same source — gets the verdict a comparison with the private data would give."""
    kept = checked(run_dir)
    if not {_fingerprint(t) for t in texts} <= set(kept.get(f"public@{task}", [])):
        return False
    check("the public set", "public.source", texts, set(kept.get(f"shared@{task}", [])), log)
    return True


def check_run(ctx, stages: list[str]) -> None:
    """A run that tunes: the public set and the distillation corpus it (or a later `post transfer`) trains on
    are not the private data — compared here, where the private data is open anyway — and kept as compared."""
    from engine.data.generated import GENERATED
    from engine.distill import corpus_texts
    cfg = ctx.config
    if cfg.task.source == "smoke":  # made-up sentences, repeated across its splits by design: nothing private
        return
    owner_reads = []  # every run that tunes checks them, whichever stages it runs: `post tune` alone, then
    # `post transfer` (which never opens the private data) would otherwise train on them unchecked
    if cfg.public.source != GENERATED:
        owner_reads.append(("the public set", "public.source", "transfer", lambda: public_texts(cfg)))
    if cfg.student_source == "distilled":
        owner_reads.append(("the distillation corpus", "distill.corpus", "distill", lambda: corpus_texts(cfg)))
    task = compared_with(cfg.task, cfg.runtime.seed)
    kept_before = f"private@{task}" in checked(ctx.run_dir)
    private = private_texts(cfg.task, cfg.runtime.seed) if owner_reads or kept_before else set()
    if kept_before:  # first, whatever follows: a refused or uncompared set leaves no stale verdict behind
        forget_if_changed(ctx.run_dir, task, private)
    for what, key, reader, read in owner_reads:
        try:
            texts = read()
        except PostError as err:
            if reader in stages:
                raise  # this run's `reader` stage reads it: its own error, now
            ctx.log(f"{what} ({key}) not compared with the private data: it cannot be read here ({err})", "warning")
            continue
        check(what, key, texts, private, ctx.log)
        if key == "public.source":  # what `post transfer` alone reads; the corpus is the distillation's, run with the tune
            keep_compared(ctx.run_dir, texts, task, private)


def public_texts(cfg) -> list[str]:
    """Every text the transfer may read from the public set (the pool, where it picks)."""
    from engine.data.tasks import public_rows
    return [str(r.get(f)) for r in public_rows(cfg.public, cfg.runtime.seed) for f in cfg.public.text_fields
            if r.get(f) is not None]


def check_transfer_alone(ctx) -> None:
    """A transfer run without the tune trains only on a public set that a run which tuned compared with the
    private data: `post transfer` never opens it, so a `--set public.source` since would go unchecked."""
    from engine.data.generated import GENERATED
    from engine.parties import WITHHELD, users_folder
    cfg = ctx.config
    owners = cfg.task.source == WITHHELD and not users_folder(ctx.run_dir)  # by the folder, not a --set
    if owners or cfg.task.source == "smoke" or cfg.public.source == GENERATED:
        return  # the owner's folder holds no private data; the smoke task has none; a generated set is the model's
    if cfg.task.source == WITHHELD:
        raise PostError(f"{ctx.run_dir} is a user's run folder (its prompt was tuned there on private data): "
                        f"task.source = \"{WITHHELD}\" is the owner's folder's — remove that --set")
    if not check_compared(ctx.run_dir, public_texts(cfg), compared_with(cfg.task, cfg.runtime.seed), ctx.log):
        raise PostError(f"the public set (public.source = {cfg.public.source!r}, split {cfg.public.split!r}, size "
                        f"{cfg.public.size}) has not been compared with this run's private data, and the transfer never "
                        f"opens it: run `post run --resume {ctx.run_dir}` with the same --set instead (it compares them, "
                        "keeps the finished stages whose inputs are unchanged and runs the transfer; a private file "
                        "changed since the tune trains the prompt again, under DP spending ε again)")
