"""post-tui: Pilot tests of every screen, a real smoke run driven through the UI, a failing run,
the privacy meter against engine events, cancelling / quitting, and the engine's independence of Textual."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import events as ev
from engine.config import to_toml
from engine.presets import load_config, preset_names
from post_tui.app import PostApp, main
from post_tui.screens.config import ConfigScreen, SavePath
from post_tui.screens.confirm import ConfirmScreen
from post_tui.screens.dashboard import DashboardScreen
from post_tui.screens.presets import PresetsScreen
from post_tui.screens.runs import RunsScreen
from post_tui.widgets.loss_plot import LossPlot
from post_tui.widgets.memory import MemoryLine
from post_tui.widgets.privacy import PrivacyMeter
from post_tui.widgets.results import ResultsView
from post_tui.widgets.state import RunState, Series
from post_tui.widgets.timeline import Timeline

pytestmark = pytest.mark.anyio  # Pilot tests are coroutines; anyio's pytest plugin runs them

SMALL = (80, 24)
LARGE = (200, 50)
# the smoke preset, shortened: every stage runs, in a few seconds
# the UI smoke run is private, so the meter is checked against its events; DP full PT would plan σ a second time
PRIVATE = ["privacy.epsilon=8", "eval.full_pt=false"]
SHORT = ["distill.steps=8", "tune.steps=12", "tune.eval_every=6", "tune.eval_size=32", "transfer.steps=8",
         "transfer.methods=[\"post\", \"direct\"]", "public.size=16", "task.max_eval=48", "eval.full_pt_steps=8"]


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def wait_for(pilot, condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.1)


# Importing every engine module takes ~10 s (torch, transformers): the check starts in the
# background with this file's first test and is read by its last one.
_IMPORT_CHECK = ("import importlib, pkgutil, sys, engine\n"
                 "for m in pkgutil.walk_packages(engine.__path__, 'engine.'):\n"
                 "    importlib.import_module(m.name)\n"
                 "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'textual_plotext', 'post_tui'))\n"
                 "assert not bad, bad\n"
                 "print(len([m for m in sys.modules if m.startswith('engine.')]))\n")
_ENGINE_IMPORT: list[subprocess.Popen] = []


@pytest.fixture(autouse=True, scope="module")
def _engine_import_check():
    _ENGINE_IMPORT.append(subprocess.Popen(
        [sys.executable, "-c", _IMPORT_CHECK], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "TOKENIZERS_PARALLELISM": "false"}))
    yield
    if _ENGINE_IMPORT[0].poll() is None:
        _ENGINE_IMPORT[0].kill()
    _ENGINE_IMPORT[0].communicate()


def dashboard(app) -> DashboardScreen:
    assert isinstance(app.screen, DashboardScreen), type(app.screen).__name__
    return app.screen


# ---------------------------------------------------------------- command line

def test_bad_preset_or_set_exits_2_before_the_app(capsys):
    for argv in (["--preset", "smokey", "--run"], ["--preset", "smoke", "--set", "tune.lr=-1"],
                 ["--preset", "smoke", "--set", "tune.lr_rate=1"], ["--set", "tune.lr=1"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, err


# ---------------------------------------------------------------- presets screen

async def test_presets_screen_lists_presets_and_navigates(tmp_path):
    app = PostApp(runs_dir=tmp_path)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, PresetsScreen)
        assert set(screen.infos) == set(preset_names())
        smoke = screen.infos["smoke"]
        assert smoke["assets_word"][0] == "cached" and smoke["assets"]["large model"][0] == "built-in"
        assert "tiny:gpt2" in smoke["models"] and smoke["budget"] == "60/60/60"
        # move to smoke and open its config with the keyboard
        for _ in range(len(screen.infos)):
            if screen.selected == "smoke":
                break
            await pilot.press("down")
        assert screen.selected == "smoke"
        assert "Tiny" in str(screen.query_one("#detail").content)
        await pilot.press("e")
        assert isinstance(app.screen, ConfigScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, PresetsScreen)
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen)
        await pilot.press("escape")
        await pilot.press("q")
    assert app.return_code == 0


# ---------------------------------------------------------------- config screen

async def test_config_screen_validates_inline_and_saves(tmp_path):
    app = PostApp(preset="smoke", config=load_config("smoke"), runs_dir=tmp_path)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ConfigScreen)
        keys = set(screen.fields)
        assert {"tune.lr", "privacy.epsilon", "privacy.delta", "privacy.noise_multiplier", "privacy.clip",
                "privacy.accountant", "models.large", "task.source"} <= keys
        assert "tune.steps" in screen.preset_keys and screen.config is not None
        lr = screen.query_one("#in-tune--lr")
        lr.focus()
        await pilot.press("home", "ctrl+k", "minus", "1")
        assert lr.value == "-1"
        assert screen.config is None and screen.error_at == "tune.lr"
        assert "tune.lr" in screen.error and lr.has_class("-invalid")
        await pilot.pause()
        assert "tune.lr" in str(screen.error_line.content)
        await pilot.press("ctrl+r")  # an invalid config cannot be launched
        await pilot.pause()
        assert isinstance(app.screen, ConfigScreen)
        await pilot.press("home", "ctrl+k", "0", "full_stop", "0", "5")
        assert screen.config is not None and screen.config.tune.lr == 0.05 and not lr.has_class("-invalid")
        eps = screen.query_one("#in-privacy--epsilon")
        eps.focus()
        await pilot.press("8")
        assert screen.config.privacy.epsilon == 8 and screen.config.privacy.enabled
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, SavePath)
        target = tmp_path / "mine.toml"
        app.screen.query_one("#save-path").value = str(target)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ConfigScreen)
    saved = load_config(None, target)
    assert saved.tune.lr == 0.05 and saved.privacy.epsilon == 8 and saved.models.large == "tiny:gpt2"


# ---------------------------------------------------------------- a real run through the UI

async def test_smoke_run_through_the_ui_ends_with_results_and_replays(tmp_path):
    out = tmp_path / "smoke-run"
    config = load_config("smoke", None, SHORT + PRIVATE)
    app = PostApp(preset="smoke", overrides=SHORT + PRIVATE, start=True, out=out, runs_dir=tmp_path, config=config)
    seen_curve = []
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        board = dashboard(app)
        plot = board.query_one("#curves", LossPlot)

        def progressed():
            if plot.points:
                seen_curve.append(plot.points)
            return board.state.status not in ("starting", "running")
        await wait_for(pilot, progressed, 80, "the smoke run to end")
        assert board.state.status == "finished", board.state.error
        await pilot.pause(0.6)
        assert seen_curve, "the loss curve was never drawn during the run"
        assert (out / "results.json").is_file()
        results = json.loads((out / "results.json").read_text())
        view = board.query_one("#results-view", ResultsView)
        assert board.view_mode == "results" and "gap closed" in view.plain and "POST" in view.plain
        meter = board.query_one("#privacy", PrivacyMeter)
        if PRIVATE:  # the meter shows the private stage's last spend, exactly as the engine reported it
            stage, spent = None, {}
            for event in ev.read_events(out / "events.jsonl"):
                stage = event.stage if isinstance(event, ev.StageStarted) else stage
                if isinstance(event, ev.PrivacySpent):
                    spent[stage] = event
            last = spent["tune"]
            assert f"(tune) ε {last.epsilon:.2f} / {last.target_epsilon:g}" in meter.plain
            assert f"δ {last.delta:.2g}" in meter.plain and f"σ {last.noise_multiplier:.3g}" in meter.plain
            assert f"q {last.sample_rate:.3g}" in meter.plain and f"steps {last.steps}" in meter.plain
            assert results["privacy"]["epsilon"] == pytest.approx(last.epsilon)
        else:
            assert "not private" in meter.plain
        assert "RSS" in board.query_one("#memory", MemoryLine).plain
        rows = {r.name: r for r in board.state.rows()}
        assert rows["tune"].state == "done" and rows["tune"].step == 12 and ("full_pt" in rows) != bool(PRIVATE)
        assert rows["transfer"].state == "done" and "transfer:post" in rows
        assert len(board.state.stages["tune"].val) >= 1
        assert board.state.results["accuracy"] == results["accuracy"]
        # x exports POST's prompt as a PEFT adapter into the run folder, in a worker thread
        await pilot.press("x")
        await wait_for(pilot, lambda: (out / "peft-post" / "post_export.json").is_file(), 60, "the PEFT export")
        assert json.loads((out / "peft-post" / "post_export.json").read_text())["privacy"]["private"] is True
        # a audits the tuning recipe (LiRA with shadow prompts), its progress on this dashboard; the results stay
        await pilot.press("a")
        await wait_for(pilot, lambda: board.state.status not in ("starting", "running") and
                       (out / "audit" / "done.json").is_file(), 120, "the audit")
        assert board.state.status == "finished", board.state.error
        assert "audit" in board.state.stages and "LiRA AUC" in (out / "events.jsonl").read_text()
        assert board.state.results["accuracy"] == results["accuracy"]
        # toggle back to the curves and cycle through the stages' curves
        await pilot.press("t")
        assert board.view_mode == "curves"
        await pilot.press("left_square_bracket")
        assert board.pinned in board.state.curves()
        # the run is listed on the runs screen, and opens again from its folder
        await pilot.press("escape")
        assert isinstance(app.screen, PresetsScreen)
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.runs, 10, "runs list")
        runs = app.screen
        assert str(out) in runs.runs and runs.runs[str(out)]["status"] == "finished"
        await pilot.press("enter")
        await pilot.pause()
        replay = dashboard(app)
        await wait_for(pilot, lambda: replay.state.status != "loading", 10, "the replay")
        assert replay.state.status == "finished"
        assert replay.state.results["accuracy"] == results["accuracy"]
        assert len(replay.state.stages["tune"].loss.points()[0]) == 12
        assert replay.view_mode == "results"
        await pilot.press("escape", "escape", "q")
    assert app.return_code == 0


async def test_failing_run_shows_its_error_and_the_app_keeps_working(tmp_path):
    config = load_config("smoke", None, SHORT + ["task.source=/nonexistent.csv"])
    app = PostApp(start=True, out=tmp_path / "bad", config=config, runs_dir=tmp_path)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        board = dashboard(app)
        await wait_for(pilot, lambda: board.state.status == "failed", 60, "the run to fail")
        await pilot.pause(0.6)
        assert "nonexistent.csv" in board.state.error and "\n" not in board.state.error
        assert "nonexistent.csv" in board.status_text().plain
        assert any("nonexistent.csv" in m for _, _, m in board.state.logs)
        assert "not private" in board.query_one("#privacy", PrivacyMeter).plain
        await pilot.press("escape")  # steady state: back to the presets, which still work
        assert isinstance(app.screen, PresetsScreen)
        await pilot.press("e")
        assert isinstance(app.screen, ConfigScreen)
        await pilot.press("ctrl+q")
    assert app.return_code == 0


# ---------------------------------------------------------------- privacy meter

async def test_privacy_meter_follows_privacy_events():
    from textual.app import App

    class One(App):
        def compose(self):
            yield PrivacyMeter()

    config = load_config("smoke", None, ["privacy.epsilon=8"])
    state = RunState(config)
    app = One()
    async with app.run_test(size=SMALL) as pilot:
        meter = app.query_one(PrivacyMeter)
        meter.show(state)
        assert "waiting" in meter.plain and "8" in meter.plain
        expected = {1.0: "safe", 5.0: "watch", 7.2: "near", 7.9: "limit"}
        for step, (eps, level) in enumerate(expected.items(), start=1):
            event = ev.PrivacySpent(epsilon=eps, target_epsilon=8.0, delta=1e-5, noise_multiplier=1.13,
                                    sample_rate=0.016, steps=step * 10, accountant="rdp")
            state.apply(event)
            meter.show(state)
            await pilot.pause()
            assert f"ε {eps:.2f} / 8" in meter.plain
            assert "δ 1e-05" in meter.plain and "σ 1.13" in meter.plain and "q 0.016" in meter.plain
            assert f"steps {step * 10}" in meter.plain and "rdp" in meter.plain
            assert meter.level == level and meter.has_class(f"-{level}")
            assert "ledger" not in meter.plain  # no ledger figure given: nothing claimed
        for composed, shown in ((9.4, "ledger ε 9.40 over 3 releases"), (float("inf"), "ledger ε ∞ (used without DP)")):
            state.apply(ev.PrivacySpent(epsilon=2.0, target_epsilon=8.0, delta=1e-5, noise_multiplier=1.13,
                                        sample_rate=0.016, steps=50, accountant="rdp", ledger_epsilon=composed,
                                        ledger_releases=3))
            meter.show(state)
            assert shown in meter.plain
        meter.show(RunState(load_config("smoke")))
        assert "not private" in meter.plain and meter.level == "off"


async def test_loss_curve_of_a_dp_stage_is_marked_private():
    from textual.app import App

    class One(App):
        def compose(self):
            yield LossPlot()

    state = RunState(load_config("smoke", None, ["privacy.epsilon=8"]))
    state.apply(ev.StageStarted(stage="tune", total_steps=10, description="tune"))
    for step in range(1, 4):
        state.apply(ev.Metric(stage="tune", name="loss", step=step, value=1.0 / step))
    async with One().run_test(size=SMALL) as pilot:
        plot = pilot.app.query_one(LossPlot)
        plot.show(state.stages["tune"], private=True)
        assert "private: not noised, stays on this machine" in plot.title_text
        plot.show(state.stages["tune"], private=False)
        assert "private" not in plot.title_text


# ---------------------------------------------------------------- cancel, quit, worker errors (fake engine)

@pytest.fixture
def fake_engine(monkeypatch):
    """engine.pipeline.run replaced by a loop that emits events until cancelled."""
    import engine.pipeline as pipeline
    calls = {"cancel": None, "resume": []}

    def fake_run(config, bus=None, out=None, cancel=None, stages=None, resume=False, force=False):
        calls["cancel"] = cancel
        calls["resume"].append(resume)
        bus.emit(ev.RunStarted(run_dir=str(out), preset=config.name, stages=["tune", "transfer", "eval"]))
        bus.emit(ev.StageStarted(stage="tune", total_steps=10_000, description="fake tuning"))
        bus.emit(ev.MemorySample(rss_mib=900, total_mib=64_000, devices=[
            {"index": 0, "name": "NVIDIA H200", "allocated_mib": 5_000, "reserved_mib": 6_000,
             "used_mib": 70_000, "total_mib": 143_000}]))
        bus.emit(ev.RanksSample(stage="tune", ranks=[  # two processes: one line each (engine.ranks)
            {"rank": r, "device": f"cuda:{r}", "allocated_mib": 5_000, "reserved_mib": 6_000, "peak_allocated_mib": 5_500,
             "used_mib": 70_000, "gpu_total_mib": 143_000, "rss_mib": 900, "peak_rss_mib": 950, "tokens_per_s": 600.0}
            for r in (0, 1)]))
        for step in range(1, 31):  # a few steps, then idle until cancelled (Pilot waits for an idle process)
            bus.emit(ev.Metric(stage="tune", step=step, name="loss", value=1.0 / step))
            bus.emit(ev.Progress(stage="tune", step=step, total_steps=10_000, tokens_per_s=1234.0, step_seconds=0.01))
        cancel.wait(30)
        bus.emit(ev.StageFailed(stage="tune", message="cancelled"))
        bus.emit(ev.RunFailed(message="cancelled: finished stages are kept"))
        raise pipeline.Cancelled()

    monkeypatch.setattr(pipeline, "run", fake_run)
    return calls


async def test_cancel_returns_to_a_steady_state(tmp_path, fake_engine):
    app = PostApp(start=True, out=tmp_path / "r", config=load_config("smoke"), runs_dir=tmp_path)
    async with app.run_test(size=LARGE) as pilot:
        await pilot.pause()
        board = dashboard(app)
        await wait_for(pilot, lambda: board.state.stages.get("tune") and board.state.stages["tune"].step == 30,
                       10, "steps")
        await pilot.pause(0.6)
        assert "GPU0 NVIDIA H200" in board.query_one("#memory", MemoryLine).plain
        assert "tok/s" in board.query_one("#memory", MemoryLine).plain
        ranks = [l for l in board.query_one("#memory", MemoryLine).plain.splitlines() if l.startswith("rank")]
        assert [l.split()[:2] for l in ranks] == [["rank0", "cuda:0"], ["rank1", "cuda:1"]]
        assert "GPU 68.4GiB / 139.6GiB" in ranks[1] and "peak 5500MiB" in ranks[1]
        assert "tune" in board.query_one("#timeline", Timeline).plain
        await pilot.press("escape")  # no leaving while running
        assert app.screen is board
        await pilot.press("c")
        await wait_for(pilot, lambda: board.state.status == "cancelled", 10, "the cancel")
        assert fake_engine["cancel"].is_set()
        assert board.state.stages["tune"].state == "cancelled"
        assert board.check_action("resume", ()) and not board.check_action("cancel", ())
        await pilot.press("r")  # resume in the same folder
        await wait_for(pilot, lambda: board.state.active and fake_engine["resume"] == [False, True], 10, "resume")
        await pilot.press("c")
        await wait_for(pilot, lambda: board.state.status == "cancelled", 10, "the second cancel")
        await pilot.press("escape")
        assert isinstance(app.screen, PresetsScreen)


async def test_quitting_during_a_run_asks_first(tmp_path, fake_engine):
    app = PostApp(start=True, out=tmp_path / "r", config=load_config("smoke"), runs_dir=tmp_path)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        board = dashboard(app)
        await wait_for(pilot, lambda: board.state.status == "running", 10, "the run")
        await pilot.press("q")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert app.screen is board and board.state.active and not board.cancel_event.is_set()
        await pilot.press("q")
        await pilot.press("y")
        await pilot.pause()
    assert fake_engine["cancel"].is_set() and app.return_code == 130  # cancelled, as `post run` says it


async def test_sigterm_or_sighup_cancels_the_run_as_quitting_does(tmp_path, fake_engine):
    """A dropped SSH session (SIGHUP) or `kill` (SIGTERM) must cancel the run — its stage saves what it has and
    its record says cancelled — not end the process mid-step with nothing saved."""
    import os
    import signal
    app = PostApp(start=True, out=tmp_path / "r", config=load_config("smoke"), runs_dir=tmp_path)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        board = dashboard(app)
        await wait_for(pilot, lambda: board.state.status == "running", 10, "the run")
        os.kill(os.getpid(), signal.SIGHUP)
        await pilot.pause(0.3)
    assert fake_engine["cancel"].is_set() and app.return_code == 130


async def test_engine_crash_is_one_line_in_the_ui(tmp_path, monkeypatch):
    import engine.pipeline as pipeline

    def crash(*args, **kwargs):
        raise RuntimeError("boom\nwith a second line")

    monkeypatch.setattr(pipeline, "run", crash)
    app = PostApp(start=True, out=tmp_path / "r", config=load_config("smoke"), runs_dir=tmp_path)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        board = dashboard(app)
        await wait_for(pilot, lambda: board.state.status == "failed", 10, "the failure")
        assert board.state.error == "RuntimeError: boom with a second line"
        assert "boom" in board.status_text().plain
        await pilot.press("escape")
        assert isinstance(app.screen, PresetsScreen)


# ---------------------------------------------------------------- runs screen (synthetic folder)

def _fake_run_folder(root: Path, name: str, finished: bool, torn: bool = False) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    config = load_config("smoke")
    (folder / "config.toml").write_text(to_toml(config))
    writer = ev.JsonlWriter(folder / "events.jsonl")
    writer(ev.RunStarted(run_dir=str(folder), preset="smoke", stages=["tune", "transfer", "eval"]))
    writer(ev.StageStarted(stage="tune", total_steps=50))
    for step in range(1, 51):
        writer(ev.Metric(stage="tune", step=step, name="loss", value=2.0 / step))
        writer(ev.Progress(stage="tune", step=step, total_steps=50, tokens_per_s=100.0, step_seconds=0.1))
    writer(ev.Metric(stage="tune", step=50, name="val_accuracy", value=0.7))
    writer(ev.StageFinished(stage="tune", seconds=5.0))
    if finished:
        results = {"preset": "smoke", "task": "smoke", "large": "tiny:gpt2", "test_examples": 10,
                   "accuracy": {"full_zs": 0.5, "full_pt": 0.9, "cpt": 0.7, "direct": 0.6, "post": 0.8},
                   "gap_closed": 0.75, "seconds": {"tune": 5.0, "transfer": 3.0, "eval": 1.0}, "privacy": None}
        (folder / "results.json").write_text(json.dumps(results))
        writer(ev.RunFinished(results_path=str(folder / "results.json"), results=results))
    else:
        writer(ev.StageStarted(stage="transfer:post", total_steps=40))
        writer(ev.Progress(stage="transfer:post", step=3, total_steps=40))
    writer.close()
    if torn:
        with open(folder / "events.jsonl", "a") as f:
            f.write('{"event": "Metric", "sta')  # the last line of a killed run
    return folder


async def test_runs_screen_lists_reopens_and_follows_past_runs(tmp_path):
    done = _fake_run_folder(tmp_path, "smoke-done", finished=True)
    killed = _fake_run_folder(tmp_path, "smoke-killed", finished=False, torn=True)
    old = time.time() - 3600
    os.utime(killed / "events.jsonl", (old, old))
    live = _fake_run_folder(tmp_path, "smoke-live", finished=False)  # written right now by "another process"
    (tmp_path / "not-a-run").mkdir()
    app = PostApp(runs_dir=tmp_path)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen) and len(app.screen.runs) == 3, 10, "runs")
        screen = app.screen
        statuses = {Path(p).name: r["status"] for p, r in screen.runs.items()}
        assert statuses == {"smoke-done": "finished", "smoke-killed": "incomplete", "smoke-live": "incomplete"}
        for _ in range(3):
            if screen.selected == str(done):
                break
            await pilot.press("down")
        assert screen.selected == str(done), (screen.selected, list(screen.runs))
        await pilot.press("enter")
        board = dashboard(app)
        await wait_for(pilot, lambda: board.state.status == "finished", 10, "the replay")
        await pilot.pause(0.6)
        assert "gap closed" in board.query_one("#results-view", ResultsView).plain
        await pilot.press("t")
        await pilot.pause(0.6)
        assert board.query_one("#curves", LossPlot).points == 50
        assert "not private" in board.query_one("#privacy", PrivacyMeter).plain
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)

        async def open_run(folder):
            table = screen.query_one("#runs")
            table.move_cursor(row=table.get_row_index(str(folder)))
            await pilot.press("enter")
            return dashboard(app)

        board = await open_run(killed)
        await wait_for(pilot, lambda: board.state.status == "incomplete", 10, "the killed run's replay")
        assert board.state.stages["transfer:post"].state == "stopped"
        assert board.check_action("resume", ())
        await pilot.press("escape")
        board = await open_run(live)
        await wait_for(pilot, lambda: board.state.status == "watching", 10, "the live run's replay")
        assert board.state.stages["transfer:post"].state == "running" and not board.check_action("resume", ())
        writer = ev.JsonlWriter(live / "events.jsonl")
        writer(ev.Progress(stage="transfer:post", step=40, total_steps=40))
        writer(ev.StageFinished(stage="transfer:post", seconds=4.0))
        writer(ev.RunFinished(results_path=str(done / "results.json"),
                              results=json.loads((done / "results.json").read_text())))
        writer.close()
        await wait_for(pilot, lambda: board.state.status == "finished", 10, "the followed run to finish")
        assert board.state.stages["transfer:post"].step == 40 and board.view_mode == "results"


# ---------------------------------------------------------------- bounded histories

def test_state_histories_are_bounded():
    state = RunState(load_config("smoke"), max_points=500, max_logs=50)
    state.apply(ev.RunStarted(run_dir="x", preset="smoke", stages=["tune"]))
    state.apply(ev.StageStarted(stage="tune", total_steps=200_000))
    for step in range(1, 200_001):
        state.apply(ev.Metric(stage="tune", step=step, name="loss", value=1.0))
        if step % 100 == 0:
            state.apply(ev.Log(message=f"step {step}"))
    series = state.stages["tune"].loss
    assert len(series) <= 500 and series.points()[0][-1] == 200_000 and series.points()[0][0] == 1
    assert len(state.logs) == 50 and state.log_seq > 2000
    small = Series(maxlen=4)
    for i in range(100):
        small.add(i, i)
    assert len(small) <= 4


# ---------------------------------------------------------------- the engine stays free of Textual

def test_engine_imports_no_textual():
    """Every engine module imports without Textual (or Rich, or the TUI) being loaded."""
    out, err = _ENGINE_IMPORT[0].communicate(timeout=120)
    assert _ENGINE_IMPORT[0].returncode == 0, err[-2000:]
    assert int(out.strip()) > 10  # the walk really imported the engine


def test_stage_eta_follows_the_steps_pace():
    """The stages table's ETA: the teacher's pass before distillation's first step is not a step's cost."""
    state = RunState(load_config("smoke"))
    state.status = "running"
    state.apply(ev.StageStarted(stage="distill", total_steps=1200, time=0.0))
    state.apply(ev.Progress(stage="distill", step=1, total_steps=1200, step_seconds=0.3, time=180.0))
    row = next(r for r in state.rows() if r.name == "distill")
    assert row.eta == pytest.approx(0.3 * 1199)  # not 180 s × 1199
    state.apply(ev.Progress(stage="distill", step=601, total_steps=1200, step_seconds=0.5, time=180.0 + 600 * 0.25))
    row = next(r for r in state.rows() if r.name == "distill")
    assert row.eta == pytest.approx(0.25 * 599)  # the measured pace, not one step's


def test_the_corpus_field_reads_a_name_as_text_and_a_list_as_a_list():
    from engine.config import DistillConfig
    from post_tui.screens.config import from_text
    info = DistillConfig.model_fields["corpus"]
    assert from_text("2024", info) == (True, "2024")  # a source named like a TOML value stays a name
    assert from_text('["amazon", "nyt"]', info) == (True, ["amazon", "nyt"])
