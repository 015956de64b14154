"""Typed events: the only way the engine talks to a UI.

Stages emit events on an `EventBus`; the CLI, the TUI and the run folder's `events.jsonl`
are all just subscribers. Nothing here knows how events are drawn.
"""
from __future__ import annotations

import dataclasses
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class Event:
    time: float = field(default_factory=time.time, kw_only=True)

    @property
    def kind(self) -> str:
        return type(self).__name__

    def to_json(self) -> dict[str, Any]:
        return {"event": self.kind, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class RunStarted(Event):
    run_dir: str
    preset: str
    stages: list[str]


@dataclass(frozen=True)
class StageStarted(Event):
    stage: str
    total_steps: int | None = None
    description: str = ""


@dataclass(frozen=True)
class StageFinished(Event):
    stage: str
    seconds: float
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StageFailed(Event):
    stage: str
    message: str


@dataclass(frozen=True)
class Metric(Event):
    stage: str
    step: int
    name: str
    value: float


@dataclass(frozen=True)
class Progress(Event):
    """Steps done in the current stage, with throughput (tokens/s) and step time."""
    stage: str
    step: int
    total_steps: int | None
    tokens_per_s: float | None = None
    step_seconds: float | None = None


@dataclass(frozen=True)
class PrivacySpent(Event):
    epsilon: float
    target_epsilon: float | None
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    accountant: str
    stage: str = "tune"
    # the privacy ledger (user side): ε composed over every release on this training data so far,
    # this one included; inf when the data was ever used without DP; None when not known
    ledger_epsilon: float | None = None
    ledger_releases: int | None = None


@dataclass(frozen=True)
class MemorySample(Event):
    rss_mib: float
    total_mib: float
    devices: list[dict[str, Any]] = field(default_factory=list)  # per GPU: name, allocated/reserved/used/total MiB


@dataclass(frozen=True)
class RanksSample(Event):
    """Every process's memory and throughput, gathered on rank 0 (engine.ranks): one dict per rank with
    rank, host, rss_mib / peak_rss_mib / total_mib (host), and on CUDA device, allocated_mib /
    reserved_mib / peak_allocated_mib (torch, this process) and used_mib / gpu_total_mib (NVML, the
    whole device); tokens_per_s of the rank's own share since the previous sample. `final`: the stage's end."""
    stage: str
    ranks: list[dict[str, Any]] = field(default_factory=list)
    final: bool = False


@dataclass(frozen=True)
class ArtifactSaved(Event):
    stage: str
    path: str
    what: str


@dataclass(frozen=True)
class Diagnostics(Event):
    """Checks on the public set before the transfer (engine.diagnostics): measured values by group,
    and one check per group with status "ok" or "warning" and a sentence saying what to change."""
    values: dict[str, dict[str, float]]
    checks: list[dict[str, str]]
    path: str = ""
    stage: str = "transfer"

    @property
    def warnings(self) -> list[str]:
        return [c["message"] for c in self.checks if c.get("status") == "warning"]


@dataclass(frozen=True)
class Log(Event):
    message: str
    level: str = "info"  # info | warning


@dataclass(frozen=True)
class RunFinished(Event):
    results_path: str
    results: dict[str, Any]


@dataclass(frozen=True)
class RunFailed(Event):
    message: str
    stage: str | None = None


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (RunStarted, StageStarted, StageFinished, StageFailed, Metric, Progress,
                PrivacySpent, MemorySample, RanksSample, ArtifactSaved, Diagnostics, Log, RunFinished, RunFailed)
}


def event_from_json(row: dict[str, Any]) -> Event:
    """Rebuild an event from one `events.jsonl` line (for replaying past runs)."""
    row = dict(row)
    cls = EVENT_TYPES[row.pop("event")]
    return cls(**row)


Subscriber = Callable[[Event], None]


class EventBus:
    """Fan-out of events to subscribers; thread-safe so the TUI can run the engine in a worker."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, fn: Subscriber) -> Subscriber:
        with self._lock:
            self._subscribers.append(fn)
        return fn

    def unsubscribe(self, fn: Subscriber) -> None:
        with self._lock:
            if fn in self._subscribers:
                self._subscribers.remove(fn)

    def emit(self, event: Event) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for fn in subscribers:
            try:
                fn(event)
            except OSError:  # its terminal or pipe is gone (SSH dropped): the run goes on without it
                self.unsubscribe(fn)

    def log(self, message: str, level: str = "info") -> None:
        self.emit(Log(message=message, level=level))


class JsonlWriter:
    """Subscriber that appends every event to a JSON-lines file (flushed per line: a crash loses nothing)."""

    def __init__(self, path: Path) -> None:
        torn = Path(path).is_file() and Path(path).stat().st_size and not _ends_with_newline(Path(path))
        self._file = open(path, "a", encoding="utf-8")
        if torn:  # a writer killed mid-line: end that line so the next event starts on its own
            self._file.write("\n")
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        line = json.dumps(event.to_json(), default=str)
        with self._lock:
            if not self._file.closed:
                self._file.write(line + "\n")
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, 2)
        return f.read(1) == b"\n"


def read_events(path: Path) -> list[Event]:
    """Every event of a JSON-lines log; a line torn by a killed writer is skipped."""
    events = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                events.append(event_from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                continue
    return events
