"""Logs that survive nohup and CI: with stdout not a terminal, plain progress lines and unwrapped tables."""
from __future__ import annotations

import io
import re

from engine import events as ev
from post_tui.render import ConsoleRenderer, make_console, print_error, results_table

LONG_PATH = "/data/" + "/".join(f"folder-{i}" for i in range(12)) + "/private-movie-reviews.csv"


def plain_console(width: int = 80):
    out = io.StringIO()
    return make_console(file=out, width=width), out  # a StringIO is not a terminal


def feed(renderer: ConsoleRenderer, total: int = 100, start: float = 1000.0, step_s: float = 0.5) -> None:
    renderer(ev.StageStarted(stage="tune", total_steps=total, description="prompt tuning on tiny:gpt2", time=start))
    for step in range(1, total + 1):
        now = start + step * step_s
        renderer(ev.Metric(stage="tune", step=step, name="loss", value=1.0 / step, time=now))
        renderer(ev.Progress(stage="tune", step=step, total_steps=total, tokens_per_s=1234.0, step_seconds=step_s,
                             time=now))
    renderer(ev.StageFinished(stage="tune", seconds=total * step_s, time=start + total * step_s))


def test_not_a_terminal_prints_plain_progress_lines_every_tenth():
    console, out = plain_console()
    with ConsoleRenderer(console) as renderer:
        feed(renderer)
    text = out.getvalue()
    assert "\x1b[" not in text and "━" not in text  # no colour codes, no bars
    steps = [int(m) for m in re.findall(r"tune: step (\d+)/100", text)]
    assert steps == [1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    line = next(l for l in text.splitlines() if "step 50/100" in l)
    assert "(50%)" in line and "loss 0.0200" in line and "1,234 tok/s" in line
    assert "elapsed 0:00:25" in line and "ETA 0:00:25" in line
    assert "tune: prompt tuning on tiny:gpt2 (100 steps)" in text and "tune done in 50.0 s" in text


def test_eta_follows_the_steps_pace_not_what_came_before_the_first_step():
    """Distillation's first step comes after minutes of the teacher's pass, and a resumed stage starts
    at step N: neither may turn into an ETA of hours (it once said 65:45:55 for a 6-minute stage)."""
    console, out = plain_console()
    renderer = ConsoleRenderer(console)
    renderer(ev.StageStarted(stage="distill", total_steps=1200, time=0.0))
    renderer(ev.Progress(stage="distill", step=1, total_steps=1200, step_seconds=0.3, time=180.0))
    renderer(ev.Progress(stage="distill", step=600, total_steps=1200, step_seconds=0.3, time=180.0 + 599 * 0.3))
    renderer(ev.StageStarted(stage="tune", total_steps=150, time=1000.0))  # resumed at step 100
    renderer(ev.Progress(stage="tune", step=101, total_steps=150, step_seconds=2.0, time=1002.0))
    renderer(ev.Progress(stage="tune", step=120, total_steps=150, step_seconds=2.0, time=1040.0))
    lines = out.getvalue().splitlines()
    assert "ETA 0:06:00" in lines[1] and "elapsed 0:03:00" in lines[1]  # 1199 steps × 0.3 s
    assert "ETA 0:03:00" in lines[2]  # 600 steps at the measured 0.3 s
    assert "ETA 0:01:38" in lines[4] and "ETA 0:01:00" in lines[5]  # 49 × 2 s, then 30 × 2 s


def test_a_slow_stage_prints_every_interval():
    console, out = plain_console()
    renderer = ConsoleRenderer(console, interval_s=30.0)
    feed(renderer, total=1000, step_s=20.0)  # a tenth of the steps takes 2000 s: the 30 s clock decides
    steps = [int(m) for m in re.findall(r"tune: step (\d+)/1000", out.getvalue())]
    assert steps[:4] == [1, 3, 5, 7] and steps[-1] == 1000


def test_a_long_path_is_never_wrapped():
    console, out = plain_console(width=40)
    renderer = ConsoleRenderer(console)
    renderer(ev.ArtifactSaved(stage="tune", path=LONG_PATH, what="prompt"))
    renderer(ev.Log(message=f"loading data {LONG_PATH}"))
    console.print(results_table({"preset": "demo", "task": LONG_PATH, "test_examples": 500,
                                 "accuracy": {"full_zs": 0.536, "post": 0.628}, "gap_closed": 0.5,
                                 "seconds": {"distill": 270, "tune": 84}, "privacy": None}))
    lines = out.getvalue().splitlines()
    assert sum(LONG_PATH in line for line in lines) == 3, out.getvalue()
    assert any("test accuracy (500 examples)" in line for line in lines)
    assert any(re.search(r"post\s+│\s+62\.80", line) for line in lines)
    assert any("minutes: distill 4.5, tune 1.4   privacy: not private" in line for line in lines)


def test_markup_in_user_strings_is_printed_as_is():
    console, out = plain_console()
    renderer = ConsoleRenderer(console)
    renderer(ev.Log(message="reading [/]odd[bold] name"))
    renderer(ev.StageStarted(stage="tune", total_steps=2, description="[red]x"))
    print_error(console, "data file a[/]b.csv not found")
    text = out.getvalue()
    assert "reading [/]odd[bold] name" in text and "[red]x" in text
    assert "error: data file a[/]b.csv not found" in text


def test_tables_in_a_log_keep_their_natural_width():
    from typer.testing import CliRunner
    from engine.presets import describe
    from post_tui.cli import app
    result = CliRunner().invoke(app, ["presets", "list"])  # stdout is not a terminal here
    assert result.exit_code == 0
    assert any(describe("mr-smollm2") in line for line in result.stdout.splitlines())


def test_on_a_terminal_bars_and_log_lines_still_work():
    out = io.StringIO()
    console = make_console(file=out, width=120, force_terminal=True, color_system=None)
    with ConsoleRenderer(console) as renderer:
        assert not renderer.plain
        renderer(ev.Log(message="reading [/]odd name"))
        feed(renderer, total=20)
    text = out.getvalue()
    assert "reading [/]odd name" in text and "tune done in 10.0 s" in text and "20/20" in text


def test_several_processes_print_one_memory_line_per_rank_at_a_stage_end():
    console, out = plain_console()
    ranks = [{"rank": r, "device": "cpu", "rss_mib": 500.0 + r, "peak_rss_mib": 800.0, "tokens_per_s": 1500.0}
             for r in (0, 1)]
    with ConsoleRenderer(console) as renderer:
        renderer(ev.RanksSample(stage="tune", ranks=ranks, final=False, time=1000.0))  # a tick: the TUI's, not a log line
        renderer(ev.RanksSample(stage="tune", ranks=ranks[:1], final=True, time=1001.0))  # one process: nothing
        assert out.getvalue() == ""
        renderer(ev.RanksSample(stage="tune", ranks=ranks, final=True, time=1002.0))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "tune rank0 cpu" in lines[0] and "tune rank1 cpu" in lines[1]
    assert "RSS 501MiB peak 800MiB" in lines[1] and "1,500 tok/s" in lines[1]
