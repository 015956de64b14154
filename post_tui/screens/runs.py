"""Past runs in the runs folder, with their results; open one to see its curves and table again."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from post_tui.widgets.state import is_run_folder, run_summary

STATUS_STYLE = {"finished": "green", "failed": "red", "cancelled": "yellow", "incomplete": "yellow"}


def find_runs(runs_dir: Path) -> list[dict[str, Any]]:
    """Run folders directly under runs_dir (or runs_dir itself), newest first."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    folders = [runs_dir] if is_run_folder(runs_dir) else [p for p in runs_dir.iterdir() if is_run_folder(p)]
    return sorted((run_summary(p) for p in folders), key=lambda r: r["time"], reverse=True)


def _acc(results: dict | None, name: str) -> str:
    value = ((results or {}).get("accuracy") or {}).get(name)
    return "—" if value is None else f"{100 * value:.1f}"


def _cells(run: dict[str, Any]) -> tuple:
    """One row of the runs list."""
    results = run["results"]
    gap = (results or {}).get("gap_closed")
    privacy = (results or {}).get("privacy")
    private = "—" if results is None else ("off" if not privacy else f"ε {privacy.get('epsilon', 0):.2f}")
    return (Text(run["name"], style="bold"), Text(run["status"], style=STATUS_STYLE.get(run["status"], "")),
            _acc(results, "post"), _acc(results, "full_pt"), _acc(results, "full_zs"),
            "—" if gap is None else f"{gap:.2f}", private,
            time.strftime("%Y-%m-%d %H:%M", time.localtime(run["time"])) if run["time"] else "")


class RunsScreen(Screen):
    BINDINGS = [
        Binding("enter", "open", "Open", priority=True),
        Binding("r", "refresh", "Refresh"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, runs_dir: Path) -> None:
        super().__init__()
        self.runs_dir = Path(runs_dir)
        self.runs: dict[str, dict[str, Any]] = {}

    def compose(self) -> ComposeResult:
        yield Static(Text.assemble((" POST ", "bold reverse"), "  past runs in ", (str(self.runs_dir), "bold")),
                     id="title")
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Static("", id="detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#runs", DataTable)
        table.add_columns("run", "status", "POST", "full PT", "full ZS", "gap", "privacy", "when")
        table.focus()
        self.action_refresh()

    def action_refresh(self) -> None:
        self.query_one("#detail", Static).update(Text("reading the runs folder…", style="dim"))
        self._scan()

    @work(thread=True, exclusive=True, group="scan", exit_on_error=False)
    def _scan(self) -> None:
        try:
            runs = find_runs(self.runs_dir)
        except OSError as err:
            self.app.call_from_thread(self.notify, f"cannot read {self.runs_dir}: {err}", severity="error")
            runs = []
        self.app.call_from_thread(self._fill, runs)

    def _fill(self, runs: list[dict[str, Any]]) -> None:
        table = self.query_one("#runs", DataTable)
        table.clear()
        self.runs = {}
        for run in runs:
            self.runs[run["path"]] = run
            try:
                cells = _cells(run)
            except (AttributeError, TypeError, ValueError, KeyError):  # a results.json of another shape: listed,
                run = {**run, "results": None, "status": "damaged"}       # not the end of the list
                self.runs[run["path"]] = run
                cells = _cells(run)
            table.add_row(*cells, key=run["path"])
        if not runs:
            self.query_one("#detail", Static).update(
                Text(f"no runs in {self.runs_dir} yet: run a preset (or post-tui --runs-dir DIR)", style="dim"))
        else:
            self._show(runs[0]["path"])

    @property
    def selected(self) -> str | None:
        table = self.query_one("#runs", DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value in self.runs:
            self._show(event.row_key.value)

    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def _show(self, path: str) -> None:
        run = self.runs[path]
        results = run["results"] or {}
        text = Text()
        text.append(run["path"], style="bold")
        text.append(f"\npreset {run['preset'] or '?'} · {run['status']}")
        if results:
            text.append(f" · task {results.get('task')} · large {results.get('large')}")
            secs = results.get("seconds") or {}
            text.append("\nminutes " + ", ".join(f"{k} {(v or 0) / 60:.1f}" for k, v in secs.items()))
        self.query_one("#detail", Static).update(text)

    def action_open(self) -> None:
        path = self.selected
        if path is not None:
            self.app.open_run(Path(path))

    def action_back(self) -> None:
        self.app.pop_screen()
