"""The diagnostics line: the checks run on the public set before the transfer (engine.diagnostics).

Before they arrive it says when they will; then one line per check, warnings in yellow with what
to change. Only renders what the `Diagnostics` event carried: nothing is computed here.
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
            for check in event.checks:
                warn = check.get("status") == "warning"
                text.append("\n  ")
                text.append("warning " if warn else "ok ", style="bold yellow" if warn else "green")
                text.append(f"{check.get('name', '?')}: ", style="bold")
                text.append(check.get("message", ""), style="yellow" if warn else "dim")
        self.set_class(self.warnings > 0, "-warning")
        self.plain = text.plain
        self.update(text)
