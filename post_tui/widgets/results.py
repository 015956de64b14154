"""The end of a run: the paper-style results table, minutes per stage, and where the artifacts are."""
from __future__ import annotations

import os

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from engine import methods
from post_tui.render import METHOD_ORDER
from post_tui.widgets.state import RunState

LABELS = {name: method.label for name, method in methods.METHODS.items()}


def accuracy_table(results: dict) -> Table:
    acc = results.get("accuracy", {}) or {}
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False, pad_edge=False)
    table.add_column("method", no_wrap=True)
    table.add_column("test acc %", justify="right", no_wrap=True)
    best = max(acc.values()) if acc else None
    for name in METHOD_ORDER:
        if name in acc:
            style = "bold green" if name == "post" else ("green" if acc[name] == best else "")
            table.add_row(Text(LABELS.get(name, name), style="bold" if name == "post" else ""),
                          Text(f"{100 * acc[name]:.2f}", style=style))
    gap = results.get("gap_closed")
    table.add_row(Text("gap closed", style="bold"), "—" if gap is None else f"{gap:.2f}")
    return table


def minutes_table(results: dict) -> Table:
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False, pad_edge=False)
    table.add_column("stage", no_wrap=True)
    table.add_column("minutes", justify="right", no_wrap=True)
    seconds = results.get("seconds", {}) or {}
    for stage, secs in seconds.items():
        table.add_row(stage, f"{(secs or 0) / 60:.1f}")
    table.add_row(Text("total", style="bold"), f"{sum(v or 0 for v in seconds.values()) / 60:.1f}")
    return table


class ResultsView(Static):
    DEFAULT_CSS = "ResultsView { height: auto; }"

    def __init__(self, **kwargs) -> None:
        super().__init__("no results yet", **kwargs)
        self.plain = ""

    def show(self, state: RunState) -> None:
        results = state.results
        if not results:
            message = state.error or "no results yet: they appear when the eval stage has run"
            self.plain = message
            self.update(Text(message, style="red" if state.error else "dim"))
            return
        privacy = results.get("privacy")
        private = ("not private" if not privacy else
                   f"ε {privacy.get('epsilon', 0):.2f} (target {privacy.get('target_epsilon')}), δ {privacy.get('delta', 0):.2g}")
        side = [minutes_table(results), Text.assemble(("privacy ", "bold"), private)]
        run_dir = state.run_dir or (os.path.dirname(state.results_path) if state.results_path else "")
        where = Text.assemble(("run folder ", "bold"), run_dir or "?")
        arts = Text()
        for stage, what, path in list(state.artifacts)[-12:]:
            rel = os.path.relpath(path, run_dir) if run_dir and path.startswith(str(run_dir)) else path
            arts.append(f"\n{what}: ", style="dim")
            arts.append(rel)
        layout = Table.grid(padding=(0, 3))
        layout.add_column()
        layout.add_column()
        layout.add_row(accuracy_table(results), Group(*side))
        large = results.get("large", "?")
        head = Text.assemble((f"{results.get('preset', state.preset)}", "bold"), f" · task {results.get('task')}",
                             f" · {results.get('test_examples', '?')} test examples · large {large}")
        self.update(Group(head, layout, where, arts))
        names = [LABELS.get(n, n) for n in METHOD_ORDER if n in (results.get("accuracy") or {})]
        self.plain = " ".join(["results", *names, "gap closed", "minutes per stage", private, run_dir or ""])
