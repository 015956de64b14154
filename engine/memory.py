"""Memory samples for the dashboards: GPU per device (torch + NVML), else process RSS; and one
process's own figures (`process_sample`), which engine.ranks gathers from every rank."""
from __future__ import annotations

import os
import threading

import psutil
import torch

from engine.events import MemorySample

MIB = 1024 * 1024


def _nvml_devices() -> dict[int, dict]:
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception:  # no driver / no library: torch figures only
        return {}
    out = {}
    for i in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(i)
        info = pynvml.nvmlDeviceGetMemoryInfo(handle)
        out[i] = {"used_mib": info.used / MIB, "total_mib": info.total / MIB}
    return out


def sample() -> MemorySample:
    devices = []
    if torch.cuda.is_available():
        nvml = _nvml_devices()
        for i in range(torch.cuda.device_count()):
            entry = {"index": i, "name": torch.cuda.get_device_name(i),
                     "allocated_mib": torch.cuda.memory_allocated(i) / MIB,
                     "reserved_mib": torch.cuda.memory_reserved(i) / MIB}
            if i in nvml:
                entry.update(nvml[i])
            else:
                free, total = torch.cuda.mem_get_info(i)
                entry.update(used_mib=(total - free) / MIB, total_mib=total / MIB)
            devices.append(entry)
    return MemorySample(rss_mib=psutil.Process().memory_info().rss / MIB,
                        total_mib=psutil.virtual_memory().total / MIB, devices=devices)


def process_sample() -> dict:
    """This process's memory: RSS now and at its peak (getrusage), host RAM; on CUDA its own device's
    torch allocated / reserved / peak and the device-wide NVML used / total (when pynvml is importable)."""
    import resource
    import socket
    out = {"host": socket.gethostname(), "rss_mib": psutil.Process().memory_info().rss / MIB,
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
           "total_mib": psutil.virtual_memory().total / MIB}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        i = torch.cuda.current_device()
        out.update(device=f"cuda:{i}", device_name=torch.cuda.get_device_name(i),
                   allocated_mib=torch.cuda.memory_allocated(i) / MIB, reserved_mib=torch.cuda.memory_reserved(i) / MIB,
                   peak_allocated_mib=torch.cuda.max_memory_allocated(i) / MIB)
        nvml = _nvml_devices().get(i)  # index as NVML counts it: CUDA_VISIBLE_DEVICES remaps (then only torch's)
        if nvml is not None and "CUDA_VISIBLE_DEVICES" not in os.environ:
            out.update(used_mib=nvml["used_mib"], gpu_total_mib=nvml["total_mib"])
    else:
        out["device"] = "cpu"
    return out


class MemoryMonitor:
    """Background thread emitting a MemorySample every `every` seconds while a run is alive."""

    def __init__(self, emit, every: float):
        self._emit, self._every = emit, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="post-memory", daemon=True)

    def _loop(self) -> None:
        while True:
            self._emit(sample())
            if self._stop.wait(self._every):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
