"""The diagnostics line: the checks run on the public set before the transfer (engine.diagnostics).

Before they arrive it says when they will; then a head line, and one line per warning with what
to change (all checks ok: the head line alone, so a small terminal keeps its log). Only renders what the `Diagnostics` event carried: nothing is computed here.
"""
from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from post_tui.widgets.state import RunState


class DiagnosticsView(Static):
    DEFAULT_CSS = "DiagnosticsView { height: auto; }"

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.plain = ""
        self.warnings = 0

    def show(self, state: RunState) -> None:
        event = state.diagnostics
        text = Text()
        text.append("diagnostics ", style="bold")
        if event is None:
            text.append("after tune, before the transfer: whether the small prompt has anything to carry", style="dim")
            self.warnings = 0
        else:
            self.warnings = len(event.warnings)
            n = event.values.get("public", {}).get("examples", "?")
            text.append(f"on {n} public inputs: ", style="dim")
            text.append(f"{self.warnings} warning{'s' if self.warnings != 1 else ''}" if self.warnings
                        else "all checks ok", style="bold yellow" if self.warnings else "green")
            passed = [c.get("name", "?") for c in event.checks if c.get("status") != "warning"]
            if passed and self.warnings:
                text.append(f" (ok: {', '.join(passed)})", style="dim")
            for check in event.checks:  # only the warnings get a line: a small terminal keeps its log
                if check.get("status") == "warning":
                    text.append("\n  ")
                    text.append(f"{check.get('name', '?')}: ", style="bold yellow")
                    text.append(check.get("message", ""), style="yellow")
        self.set_class(self.warnings > 0, "-warning")
        self.plain = text.plain
        self.update(text)
