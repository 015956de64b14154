"""Small text formatters shared by the widgets (durations, memory sizes, bars)."""
from __future__ import annotations

import math

STATE_STYLE = {
    "pending": ("·", "dim"),
    "running": ("▶", "bold cyan"),
    "done": ("✓", "green"),
    "reused": ("✓", "green"),
    "partial": ("◐", "yellow"),
    "skipped": ("↷", "dim green"),
    "failed": ("✗", "bold red"),
    "cancelled": ("■", "yellow"),
    "stopped": ("■", "yellow"),
}


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    seconds = int(round(max(0.0, seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def mib(value: float | None) -> str:
    """nvitop style: MiB below 10 GiB, GiB above."""
    if value is None:
        return "?"
    if value >= 10 * 1024:
        return f"{value / 1024:.1f}GiB"
    return f"{value:.0f}MiB"


def bar(fraction: float, width: int) -> str:
    fraction = min(1.0, max(0.0, fraction))
    full = int(round(fraction * width))
    return "█" * full + "░" * (width - full)


def steps(step: int, total: int | None) -> str:
    if total:
        return f"{step}/{total}"
    return str(step) if step else "—"


def rate(tokens_per_s: float | None) -> str:
    if tokens_per_s is None:
        return "— tok/s"
    if tokens_per_s >= 10_000:
        return f"{tokens_per_s / 1000:,.1f}k tok/s"
    return f"{tokens_per_s:,.0f} tok/s"


def step_time(seconds: float | None) -> str:
    if seconds is None:
        return "— /step"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms/step"
    return f"{seconds:.2f} s/step"


def rank_line(r: dict) -> str:
    """One process of a run on several (engine.ranks): its device, memory now / peak, and its speed."""
    parts = [f"rank{r.get('rank', '?')} {r.get('device', 'cpu')}"]
    if r.get("allocated_mib") is not None:
        parts.append(f"torch alloc {mib(r.get('allocated_mib'))} res {mib(r.get('reserved_mib'))} "
                     f"peak {mib(r.get('peak_allocated_mib'))}")
    if r.get("used_mib") is not None:
        parts.append(f"GPU {mib(r.get('used_mib'))} / {mib(r.get('gpu_total_mib'))}")
    parts.append(f"RSS {mib(r.get('rss_mib'))} peak {mib(r.get('peak_rss_mib'))}")
    if r.get("tokens_per_s"):
        parts.append(f"{r['tokens_per_s']:,.0f} tok/s")
    return "  ".join(parts)


def seconds_per_step(first: tuple[float, int] | None, time: float | None, step: int,
                     fallback: float | None) -> float | None:
    """A stage's pace from its first progress event `first` = (time, step) to (`time`, `step`); the last
    step's own seconds until a second event. Not elapsed / step, which counts what came before the first
    step (the teacher's pass before distillation) and the steps a resumed stage had already done."""
    if first is not None and time is not None and step > first[1]:
        return (time - first[0]) / (step - first[1])
    return fallback or None
