"""The privacy ledger: every release computed from one private data set, composed.

The ledger lives on the user's machine only (`$POST_LEDGER`, default
`$XDG_DATA_HOME/post/ledger`, i.e. `~/.local/share/post/ledger`): it is never a cache and never
cleaned. It is keyed by the *content* of the private training data (every row's text fields
and label, order-free), not by a path or a run folder, so copying a run folder, re-running a
stage, or renaming the file changes nothing, and changing one byte makes a new entry.

A key is one training set, but privacy is lost per example: another seed carves another training
split from the same file, a shuffled or edited file is another set with most rows the same. So every
data set keeps its rows' fingerprints (`<data key>/rows.txt`) and its text values' (`texts.txt`: the same
rows read with another label field or a text field more), and the ε of a data set is composed over the
releases of every data set that shares a row or a text with it (`linked`): a row in both was in both sets'
releases. That over-counts for the rows not shared — never under-counts.

One file per release (`<data key>/<release id>.json`, written atomically): a DP tune or DP
full PT records its (σ, q, steps) history — updated before every step together with the run's
journal, so a crash can only over-count — and a non-DP use records ε = ∞. The composed ε of the
data is Opacus' accountant over the concatenated histories of all its releases, at the smallest
δ any of them used. `privacy.budget` (a lifetime ε for the data) refuses a run that would exceed
it before it starts.

Runs at the same time on the same data: the budget check and the new entry are one step under the
ledger's lock (`.lock`: one for the whole ledger, since data sets that share rows compose), and an
entry records the steps its run *plans* (and its pid and host). A budget check counts a run still in progress at its plan, not at the steps it has taken so
far — two runs that each fit the budget alone but not together are not both let through. The ε that
is reported (certificates, `post privacy ledger`) is always the steps actually taken.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from engine import artifacts
from engine.errors import PostError
from engine.privacy import accounting

try:
    import fcntl
except ImportError:  # pragma: no cover — not POSIX: checks are not serialised across processes
    fcntl = None


def root() -> Path:
    configured = os.environ.get("POST_LEDGER", "").strip()
    if configured:
        return Path(configured).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME", "").strip() or str(Path.home() / ".local" / "share")
    return Path(data_home) / "post" / "ledger"


ROWS = "rows.txt"  # a data set's row fingerprints, sorted, one per line: how data sets sharing rows are found
TEXTS = "texts.txt"  # the same for each text value on its own: the rows read through other fields or labels
_FINGERPRINT = 16    # hex digits of a row's sha256: collisions among 10^6 rows have probability ~10^-8


def _row_line(row: dict, fields: list[str]) -> str:
    return json.dumps([str(row.get(f)) for f in fields], ensure_ascii=False)


def data_key(rows: list[dict], fields: list[str]) -> str:
    """Content hash of the private training rows (the listed fields of every row, order-free)."""
    lines = sorted(_row_line(row, fields) for row in rows)
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest()[:24]


def row_fingerprints(rows: list[dict], fields: list[str]) -> list[str]:
    """One short hash per distinct row (the same fields as the key), sorted."""
    return sorted({hashlib.sha256(_row_line(row, fields).encode("utf-8")).hexdigest()[:_FINGERPRINT] for row in rows})


def text_fingerprints(rows: list[dict], text_fields: list[str]) -> list[str]:
    """One short hash per text value that only one row of the data holds, whichever field holds it, sorted. A
    row's fingerprint covers the fields a config reads; the same rows read with another label field, a text
    field more, or labels written otherwise ("1" / "1.0") are other rows, but share these. A value several
    rows hold (a topic, a source, a template's hypothesis) names no example: it would link unrelated data."""
    counts = Counter(str(row.get(f)) for row in rows for f in text_fields if row.get(f) is not None and str(row.get(f)))
    return sorted({hashlib.sha256(b"text\0" + v.encode("utf-8")).hexdigest()[:_FINGERPRINT]
                   for v, n in counts.items() if n == 1})


def _task_rows(task_cfg, seed: int) -> tuple[list[dict], list[str]]:
    from engine.data.sources import read_split
    rows = read_split(task_cfg.source, task_cfg.train_split, task_cfg.subset, seed)
    return rows, [*task_cfg.text_fields, task_cfg.label_field]


def task_key(task_cfg, seed: int) -> str:
    """The ledger key of a task config's training data (the source's whole train split)."""
    return data_key(*_task_rows(task_cfg, seed))


def register_task(task_cfg, seed: int) -> str:
    """The key of a task's training data, with its rows' fingerprints written beside its entries (once:
    the key is their content), so that later data sets sharing rows with it are linked to it."""
    rows, fields = _task_rows(task_cfg, seed)
    key = data_key(rows, fields)
    folder = root() / key
    for name, fingerprints in ((ROWS, lambda: row_fingerprints(rows, fields)),
                               (TEXTS, lambda: text_fingerprints(rows, list(task_cfg.text_fields)))):
        if not (folder / name).is_file():  # texts.txt: also added to a data set of a post that kept rows only
            folder.mkdir(parents=True, exist_ok=True)
            artifacts.write_text(folder / name, "".join(f"{f}\n" for f in fingerprints()))
            _read.pop(folder / name, None)
    return key


_read: dict[Path, frozenset] = {}  # rows.txt / texts.txt never change once written (the folder's name is its content)
_shared: dict[tuple[Path, Path], bool] = {}  # so whether two data sets share a row is decided once per process


def _rows_of(key: str, name: str = ROWS) -> frozenset | None:
    """A data set's row (or text) fingerprints; None for a folder without them (written before post kept them)."""
    path = root() / key / name
    if path in _read:
        return _read[path]
    if not path.is_file():
        return None
    try:
        lines = path.read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError) as err:
        raise PostError(f"{path}: unreadable ({err}); it links this data set to others that share its rows, so "
                        "composing without it could under-report ε: restore it from a backup") from None
    if any(len(line) != _FINGERPRINT or any(c not in "0123456789abcdef" for c in line) for line in lines):
        raise PostError(f"{path} is damaged (a line is not a row fingerprint); it links this data set to others "
                        "that share its rows, so composing without it could under-report ε: restore it from a backup")
    _read[path] = frozenset(lines)
    return _read[path]


