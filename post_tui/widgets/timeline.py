"""The stage timeline: distill → tune → full PT → transfer (per method) → eval."""
from __future__ import annotations

from rich import box
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from post_tui.widgets import format as fmt
from post_tui.widgets.state import RunState


class Timeline(Static):
    """One line per stage: state, steps done/total, elapsed, ETA (and a bar when there is room)."""

    DEFAULT_CSS = "Timeline { height: auto; }"

    def __init__(self, **kwargs) -> None:
        super().__init__("waiting for the engine…", **kwargs)
        self.plain = ""

    def show(self, state: RunState) -> None:
        rows = state.rows()
        if not rows:
            text = {"starting": "starting the engine…", "failed": "the run did not start"}.get(state.status, "no stages yet")
            self.plain = text
            self.update(Text(text, style="dim"))
            return
        wide = self.app.size.width >= 120
        table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, expand=False, show_edge=False)
        table.add_column("stage", no_wrap=True)
        table.add_column("state", no_wrap=True)
        table.add_column("steps", justify="right", no_wrap=True)
        if wide:
            table.add_column("progress", no_wrap=True)
        table.add_column("time", justify="right", no_wrap=True)
        table.add_column("ETA", justify="right", no_wrap=True)
        lines = []
        for row in rows:
            icon, style = fmt.STATE_STYLE.get(row.state, ("?", ""))
            state_text = Text(f"{icon} {row.state}", style=style)
            step_text = "—" if row.state in ("reused", "skipped") else fmt.steps(row.step, row.total)
            cells = [Text(row.label, style="dim" if row.sub else "bold"), state_text, step_text]
            if wide:
                fraction = row.step / row.total if row.total else (1.0 if row.state in ("done", "reused") else 0.0)
                cells.append(Text(fmt.bar(fraction, 12), style=style))
            cells += [fmt.duration(row.elapsed), fmt.duration(row.eta) if row.state == "running" else ""]
            table.add_row(*cells)
            lines.append(f"{row.label} {row.state} {step_text} "
                         f"{fmt.duration(row.elapsed)} {fmt.duration(row.eta)}")
        self.plain = "\n".join(lines)
        self.update(table)
