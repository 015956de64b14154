"""What the dashboard knows about one run, built from engine events (live or replayed).

Plain Python, no Textual: the dashboard's widgets draw from it. Everything that grows with the
length of a run is bounded — curves decimate, logs and artifacts are deques with a maxlen — so a
day-long run keeps the UI at a steady memory footprint.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable

from engine import events as ev
from engine import methods
from post_tui.widgets.format import seconds_per_step

TRAINED_TRANSFER = methods.TRAINED
FINAL_STATES = ("done", "reused", "skipped", "partial")  # partial: cancelled mid-stage, what it had is saved


class Series:
    """A bounded curve: at most `maxlen` points; when full, every other point is dropped and only
    every 2nd (4th, 8th, ...) new point is kept, so the whole run's shape stays visible."""

    def __init__(self, maxlen: int = 2000) -> None:
        self.maxlen = max(4, maxlen)
        self.xs: list[float] = []
        self.ys: list[float] = []
        self.stride = 1
        self.count = 0
        self.last: tuple[float, float] | None = None

    def add(self, x: float, y: float) -> None:
        self.last = (x, y)
        self.count += 1
        if (self.count - 1) % self.stride:
            return
        self.xs.append(x)
        self.ys.append(y)
        if len(self.xs) > self.maxlen:
            self.xs, self.ys = self.xs[::2], self.ys[::2]
            self.stride *= 2

    def points(self) -> tuple[list[float], list[float]]:
        """The kept points plus the latest one (so the curve always reaches the current step)."""
        xs, ys = list(self.xs), list(self.ys)
        if self.last is not None and (not xs or xs[-1] != self.last[0]):
            xs.append(self.last[0])
            ys.append(self.last[1])
        return xs, ys

    def __len__(self) -> int:
        return len(self.xs)


@dataclass
class StageView:
    name: str
    parent: str | None = None
    state: str = "pending"  # pending running done partial reused skipped failed cancelled stopped
    step: int = 0
    total: int | None = None
    started: float | None = None
    finished: float | None = None
    seconds: float | None = None
    description: str = ""
    message: str = ""
    tokens_per_s: float | None = None
    step_seconds: float | None = None
    first_progress: tuple[float, int] | None = None  # (time, step) of the stage's first progress event
    last_progress: float | None = None
    loss: Series = field(default_factory=Series)
    val: Series = field(default_factory=Series)
    extras: dict[str, float] = field(default_factory=dict)
    version: int = 0

    @property
    def label(self) -> str:
        if self.parent:
            return "· " + self.name.split(":", 1)[1]
        return {"full_pt": "full PT"}.get(self.name, self.name)


@dataclass
class Row:
    """One timeline line (a stage, or the transfer group summed over its methods)."""
    name: str
    label: str
    state: str
    step: int
    total: int | None
    elapsed: float | None
    eta: float | None
    sub: bool = False


