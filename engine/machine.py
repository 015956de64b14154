"""Which machine computed a result. Float results differ in the last digits between CPUs' vector units
(AMX bf16 tiles, AVX-512, AVX2, NEON/SVE kernels) and a trained student diverges from there, so every stage
record and benchmark report names the box: two results from different kinds of box are not a paired
comparison, and a resumed run whose stages ran on several says so."""
from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

VECTOR_UNITS = ("amx_bf16", "avx512f", "avx2", "sve2", "sve", "asimd")
# /proc/cpuinfo names the CPU under different keys by architecture (x86: "model name"; ARM64 and others
# leave it out and give a part number, a board or a core name): the first one present is the name.
NAME_KEYS = ("model name", "cpu model", "Hardware", "uarch", "cpu", "CPU part")


def cpu_identity(cpuinfo: str, arch: str = "") -> dict:
    """The CPU's name and which of VECTOR_UNITS it has, from /proc/cpuinfo's text ({} where it says nothing).
    `cpu_units` is left out where the text lists no features at all (nothing known, not "none")."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:  # the first processor's entry stands for the box
            fields[key.strip()] = value.strip()
    if not fields:
        return {}
    key = next((key for key in NAME_KEYS if fields.get(key)), None)
    name = fields[key] if key else arch or "unknown CPU"
    if key not in (None, "model name", "cpu model") and arch:  # a part number or board: say the architecture
        name = f"{name} ({arch})"
    flags = fields.get("flags") or fields.get("Features")  # x86 / ARM
    found = {"cpu": name}
    if flags is not None:
        found["cpu_units"] = [unit for unit in VECTOR_UNITS if unit in flags.split()]
    return found


@functools.lru_cache(maxsize=1)
def _cpu() -> dict:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:  # not Linux: the platform string is all there is
        return {}
    return cpu_identity(text, platform.machine())


def describe() -> dict:
    """This process's machine: platform, Python, torch, CPU count and threads, CPU name and vector units, GPU."""
    import torch
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), **_cpu()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def label(info: dict | None) -> str | None:
    """The kind of machine in one phrase (its GPU, else its CPU and vector units); None where not recorded."""
    info = info or {}
    if info.get("gpu"):
        return str(info["gpu"])
    if not info.get("cpu"):
        return None
    units = info.get("cpu_units")
    return f"{info['cpu']} ({', '.join(units) if units else 'no listed vector unit'})" if units is not None \
        else f"{info['cpu']} (vector units not recorded)"


def report_kinds(report: dict) -> list[str]:
    """The kinds of machine a suite row report names: those its stages ran on (`machines`), else its eval's
    (`machine`); [] where it records none (reports written before rows named their machine)."""
    if report.get("machines"):
        return list(report["machines"])
    one = label(report.get("machine"))
    return [one] if one else []
