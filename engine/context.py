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
    device = torch.device(name)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        from engine.errors import PostError
        raise PostError(f"runtime.device={name} but this machine has {torch.cuda.device_count()} CUDA device(s), "
                        f"numbered from 0: use auto, cuda or cuda:0")
    return device


FAST_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of CPUs with bf16 matrix units


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def pick_dtype(name: str, device: torch.device) -> tuple[str, str]:
    """runtime.dtype → (compute dtype, why). "auto": bfloat16 where the device computes it fast
    (CUDA with bf16 support, CPUs with AMX or AVX-512-BF16), float32 otherwise."""
    if name != "auto":
        return name, f"runtime.dtype = {name}"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bfloat16", f"{torch.cuda.get_device_name(device)} computes bf16"
        return "float32", f"{torch.cuda.get_device_name(device)} has no fast bf16"
    if device.type == "cpu":
        fast = sorted(set(FAST_BF16_CPU_FLAGS) & cpu_flags())
        if fast:
            return "bfloat16", f"the CPU has {', '.join(fast)}"
        return "float32", "the CPU has neither AMX nor AVX-512-BF16"
    return "float32", f"{device.type}: no bf16 check, float32"


@dataclass
class RunContext:
    config: RunConfig
    run_dir: Path
    bus: EventBus = field(default_factory=EventBus)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    cache: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.device = pick_device(self.config.runtime.device)
        self.dtype, self.dtype_reason = pick_dtype(self.config.runtime.dtype, self.device)
        # "auto" with bf16 also stores the frozen models' weights in bf16 (half the memory);
        # prompts, and a student in training, stay float32. An explicit "bfloat16" is autocast only.
        auto_bf16 = self.config.runtime.dtype == "auto" and self.dtype == "bfloat16"
        self.frozen_dtype = torch.bfloat16 if auto_bf16 else torch.float32

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