class RunState:
    def __init__(self, config: Any = None, max_points: int = 2000, max_logs: int = 500,
                 max_artifacts: int = 200) -> None:
        self.config = config
        self.preset = getattr(config, "name", "") if config is not None else ""
        self.status = "idle"  # idle starting running finished failed cancelled incomplete
        self.run_dir: str | None = None
        self.order: list[str] = []
        self.stages: dict[str, StageView] = {}
        self.current: str | None = None
        self.max_points = max_points
        self.privacy: ev.PrivacySpent | None = None  # the latest
        self.privacy_by_stage: dict[str, ev.PrivacySpent] = {}
        privacy = getattr(config, "privacy", None)
        self.privacy_enabled: bool | None = privacy.enabled if privacy is not None else None
        self.target_epsilon: float | None = privacy.epsilon if privacy is not None else None
        self.memory: ev.MemorySample | None = None
        self.ranks: ev.RanksSample | None = None  # every process's figures (several processes)
        self.diagnostics: ev.Diagnostics | None = None  # the checks before the transfer, when they ran
        self.speed: tuple[str, float | None, float | None] | None = None  # stage, tokens/s, s/step
        self.artifacts: deque[tuple[str, str, str]] = deque(maxlen=max_artifacts)
        self.logs: deque[tuple[float, str, str]] = deque(maxlen=max_logs)
        self.log_seq = 0
        self.results: dict | None = None
        self.results_path: str | None = None
        self.error = ""
        self.started: float | None = None
        self.ended: float | None = None
        self.last_time: float | None = None
        self.dirty = True
        self.offset = 0  # bytes of events.jsonl read (when replayed from a folder)

    # ------------------------------------------------------------ feeding
    def log(self, message: str, level: str = "info", when: float | None = None) -> None:
        self.logs.append((when or time.time(), level, message))
        self.log_seq += 1
        self.dirty = True

    def _stage(self, name: str) -> StageView:
        if name in self.stages:
            return self.stages[name]
        parent = name.split(":", 1)[0] if ":" in name else None
        view = StageView(name=name, parent=parent,
                         loss=Series(self.max_points), val=Series(max(16, self.max_points // 4)))
        self.stages[name] = view
        if parent is not None:
            if parent not in self.stages:
                self._stage(parent)
            # after the parent's last child (or the parent itself)
            at = self.order.index(parent)
            while at + 1 < len(self.order) and self.order[at + 1].startswith(parent + ":"):
                at += 1
            self.order.insert(at + 1, name)
        else:
            self.order.append(name)
        return view

    def _plan(self, stages: Iterable[str]) -> None:
        cfg = self.config
        for name in stages:
            view = self._stage(name)
            if cfg is None:
                continue
            if name == "distill":
                view.total = cfg.distill.steps
            elif name == "tune" and cfg.tune.steps:
                view.total = cfg.tune.steps
            elif name == "transfer":
                for method in cfg.transfer.methods:
                    if method in TRAINED_TRANSFER:
                        self._stage(f"transfer:{method}").total = cfg.transfer.steps

    def apply(self, event: ev.Event) -> None:
        self.dirty = True
        self.last_time = event.time
        if isinstance(event, ev.RunStarted):
            self.status = "watching" if self.status == "watching" else "running"
            self.run_dir, self.started = event.run_dir, event.time
            self.preset = event.preset or self.preset
            self.error, self.results, self.ended = "", None, None
            self._plan(event.stages)
            self.log(f"run started in {event.run_dir}", when=event.time)
        elif isinstance(event, ev.StageStarted):
            view = self._stage(event.stage)
            view.state, view.started, view.finished, view.seconds = "running", event.time, None, None
            view.step, view.message = 0, ""
            view.first_progress = view.last_progress = None
            view.total = event.total_steps if event.total_steps is not None else view.total
            view.description = event.description
            self.current = event.stage
            self.log(f"{event.stage}: {event.description}" if event.description else f"{event.stage} started",
                     when=event.time)
        elif isinstance(event, ev.StageFinished):
            view = self._stage(event.stage)
            view.state = ("reused" if event.summary.get("reused") else
                          "partial" if event.summary.get("stopped") == "cancelled" else "done")
            view.finished, view.seconds = event.time, event.seconds
            if view.started is None:
                view.started = event.time - event.seconds
            if view.state == "done" and view.total and view.step == 0 and "steps" in event.summary:
                view.step = int(event.summary["steps"] or 0)
            self.log(f"{event.stage} done in {event.seconds:.1f} s", when=event.time)
        elif isinstance(event, ev.StageFailed):
            view = self._stage(event.stage)
            view.state = "cancelled" if event.message == "cancelled" else "failed"
            view.finished, view.message = event.time, event.message
            for child in self._children(event.stage):
                if child.state == "running":
                    child.state, child.finished = view.state, event.time
        elif isinstance(event, ev.Metric):
            view = self._stage(event.stage)
            if event.name == "loss":
                view.loss.add(event.step, event.value)
            elif event.name == "val_accuracy":
                view.val.add(event.step, event.value)
            else:
                view.extras[event.name] = event.value
            view.version += 1
        elif isinstance(event, ev.Progress):
            view = self._stage(event.stage)
            if view.state == "pending":
                view.state = "running"
                view.started = event.time - (event.step_seconds or 0.0) * event.step
            if view.first_progress is None:
                view.first_progress = (event.time, event.step)
            view.step, view.last_progress = event.step, event.time
            view.total = event.total_steps if event.total_steps is not None else view.total
            view.tokens_per_s, view.step_seconds = event.tokens_per_s, event.step_seconds
            self.speed = (event.stage, event.tokens_per_s, event.step_seconds)
        elif isinstance(event, ev.PrivacySpent):
            self.privacy = event
            self.privacy_by_stage[event.stage] = event
            self.privacy_enabled = True
            if event.target_epsilon is not None:
                self.target_epsilon = event.target_epsilon
        elif isinstance(event, ev.MemorySample):
            self.memory = event
        elif isinstance(event, ev.RanksSample):
            self.ranks = event
        elif isinstance(event, ev.Diagnostics):
            self.diagnostics = event
            for message in event.warnings:
                self.log(f"diagnostics: {message}", "warning", when=event.time)
        elif isinstance(event, ev.ArtifactSaved):
            self.artifacts.append((event.stage, event.what, event.path))
            self.log(f"saved {event.what}: {event.path}", when=event.time)
        elif isinstance(event, ev.Log):
            self.log(event.message, event.level, when=event.time)
            head, _, rest = event.message.partition(":")
            if rest.strip().startswith("already done") and head in self.stages:
                self.stages[head].state = "skipped"
        elif isinstance(event, ev.RunFinished):
            self.status, self.ended = "finished", event.time
            self.results, self.results_path = event.results, event.results_path
            for name, view in self.stages.items():
                if view.state == "pending" and not self._children(name):
                    view.state = "skipped"
            self.log(f"results: {event.results_path}", when=event.time)
        elif isinstance(event, ev.RunFailed):
            self.status = "cancelled" if event.message.startswith("cancelled") else "failed"
            self.error, self.ended = event.message, event.time
            self.log(event.message, "warning" if self.status == "cancelled" else "error", when=event.time)

    def end(self, outcome: str, message: str = "", results: dict | None = None) -> None:
        """The worker returned (covers errors raised before the engine could emit RunStarted)."""
        self.dirty = True
        if self.ended is None:
            self.ended = time.time()
        if outcome == "finished":
            self.status = "finished"
            if results is not None:
                self.results = results
            return
        if self.status not in ("failed", "cancelled"):
            self.status = outcome
            if message:
                self.error = message
                self.log(message, "warning" if outcome == "cancelled" else "error")
        elif message and outcome == "failed":
            self.error = message
        for view in self.stages.values():
            if view.state == "running":
                view.state, view.finished = ("cancelled" if outcome == "cancelled" else "failed"), self.ended

    def finalize(self) -> None:
        """After replaying a folder: a run that never finished is shown as stopped."""
        if self.status in ("running", "starting", "idle", "watching") and self.started is not None:
            self.status = "incomplete"
        for view in self.stages.values():
            if view.state == "running":
                view.state, view.finished = "stopped", self.last_time
        self.dirty = True

    # ------------------------------------------------------------ reading
    @property
    def active(self) -> bool:
        return self.status in ("starting", "running")

    def _children(self, name: str) -> list[StageView]:
        return [self.stages[n] for n in self.order if self.stages[n].parent == name]

    @property
    def live(self) -> bool:
        """Still moving: run here, or followed from its folder."""
        return self.status in ("starting", "running", "watching")

    def now(self) -> float:
        return time.time() if self.live else (self.ended or self.last_time or time.time())

    def _row(self, view: StageView, now: float) -> Row:
        elapsed = eta = None
        if view.started is not None:
            elapsed = (view.finished or now) - view.started
            per_step = _pace(view)
            if view.state == "running" and view.total and view.step > 0 and per_step:
                eta = max(0.0, per_step * (view.total - view.step))
        if view.state in ("done", "reused", "partial") and view.seconds is not None:
            elapsed = view.seconds
        return Row(view.name, view.label, view.state, view.step, view.total, elapsed, eta, sub=view.parent is not None)

    def _group_row(self, view: StageView, children: list[StageView], now: float) -> Row:
        rows = [self._row(c, now) for c in children]
        step = sum(r.step for r in rows)
        total = sum(r.total for r in rows) if all(r.total for r in rows) else None
        states = {r.state for r in rows}
        if view.state in ("failed", "cancelled", "skipped"):
            state = view.state
        elif "running" in states:
            state = "running"
        elif states <= set(FINAL_STATES):
            state = "done"
        elif states & {"failed", "cancelled", "stopped"}:
            state = next(s for s in ("failed", "cancelled", "stopped") if s in states)
        elif states & set(FINAL_STATES) and self.live:
            state = "running"
        else:
            state = "pending"
        started = [c.started for c in children if c.started is not None]
        elapsed = None
        if started:
            elapsed = sum(r.elapsed or 0.0 for r in rows)
        eta = None
        if state == "running" and total and step:
            paces = [p for p in (_pace(c) for c in children if c.step) if p]
            eta = sum(paces) / len(paces) * (total - step) if paces else None
        return Row(view.name, view.label, state, step, total, elapsed, eta)

    def rows(self) -> list[Row]:
        now = self.now()
        out = []
        for name in self.order:
            view = self.stages[name]
            children = self._children(name)
            out.append(self._group_row(view, children, now) if children else self._row(view, now))
        return out

    def privacy_shown(self) -> tuple[str | None, ev.PrivacySpent | None]:
        """The running stage's privacy spend; after it, the user's stage (tune), else the latest."""
        if self.current in self.privacy_by_stage and self.stages.get(self.current, StageView("")).state == "running":
            return self.current, self.privacy_by_stage[self.current]
        if "tune" in self.privacy_by_stage:
            return "tune", self.privacy_by_stage["tune"]
        if self.privacy is not None:
            return next(reversed(self.privacy_by_stage), None), self.privacy
        return None, None

    def curves(self) -> list[str]:
        """Stages that have a loss curve, in timeline order."""
        return [n for n in self.order if len(self.stages[n].loss) or self.stages[n].loss.last]

    def plot_stage(self, pinned: str | None = None) -> str | None:
        if pinned in self.stages:
            return pinned
        curves = self.curves()
        if self.current in curves:
            return self.current
        started = [n for n in curves if self.stages[n].started is not None]
        return max(started, key=lambda n: self.stages[n].started or 0.0) if started else (curves[-1] if curves else None)

    def running_stage(self) -> StageView | None:
        for name in reversed(self.order):
            if self.stages[name].state == "running" and not self._children(name):
                return self.stages[name]
        return None


# ---------------------------------------------------------------- run folders

def read_config(run_dir) -> Any:
    """The run's saved config.toml as a RunConfig, or None when it is missing or no longer valid."""
    from pathlib import Path

    from engine.config import read_toml, validate
    from engine.errors import PostError
    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        return None
    try:
        return validate(read_toml(path))
    except PostError:
        return None


WATCH_SECONDS = 120.0  # a folder whose event log changed this recently is followed as a live run


def read_new_events(state: RunState, path, offset: int) -> int:
    """Apply the complete lines of `path` after byte `offset`; returns the new offset."""
    import json
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            for line in f:
                if not line.endswith(b"\n"):
                    break  # a line still being written (or torn by a kill): read it next time
                offset += len(line)
                if not line.strip():
                    continue
                try:
                    event = ev.event_from_json(json.loads(line))
                except (ValueError, KeyError, TypeError):
                    continue
                state.apply(event)
    except FileNotFoundError:
        pass  # not written yet, or removed since: nothing to read
    except OSError as err:
        if offset == 0:  # the log cannot be opened at all: say so once, not a run that looks finished and empty
            state.log(unreadable(path, err), "error")
    return offset


def unreadable(path, err: OSError) -> str:
    return f"cannot read {path}: {(err.strerror or str(err)).lower()} — make it readable to see this run"


def load_run(run_dir, max_points: int = 2000, follow: bool = False) -> RunState:
    """Replay a run folder (events.jsonl, results.json) into a RunState, line by line (bounded memory).

    With `follow`, a run whose event log is still being written (by `post run` elsewhere) is left
    in status "watching" with `state.offset` set, to be followed with `read_new_events`."""
    import json
    from pathlib import Path

    run_dir = Path(run_dir)
    state = RunState(read_config(run_dir), max_points=max_points)
    state.run_dir = str(run_dir)
    events_path = run_dir / "events.jsonl"
    state.offset = read_new_events(state, events_path, 0) if events_path.is_file() else 0
    results_path = run_dir / "results.json"
    if state.results is None and results_path.is_file() and state.status not in ("cancelled", "failed"):
        try:  # a run whose last attempt was cancelled or failed is that, whatever an earlier attempt scored
            found = json.loads(results_path.read_text(encoding="utf-8"))
            if not isinstance(found, dict):
                raise ValueError("not a JSON object")
            state.results = found
            state.results_path = str(results_path)
            state.status = "finished"
        except ValueError:
            state.error = f"{results_path} is damaged (not the JSON object eval writes): run post eval {run_dir}"
            state.log(state.error, "error")
        except OSError as err:
            state.error = unreadable(results_path, err)
            state.log(state.error, "error")
    state.run_dir = str(run_dir)
    recent = events_path.is_file() and time.time() - events_path.stat().st_mtime < WATCH_SECONDS
    if follow and recent and state.status == "running":
        state.status = "watching"
    else:
        state.finalize()
    return state


def run_summary(run_dir) -> dict[str, Any]:
    """What the runs list shows for one folder, without reading its (possibly long) event log."""
    import json
    from pathlib import Path

    run_dir = Path(run_dir)
    out: dict[str, Any] = {"name": run_dir.name, "path": str(run_dir), "preset": "", "results": None,
                           "status": "incomplete", "time": 0.0}
    for probe in ("config.toml", "events.jsonl"):
        if (run_dir / probe).exists():
            out["time"] = (run_dir / probe).stat().st_mtime
            break
    try:
        import tomllib
        out["preset"] = tomllib.loads((run_dir / "config.toml").read_text(encoding="utf-8")).get("name", "")
    except (OSError, ValueError):
        pass
    results = run_dir / "results.json"
    last = _last_line(run_dir / "events.jsonl")
    if last.get("event") == "RunFailed":  # the last attempt's end, whatever an earlier attempt scored
        out["status"] = "cancelled" if str(last.get("message", "")).startswith("cancelled") else "failed"
    elif results.is_file():
        try:
            found = json.loads(results.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            found = None
        if isinstance(found, dict):
            out.update(results=found, status="finished", time=results.stat().st_mtime)
        else:
            out["status"] = "damaged"
    elif (run_dir / "error.txt").is_file():
        out["status"] = "failed"
    return out


def _last_line(path) -> dict:
    import json
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 8192))
            lines = [line for line in f.read().splitlines() if line.strip()]
        return json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError):
        return {}


def is_run_folder(path) -> bool:
    from pathlib import Path
    path = Path(path)
    return path.is_dir() and ((path / "config.toml").is_file() or (path / "events.jsonl").is_file())


def _pace(view: StageView) -> float | None:
    return seconds_per_step(view.first_progress, view.last_progress, view.step, view.step_seconds)