def linked(key: str) -> list[str]:
    """`key` and every other data set of the ledger that shares a row with it, `key` first. Data sets
    without fingerprints (written before post kept them) are linked to nothing until used again."""
    if not _rows_of(key) or not root().is_dir():
        return [key]
    others = sorted(p.name for p in root().iterdir() if p.is_dir() and p.name != key)
    return [key, *(k for k in others if _share_rows(key, k))]


def _share_rows(key: str, other: str) -> bool:
    """Whether two data sets share a row; asked before every DP step (the ε shown), so answered once."""
    pair = (root() / key, root() / other)
    if pair not in _shared:
        theirs = _rows_of(other)
        if theirs is None:  # no fingerprints yet: not linked, and asked again (they may be written later)
            return False
        if not _rows_of(key).isdisjoint(theirs):
            _shared[pair] = True
        else:  # the same rows read through other fields share their texts
            texts, their_texts = _rows_of(key, TEXTS), _rows_of(other, TEXTS)
            if texts is None or their_texts is None:  # texts.txt not written yet: asked again
                return False
            _shared[pair] = not texts.isdisjoint(their_texts)
    return _shared[pair]


def entries(key: str) -> list[dict]:
    """Every release recorded for `key`, oldest first. A damaged entry is refused, never skipped:
    skipping it would under-report ε."""
    folder = root() / key
    if not folder.is_dir():
        return []
    out = [_read_entry(path) for path in sorted(folder.glob("*.json"))]
    return sorted(out, key=lambda e: e.get("started", ""))


def _read_entry(path: Path) -> dict:
    """A ledger entry, its fields checked: a wrong type would stop the composition in a traceback (or, a step count
    below zero, under-report ε) in every later DP run on this data and in `post privacy ledger`."""
    try:
        record = artifacts.read_json_dict(path, "privacy ledger entry")
    except artifacts.DamagedArtifact:
        record, problem = None, "not a JSON object"
    else:
        problem = _entry_problem(record)
    if problem:
        raise PostError(f"{path}: damaged privacy ledger entry ({problem}); it records ε already spent on this data, "
                        "so DP runs on it are refused until it is restored from a backup (deleting it would "
                        "under-report ε)") from None
    return record


def _entry_problem(record: dict) -> str:
    """What is wrong with a ledger entry's fields ("" when nothing is)."""
    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)
    if not isinstance(record.get("started", ""), str) or not isinstance(record.get("release", ""), str):
        return "release and started are texts"
    if not isinstance(record.get("private"), bool):
        return "private is true or false"
    for field in ("history", "planned"):
        value = record.get(field)
        if value is None and field == "planned":
            continue
        if not isinstance(value, list) or not all(isinstance(h, list) for h in value):
            return f"{field} is a list of [noise_multiplier, sample_rate, steps]"
        try:
            accounting.normalize_history(value)
        except (PostError, TypeError, ValueError):
            return f"{field} is a list of [noise_multiplier, sample_rate, steps] with σ > 0, 0 < q ≤ 1, whole steps ≥ 0"
    delta = record.get("delta")
    if delta is not None and not (number(delta) and 0 < delta < 1):
        return "delta is a number in (0, 1)"
    epsilon = record.get("epsilon")
    if epsilon is not None and epsilon != "inf" and not (number(epsilon) and epsilon >= 0):
        return "epsilon is a number ≥ 0, \"inf\" or null"
    return ""


def entry(key: str, release: str) -> dict | None:
    """One release's entry; None when the ledger has none (a damaged one is refused, as in `entries`)."""
    path = root() / key / f"{release}.json"
    if not path.is_file():
        return None
    return _read_entry(path)


