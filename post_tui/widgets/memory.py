"""Memory (GPU per device: used/total from NVML, torch allocated/reserved; else process RSS), one line
per process when a run has several, and speed."""
from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from post_tui.widgets import format as fmt
from post_tui.widgets.state import RunState


class MemoryLine(Static):
    DEFAULT_CSS = "MemoryLine { height: auto; }"

    def __init__(self, **kwargs) -> None:
        super().__init__("memory —", **kwargs)
        self.plain = ""

    def show(self, state: RunState) -> None:
        sample = state.memory
        text = Text()
        wide = self.size.width >= 100
        if sample is None:
            text.append("memory ", style="bold")
            text.append("no sample yet", style="dim")
        else:
            for i, dev in enumerate(sample.devices):
                if i:
                    text.append("\n")
                used, total = dev.get("used_mib"), dev.get("total_mib")
                fraction = used / total if used is not None and total else 0.0
                style = "green" if fraction < 0.7 else "yellow" if fraction < 0.9 else "bold red"
                name = dev.get("name", "")
                text.append(f"GPU{dev.get('index', i)} ", style="bold")
                if wide:
                    text.append(f"{name} ")
                text.append(f"{fmt.mib(used)} / {fmt.mib(total)} ", style=style)
                text.append(fmt.bar(fraction, 10 if not wide else 20), style=style)
                text.append(f"  torch alloc {fmt.mib(dev.get('allocated_mib'))} res {fmt.mib(dev.get('reserved_mib'))}")
            if sample.devices:
                text.append("\n")
            fraction = sample.rss_mib / sample.total_mib if sample.total_mib else 0.0
            text.append("RSS " if sample.devices else "memory RSS ", style="bold")
            text.append(f"{fmt.mib(sample.rss_mib)} / {fmt.mib(sample.total_mib)} ")
            text.append(fmt.bar(fraction, 10 if not wide else 20), style="green" if fraction < 0.8 else "red")
        for r in _other_ranks(state):
            text.append("\n")
            text.append(fmt.rank_line(r), style="dim" if r.get("rank") else "")
        if state.speed is not None:
            stage, tokens, seconds = state.speed
            text.append("   ")
            text.append(f"{fmt.rate(tokens)}", style="cyan")
            text.append(f"  {fmt.step_time(seconds)}")
            if wide:
                text.append(f"  ({stage})", style="dim")
        self.plain = text.plain
        self.update(text)


def _other_ranks(state: RunState) -> list[dict]:
    """One line per process when the run has several (engine.ranks); none with one (RSS above says it)."""
    ranks = state.ranks.ranks if state.ranks is not None else []
    return ranks if len(ranks) > 1 else []
