"""What every stage needs: the config, the run folder, the event bus, and loaded things.

Models and data are loaded once per run and shared by the stages (the full pipeline never
loads the large model twice).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from engine.config import RunConfig
from engine.events import ArtifactSaved, EventBus, Event, Log


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        from engine.errors import PostError
        raise PostError(f"runtime.device={name} but no CUDA device is available here: use auto or cpu")
    return torch.device(name)


@dataclass
class RunContext:
    config: RunConfig
    run_dir: Path
    bus: EventBus = field(default_factory=EventBus)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    cache: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.device = pick_device(self.config.runtime.device)
        self.dtype = self.config.runtime.dtype

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def emit(self, event: Event) -> None:
        self.bus.emit(event)

    def log(self, message: str, level: str = "info") -> None:
        self.bus.emit(Log(message=message, level=level))

    def stage_dir(self, stage: str) -> Path:
        path = self.run_dir / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    def saved(self, stage: str, path: Path, what: str) -> None:
        self.emit(ArtifactSaved(stage=stage, path=str(path), what=what))

    def once(self, key: str, make):
        """Load something once per run."""
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]
