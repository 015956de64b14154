"""The run dashboard: a live run (engine in a worker thread) or a past run replayed from its folder."""
from __future__ import annotations

import json
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import ContentSwitcher, Footer, RichLog, Static

from engine.errors import PostError
from post_tui.messages import EngineEvents, RunEnded, RunLoaded
from post_tui.widgets import format as fmt
from post_tui.widgets.diagnostics import DiagnosticsView
from post_tui.widgets.loss_plot import LossPlot
from post_tui.widgets.memory import MemoryLine
from post_tui.widgets.privacy import PrivacyMeter
from post_tui.widgets.results import ResultsView
from post_tui.widgets.state import WATCH_SECONDS, RunState, load_run, read_config, read_new_events
from post_tui.widgets.timeline import Timeline

REDRAW_SECONDS = 0.5
EXPORT_FOLDER = "peft-post"  # where x writes POST's PEFT adapter, inside the run folder
LOG_STYLE = {"warning": "yellow", "error": "bold red", "info": ""}


def _finished_results(run_dir: Path) -> dict | None:
    path = run_dir / "results.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _stage_outcome(run_dir: Path, stages: list[str]) -> str:
    if stages == ["audit"]:
        from engine.audit.stage import summary_line
        return summary_line(json.loads((run_dir / "audit" / "audit.json").read_text()))
    return f"{', '.join(stages)} finished"