@contextmanager
def reserving(key: str):
    """One budget check and new entry at a time in the whole ledger, across processes (data sets that
    share rows compose, so one lock per data set would let two of them through; a check takes
    milliseconds: the lock is waited for, not refused)."""
    (root() / key).mkdir(parents=True, exist_ok=True)
    with open(root() / ".lock", "a+", encoding="utf-8") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes, or its process dies
        yield


def in_progress(entry: dict) -> bool:
    """A private release whose run has not finished and whose process is alive (another host's: assumed
    alive — it cannot be asked, and assuming so can only over-count a budget check)."""
    if entry.get("finished") or not entry.get("private") or not isinstance(entry.get("pid"), int):
        return False
    return entry.get("host") != socket.gethostname() or artifacts.pid_alive(entry["pid"])


def _counted(entry: dict, reserved: bool) -> list:
    """The entry's history; for a budget check (`reserved`), a run in progress at its planned steps."""
    history = entry.get("history", [])
    planned = entry.get("planned") or []
    if reserved and in_progress(entry) and sum(int(h[2]) for h in planned) > sum(int(h[2]) for h in history):
        return planned
    return history


def composed(key: str, exclude: str | None = None, extra_history: list | None = None,
             extra_delta: float | None = None, reserved: bool = False) -> dict:
    """{"epsilon", "delta", "steps", "releases", "data_sets"} over every release of `key` and of the data
    sets linked to it (but `exclude`), plus `extra_history` (a run about to start); ε = ∞ when any release
    was not private. With `reserved` (budget checks) runs in progress count at their planned steps."""
    keys = linked(key)
    found = [e for k in keys for e in entries(k) if e.get("release") != exclude]
    deltas = [e["delta"] for e in found if e.get("private") and e.get("delta")] + ([extra_delta] if extra_delta else [])
    history = [h for e in found if e.get("private") for h in _counted(e, reserved)] + list(extra_history or [])
    delta = min(deltas) if deltas else None
    public = any(not e.get("private") for e in found)
    if public:
        eps = math.inf
    elif history and delta:
        accountant = "rdp"  # RDP composes any mix of (σ, q) histories; PRV entries are recomposed with it
        eps = accounting.epsilon(history, delta, accountant)
    else:
        eps = 0.0
    return {"epsilon": eps, "delta": delta, "steps": sum(int(h[2]) for h in history), "releases": len(found),
            "data_sets": len(keys)}


def new_release_id() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"


class Release:
    """One release being made: its ledger entry, rewritten (atomically) as its history grows."""

    def __init__(self, key: str, release: str, record: dict):
        self.key, self.release, self.record = key, release, record

    @property
    def path(self) -> Path:
        return root() / self.key / f"{self.release}.json"

    @classmethod
    def start(cls, key: str, *, private: bool, stage: str, run_dir: Path, release: str | None = None,
              **fields) -> "Release":
        """A new entry (or the one a resumed stage continues, given its id)."""
        release = release or new_release_id()
        fields = {**fields, "pid": os.getpid(), "host": socket.gethostname()}  # whose run it is, while it runs
        record = {"release": release, "data": key, "private": private, "stage": stage,
                  "run_dir": str(Path(run_dir).resolve()), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "epsilon": None if private else "inf", "history": [], **fields}
        existing = root() / key / f"{release}.json"
        if existing.is_file():
            record = {**artifacts.read_json_dict(existing, "privacy ledger entry"), **fields}
        entry = cls(key, release, record)
        entry.save()
        return entry

    def update(self, history: list, epsilon: float | None = None, **fields) -> None:
        self.record.update(history=[list(h) for h in history], steps=sum(int(h[2]) for h in history), **fields)
        if epsilon is not None:
            self.record["epsilon"] = epsilon
        self.save()

    def save(self) -> None:
        artifacts.write_json(self.path, self.record)


def check_budget(key: str, budget: float | None, planned_history: list, delta: float,
                 exclude: str | None = None) -> dict:
    """Refuse (PostError) a run whose planned steps would take the data past its lifetime budget."""
    after = composed(key, exclude=exclude, extra_history=planned_history, extra_delta=delta, reserved=True)
    if budget is not None and after["epsilon"] > budget:
        before = composed(key, exclude=exclude, reserved=True)
        spent = "∞ (a release without DP)" if math.isinf(before["epsilon"]) else f"{before['epsilon']:.3f}"
        running = sum(1 for k in linked(key) for e in entries(k) if e.get("release") != exclude and in_progress(e))
        also = f" ({running} of them still running, counted at their planned steps)" if running else ""
        shared = (f" on this data and {before['data_sets'] - 1} data set(s) sharing rows with it"
                  if before["data_sets"] > 1 else "")
        raise PostError(f"privacy.budget ε={budget:g} for this data would be exceeded: {before['releases']} earlier "
                        f"release(s){shared}{also} spent ε={spent}, this run would bring it to ε={after['epsilon']:.3f}; "
                        f"see post privacy ledger {key[:12]}")
    return after


def describe_epsilon(value) -> str:
    return "∞" if value is None or (isinstance(value, float) and math.isinf(value)) or value == "inf" else f"{value:.3f}"