def one_line(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return " ".join(text.split())


class EventPump:
    """Bus subscriber (engine thread) → UI: queue the event, post one EngineEvents if none is pending."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self._events: deque = deque()
        self._lock = threading.Lock()
        self._pending = False

    def __call__(self, event: Any) -> None:
        with self._lock:
            self._events.append(event)
            if self._pending:
                return
            self._pending = True
        self.target.post_message(EngineEvents(self))

    def drain(self) -> list:
        with self._lock:
            events = list(self._events)
            self._events.clear()
            self._pending = False
        return events


class DashboardScreen(Screen):
    """Stage timeline, loss curve, privacy meter, memory, log; the results table at the end."""

    BINDINGS = [
        Binding("c", "cancel", "Cancel run"),
        Binding("r", "resume", "Resume"),
        Binding("t", "toggle_results", "Results/curves"),
        Binding("x", "export", "Export PEFT"),
        Binding("a", "audit", "Audit (LiRA)"),
        Binding("left_square_bracket", "curve(-1)", "◀ stage"),
        Binding("right_square_bracket", "curve(1)", "stage ▶"),
        Binding("f", "follow", "Follow", show=False),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, config: Any = None, out: Path | None = None, run_dir: Path | None = None,
                 resume: bool = False) -> None:
        super().__init__()
        self.config = config
        self.run_stages: list[str] | None = None  # set when one stage (the audit) was started on this dashboard
        self.out = Path(out) if out is not None else None
        self.replay_dir = Path(run_dir) if run_dir is not None else None
        self.resume_on_start = resume
        self.state = RunState(config)
        self.cancel_event = threading.Event()
        self.pinned: str | None = None
        self.view_mode = "curves"
        self._logged = 0

    # ------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield Static("", id="status")
        with Horizontal(id="top"):
            yield Timeline(id="timeline")
            with ContentSwitcher(initial="curves", id="main"):
                yield LossPlot(id="curves")
                with VerticalScroll(id="results"):
                    yield ResultsView(id="results-view")
        yield PrivacyMeter(id="privacy")
        yield DiagnosticsView(id="diagnostics")
        yield MemoryLine(id="memory")
        yield RichLog(id="log", max_lines=500, wrap=True, markup=False, auto_scroll=True)
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(REDRAW_SECONDS, self._tick)
        if self.replay_dir is not None:
            self.state.status = "loading"
            self._load(self.replay_dir)
        elif self.config is not None:
            self.start(self.out, resume=self.resume_on_start)
        self.redraw()

    # ------------------------------------------------------------ the engine
    def start(self, out: Path | None, resume: bool = False, stages: list[str] | None = None) -> None:
        """Run the engine in a worker thread; its events come back as EngineEvents messages."""
        if self.state.active:
            return
        self.state = RunState(self.config)
        self.state.status = "starting"
        self.pinned, self._logged, self.view_mode = None, 0, "curves"
        self.query_one("#log", RichLog).clear()
        self.query_one("#main", ContentSwitcher).current = "curves"
        self.remove_class("-results")
        self.cancel_event = threading.Event()
        self.run_stages = stages  # what r continues: the whole run, or the one stage started here (the audit)
        self._engine(self.config, out, resume, self.cancel_event, stages)
        self.refresh_bindings()

    @work(thread=True, exclusive=True, group="engine", exit_on_error=False)
    def _engine(self, config: Any, out: Path | None, resume: bool, cancel: threading.Event,
                stages: list[str] | None = None) -> None:
        pipeline = None
        try:
            from engine import pipeline
            from engine.events import EventBus
            bus = EventBus()
            bus.subscribe(EventPump(self))
            # a stage run on a finished folder (the audit) runs again when asked, as `post audit RUN` does
            results = pipeline.run(config, bus, out=out, cancel=cancel, resume=resume, stages=stages, force=bool(stages))
            if stages and out is not None:  # the run's own results stay on show; the stage says its outcome
                results = _finished_results(Path(out))
                self.app.call_from_thread(self.notify, _stage_outcome(Path(out), stages), title="POST")
        except BaseException as err:  # every failure becomes one line in the UI; the app stays up
            if pipeline is not None and isinstance(err, pipeline.Cancelled):
                self.post_message(RunEnded("cancelled", "cancelled: the stage saved what it had; r resumes the run"))
            elif isinstance(err, PostError):
                self.post_message(RunEnded("failed", one_line(err)))
            else:
                self.post_message(RunEnded("failed", f"{type(err).__name__}: {one_line(err)}"))
            return
        self.post_message(RunEnded("finished", results=results))

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def _load(self, run_dir: Path) -> None:
        try:
            self.post_message(RunLoaded(load_run(run_dir, follow=True)))
        except Exception as err:  # unreadable folder: say so, keep the app
            self.post_message(RunLoaded(None, f"cannot read {run_dir}: {one_line(err)}"))

    @on(EngineEvents)
    def _on_engine_events(self, message: EngineEvents) -> None:
        kinds = set()
        for event in message.pump.drain():
            self.state.apply(event)
            kinds.add(type(event).__name__)
        if kinds & {"RunStarted", "StageStarted", "StageFinished", "StageFailed", "RunFailed"}:
            self.refresh_bindings()
        if "RunFinished" in kinds:
            self.show_results()

    @on(RunEnded)
    def _on_run_ended(self, message: RunEnded) -> None:
        self.state.end(message.outcome, message.message, message.results)
        if message.outcome == "finished":
            self.show_results()
            self.notify("run finished: the results table is shown (t toggles the curves)", title="POST")
        elif message.outcome == "cancelled":
            self.notify("cancelled; r resumes the run", severity="warning")
        else:
            self.notify(self.state.error or message.message, title="run failed", severity="error", timeout=10,
                        markup=False)
        self.redraw()
        self.refresh_bindings()

    @on(RunLoaded)
    def _on_loaded(self, message: RunLoaded) -> None:
        if message.state is None:
            self.state.status, self.state.error = "failed", message.error
            self.state.log(message.error, "error")
        else:
            self.state = message.state
            self.config = self.state.config
            self._logged = 0
            if self.state.results:
                self.show_results()
            if self.state.status == "watching":  # still written by a run elsewhere: follow it
                self._grew = time.time()
                self._follower = self.set_interval(1.0, self._follow)
        self.redraw()
        self.refresh_bindings()

    def _follow(self) -> None:
        state = self.state
        if state.status == "watching" and state.run_dir:
            offset = read_new_events(state, Path(state.run_dir) / "events.jsonl", state.offset)
            if offset != state.offset:
                state.offset, self._grew = offset, time.time()
            elif time.time() - self._grew > WATCH_SECONDS:
                state.finalize()
            if state.status == "finished":
                self.show_results()
        if state.status != "watching":
            self._follower.stop()
            self.refresh_bindings()

    # ------------------------------------------------------------ drawing
    def _tick(self) -> None:
        if self.state.dirty or self.state.live:
            self.redraw()

    def redraw(self) -> None:
        state = self.state
        state.dirty = False
        self.query_one("#timeline", Timeline).show(state)
        curves = state.curves()
        name = state.plot_stage(self.pinned)
        position = ""
        if len(curves) > 1 and name in curves:
            position = f"[{curves.index(name) + 1}/{len(curves)}]" + (" pinned" if self.pinned else "")
        private = bool(name) and (name in state.privacy_by_stage or (bool(state.privacy_enabled) and name in ("tune", "full_pt")))
        self.query_one("#curves", LossPlot).show(state.stages.get(name) if name else None, position, private)
        self.query_one("#privacy", PrivacyMeter).show(state)
        self.query_one("#diagnostics", DiagnosticsView).show(state)
        self.query_one("#memory", MemoryLine).show(state)
        self.query_one("#results-view", ResultsView).show(state)
        self.query_one("#status", Static).update(self.status_text())
        self._write_logs()

    def _write_logs(self) -> None:
        state = self.state
        new = min(state.log_seq - self._logged, len(state.logs))
        if new <= 0:
            return
        log = self.query_one("#log", RichLog)
        for when, level, message in list(state.logs)[-new:]:
            line = Text(time.strftime("%H:%M:%S ", time.localtime(when)), style="dim")
            line.append(message, style=LOG_STYLE.get(level, ""))
            log.write(line)
        self._logged = state.log_seq

    def status_text(self) -> Text:
        state = self.state
        text = Text()
        text.append(" POST ", style="bold reverse")
        text.append(f" {state.preset or '?'} ", style="bold")
        status = state.status
        style = {"running": "cyan", "starting": "cyan", "watching": "cyan", "finished": "green", "failed": "bold red",
                 "cancelled": "yellow", "incomplete": "yellow"}.get(status, "")
        if status == "running" and state.running_stage() is not None:
            view = state.running_stage()
            text.append(f"▶ {view.name} {fmt.steps(view.step, view.total)}", style=style)
        elif status == "running":
            last = next((m for _, level, m in reversed(state.logs) if level == "info"), "")
            text.append("running" + (f": {last}" if last else ""), style=style)
        elif status == "watching":
            view = state.running_stage()
            text.append("watching a run written elsewhere" + (f": ▶ {view.name} {fmt.steps(view.step, view.total)}"
                                                               if view else ""), style=style)
        else:
            text.append(status, style=style)
        if state.active and self.cancel_event.is_set():
            text.append(" · cancelling after this step…", style="yellow")
        if state.started:
            text.append(f" · {fmt.duration(state.now() - state.started)}", style="dim")
        if state.run_dir:
            text.append(f" · {state.run_dir}", style="dim")
        if state.error and status in ("failed", "cancelled"):
            text.append("\n")
            text.append(("error: " if status == "failed" else "") + state.error,
                        style="bold red" if status == "failed" else "yellow")
        return text

    def show_results(self) -> None:
        self.view_mode = "results"
        self.query_one("#main", ContentSwitcher).current = "results"
        self.add_class("-results")
        self.query_one("#results-view", ResultsView).show(self.state)

    # ------------------------------------------------------------ actions
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        state = self.state
        if action == "cancel":
            return state.active
        if action == "resume":
            return (not state.active and state.status in ("cancelled", "failed", "incomplete")
                    and (self.config is not None or bool(state.run_dir)))
        if action == "back":
            return not state.active
        if action in ("curve", "follow"):
            return self.view_mode == "curves"
        if action in ("export", "audit"):
            return not state.active and state.status == "finished" and bool(state.run_dir)
        return True

    def action_cancel(self) -> None:
        if self.state.active and not self.cancel_event.is_set():
            self.cancel_event.set()
            self.state.log("cancel requested: the current step finishes, then the stage saves what it has", "warning")
            self.redraw()

    def action_resume(self) -> None:
        run_dir = self.state.run_dir or (str(self.out) if self.out else None)
        if self.config is None and run_dir:
            self.config = read_config(run_dir)
        if self.config is None:
            self.notify("this run folder has no valid config.toml to resume from", severity="error")
            return
        stages = self.run_stages
        self.start(Path(run_dir) if run_dir else self.out, resume=bool(run_dir) and not stages, stages=stages)

    def action_export(self) -> None:
        """POST's prompt as a PEFT adapter in <run>/peft-post (post export RUN --out RUN/peft-post)."""
        run_dir = Path(self.state.run_dir)
        self.notify(f"exporting POST's prompt to {run_dir / EXPORT_FOLDER} (checked through PEFT)")
        self._export(run_dir, run_dir / EXPORT_FOLDER)

    def action_audit(self) -> None:
        """Membership inference against this run's tuning recipe (post audit RUN), its progress on this dashboard."""
        run_dir = Path(self.state.run_dir)
        self.config = read_config(run_dir)
        if self.config is None:
            self.notify("this run folder has no valid config.toml to audit", severity="error")
            return
        self.start(run_dir, stages=["audit"])

    @work(thread=True, exclusive=True, group="export", exit_on_error=False)
    def _export(self, run_dir: Path, out: Path) -> None:
        try:
            from engine.export import export
            info = export(run_dir, "post", out)
        except Exception as err:  # one line in the UI, as for a run
            message = one_line(err) if isinstance(err, PostError) else f"{type(err).__name__}: {one_line(err)}"
            self.app.call_from_thread(self.notify, message, severity="error")
            return
        self.app.call_from_thread(self.notify, f"PEFT adapter {out}: {info['num_virtual_tokens']} virtual tokens; "
                                  f"tokenize with {info['tokenize']}")

    def action_toggle_results(self) -> None:
        if self.view_mode == "results":
            self.view_mode = "curves"
            self.query_one("#main", ContentSwitcher).current = "curves"
            self.remove_class("-results")
        else:
            self.show_results()
        self.refresh_bindings()

    def action_curve(self, delta: int) -> None:
        curves = self.state.curves()
        if not curves:
            return
        name = self.state.plot_stage(self.pinned)
        at = curves.index(name) if name in curves else len(curves) - 1
        self.pinned = curves[(at + delta) % len(curves)]
        self.redraw()

    def action_follow(self) -> None:
        self.pinned = None
        self.redraw()

    def action_back(self) -> None:
        if self.state.active:
            self.notify("a run is in progress: c cancels it", severity="warning")
            return
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()
        else:
            from post_tui.screens.presets import PresetsScreen
            self.app.switch_screen(PresetsScreen())
