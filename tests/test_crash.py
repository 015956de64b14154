"""kill -9 harness: a smoke run is killed at points spread over every stage, resumed each time,
and ends where an uninterrupted run of the same seed ends.

Kill points are chosen from the run's own events log (a Progress event of a stage at a step),
never by sleeping. Checkpoints every 5 steps (`runtime.checkpoint_every`), so each kill loses at
most 5 steps. Without DP every random state is in the checkpoint (batch order replayed, optimizer
moments, the student's data order and generator), so the resumed run computes the same floats as
the uninterrupted one on this machine: accuracies are compared exactly up to one test example
(1/128), a margin that only a real divergence exceeds. With DP the noise after a resume is drawn
afresh (reusing it would leak), so the check there is the certificate: every step any process
took is in it, and ε is what Opacus gives for it.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from bench.kill_resume import cli as _cli, complete, events_of as _events, run_until
from engine import artifacts
from engine.artifacts import TEMP_MARK

ROOT = Path(__file__).resolve().parents[1]
SETS = ["--set", "runtime.checkpoint_every=5", "--set", "runtime.threads=1"]
TIMEOUT = 240


def _env(cache: Path) -> dict:
    return {**os.environ, "POST_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(ROOT)}


def _run_until(args, env, run_dir, stage, step) -> bool:
    return run_until(args, env, run_dir, stage, step, TIMEOUT)


def _complete(args, env) -> None:
    complete(args, env, TIMEOUT)


# (stage, step) kill points: every stage of the smoke pipeline, early, mid and late
KILLS = [("distill", 7), ("distill", 33), ("distill", 58), ("tune", 12), ("tune", 41), ("full_pt", 26),
         ("transfer:post", 9), ("transfer:post", 52), ("transfer:output", 30), ("transfer:shift", 3),
         ("eval", 4)]


def test_killed_everywhere_resumes_to_the_uninterrupted_result(tmp_path):
    reference = tmp_path / "reference"
    _complete(_cli("run", "--preset", "smoke", "--out", str(reference), *SETS), _env(tmp_path / "cache-ref"))

    run_dir, env = tmp_path / "killed", _env(tmp_path / "cache-killed")
    first = _cli("run", "--preset", "smoke", "--out", str(run_dir), *SETS)
    resume = _cli("run", "--resume", str(run_dir), *SETS)
    kills = 0
    for i, (stage, step) in enumerate(KILLS):
        kills += _run_until(first if i == 0 else resume, env, run_dir, stage, step)
    assert kills == len(KILLS)  # every kill point was reached, none skipped by a finished run
    assert not (run_dir / "results.json").exists()  # the last kill was in eval, before results
    _complete(resume, env)

    want = json.loads((reference / "results.json").read_text())["accuracy"]
    got = json.loads((run_dir / "results.json").read_text())["accuracy"]
    assert want.keys() == got.keys()
    for method in want:
        assert abs(want[method] - got[method]) <= 1 / 128 + 1e-9, (method, want[method], got[method])
    # stages were continued from checkpoints, not restarted (each kill loses at most 5 steps)
    logs = [e["message"] for e in _events(run_dir) if e.get("event") == "Log"]
    assert any("continuing from the checkpoint" in m for m in logs)
    assert not list(run_dir.rglob(f"*{TEMP_MARK}*")) and not list(run_dir.rglob("*.pt"))
    for stage in ("distill", "tune", "full_pt", "transfer", "eval"):
        assert json.loads((run_dir / stage / "done.json").read_text())["status"] == "completed"


def test_killed_dp_tune_certificate_covers_every_step_taken(tmp_path):
    from engine.privacy.certificate import verify_certificate
    run_dir, env = tmp_path / "dp", _env(tmp_path / "cache")
    dp = [*SETS, "--set", "privacy.epsilon=8", "--set", "eval.full_pt=false",
          "--set", "transfer.methods=[\"post\",\"direct\"]"]
    first = _cli("run", "--preset", "smoke", "--out", str(run_dir), *dp)
    resume = _cli("run", "--resume", str(run_dir), *dp)
    assert _run_until(first, env, run_dir, "tune", 8)
    assert _run_until(resume, env, run_dir, "tune", 23)  # 23: three steps after the checkpoint at 20 are lost
    assert _run_until(resume, env, run_dir, "tune", 47)
    _complete(resume, env)

    taken = sum(1 for e in _events(run_dir) if e.get("event") == "Progress" and e.get("stage") == "tune")
    cert = json.loads((run_dir / "tune" / "privacy.json").read_text())
    assert cert["steps"] >= taken  # every step any process took (and the lost ones) is accounted
    assert cert["steps"] == json.loads((run_dir / "tune" / "privacy.journal.json").read_text())["steps"]
    assert verify_certificate(run_dir / "tune" / "privacy.json")["epsilon"] <= 8.0
    logs = [e["message"] for e in _events(run_dir) if e.get("event") == "Log"]
    assert any("stay counted as spent" in m for m in logs)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["privacy"]["steps"] == cert["steps"]


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM", "SIGHUP", "SIGTERM+SIGINT"])
def test_ctrl_c_kill_and_hangup_cancel_gracefully_and_resume(tmp_path, signame):
    """Ctrl-C (and `kill`, and a dropped SSH session) used to abort with 'terminate called without an
    active exception' (exit 134) and save nothing; now the step finishes, a checkpoint and a
    `cancelled` record are written, the exit code is 130, and a resume continues."""
    import signal
    import subprocess
    import time
    run_dir, env = tmp_path / "run", _env(tmp_path / "cache")
    # tune runs 100 steps and is signalled at step 10: the rest of its steps outlast the events' lag (at 20
    # steps a fast box could finish the stage before the signal landed, and cancel the next one instead)
    fast = [a for s in ("distill.steps=20", "tune.steps=100", "transfer.steps=20", "eval.full_pt=false")
            for a in ("--set", s)]
    proc = subprocess.Popen(_cli("run", "--preset", "smoke", "--out", str(run_dir), *fast),
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        if any(e.get("event") == "Progress" and e.get("stage") == "tune" and e["step"] >= 10 for e in _events(run_dir)):
            for name in signame.split("+"):  # two at once: `timeout` signals the process and its group
                proc.send_signal(getattr(signal, name))
            break
        time.sleep(0.02)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "terminate called" not in stderr and "Traceback" not in stderr
    assert "post run --resume" in stderr and ("still finishing" in stderr) == ("+" in signame)
    record = json.loads((run_dir / "tune" / "done.json").read_text())
    assert record["status"] == "cancelled" and (run_dir / "tune" / "checkpoint.pt").is_file()
    _complete(_cli("run", "--resume", str(run_dir)), env)
    assert json.loads((run_dir / "tune" / "done.json").read_text())["status"] == "completed"
    assert (run_dir / "results.json").is_file()


def test_run_survives_the_death_of_whoever_reads_its_output(tmp_path):
    """`post run … | tee log` over SSH: when the reader dies, writes fail (EPIPE / SIGPIPE); the run
    must go on to its results, not die silently mid-stage."""
    import subprocess
    import time
    run_dir, env = tmp_path / "run", _env(tmp_path / "cache")
    # tune runs 100 steps and is signalled at step 10: the rest of its steps outlast the events' lag (at 20
    # steps a fast box could finish the stage before the signal landed, and cancel the next one instead)
    fast = [a for s in ("distill.steps=20", "tune.steps=100", "transfer.steps=20", "eval.full_pt=false")
            for a in ("--set", s)]
    proc = subprocess.Popen(_cli("run", "--preset", "smoke", "--out", str(run_dir), *fast),
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and not any(e.get("stage") == "distill" for e in _events(run_dir)):
        time.sleep(0.05)
    proc.stdout.close()  # the reader is gone
    proc.stderr.close()
    assert proc.wait(TIMEOUT) == 0
    assert json.loads((run_dir / "results.json").read_text())["accuracy"]


def test_a_short_command_killed_mid_write_leaves_no_temp_folder(tmp_path):
    """`post export / package / kit build --out DIR` write DIR whole or not at all. `kill` (SIGTERM) mid-write
    must not leave the hidden temp folder beside DIR (no run folder's clean-up ever visits an --out), and a
    temp folder a kill -9 left is removed by the next write there."""
    import subprocess
    import sys
    from engine import artifacts
    from engine.errors import TEMP_MARK
    out = tmp_path / "adapter"
    script = ("import os, signal, time\nfrom pathlib import Path\nfrom engine import artifacts\n"
              "from post_tui.cli import guarded\n"
              "def go():\n    with artifacts.atomic_dir(Path(r'%s')) as temp:\n"
              "        (temp / 'half.json').write_text('{')\n        os.kill(os.getpid(), signal.SIGTERM)\n"
              "        time.sleep(30)\n"
              "guarded(go)\n" % out)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, done.stderr
    assert list(tmp_path.iterdir()) == []
    left = tmp_path / f".adapter{TEMP_MARK}999999999-deadbeef"  # a writer killed by -9: pid gone
    left.mkdir()
    (left / "half.json").write_text("{")
    with artifacts.atomic_dir(out) as temp:
        (temp / "whole.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


_DIE = {"before_save": ("import engine.tune as t\n"
                        "t.save_tuned = lambda *a, **k: os._exit(137)\n"),  # after the last step and its validation
        "before_record": ("import engine.records as r\n_write = r.write\n"
                          "def write(d, stage, status, *a, **k):\n"
                          "    if stage == 'tune' and status == 'completed':\n        os._exit(137)\n"
                          "    return _write(d, stage, status, *a, **k)\n"
                          "r.write = write\n")}


@pytest.mark.parametrize("point", sorted(_DIE))
def test_a_dp_tune_killed_after_its_last_step_resumes_to_its_trained_prompt(tmp_path, point):
    """A DP step is never taken again (its noise is spent), so a DP tune killed after its last step — during the
    last validation, or with its certificate written but not its record — must resume from a checkpoint of that
    step: neither restart from the initial prompt with no steps left (a 'completed' untrained prompt under a
    certificate of every step), nor compose with its own steps (refused at the same ε: a run that never finishes)."""
    import subprocess
    import sys
    run_dir, env = tmp_path / "dp", _env(tmp_path / "cache")
    env["POST_LEDGER"] = str(tmp_path / "ledger")
    dp = ["--set", "privacy.epsilon=8", "--set", "tune.steps=20", "--set", "distill.steps=10",
          "--set", "eval.full_pt=false", "--set", "transfer.methods=[\"post\"]", "--set", "transfer.steps=5"]
    script = ("import os, sys\n" + _DIE[point] + "from post_tui.cli import main\n"
              "sys.argv = ['post', *sys.argv[1:]]\nmain()\n")
    killed = subprocess.run([sys.executable, "-c", script, "run", "--preset", "smoke", "--out", str(run_dir), *dp],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert not (run_dir / "tune" / "done.json").exists()
    _complete(_cli("run", "--resume", str(run_dir), *dp), env)
    record = json.loads((run_dir / "tune" / "done.json").read_text())
    assert record["status"] == "completed" and record["steps"] == 20
    logs = [e["message"] for e in _events(run_dir) if e.get("event") == "Log"]
    assert any("continuing from the checkpoint at step 20" in m for m in logs), logs
    assert not any("the prompt starts again" in m for m in logs)
    cert = json.loads((run_dir / "tune" / "privacy.json").read_text())
    assert cert["steps"] == 20 and cert["ledger"]["composed_epsilon"] <= 8.0  # 20 steps spent, counted once


def test_a_folder_moved_aside_by_a_writer_killed_between_its_renames_is_put_back(tmp_path):
    """atomic_dir replaces a folder in two renames (old aside, new in place): killed between them, the old one must
    come back — by the next writer of that folder, or by a run's clean_stale — not be swept as a temp folder."""
    import subprocess
    dead = subprocess.Popen(["true"])
    dead.wait()  # a process that has exited: its pid names the killed writer
    for name in ("package", "kit"):
        aside = tmp_path / f".{name}{TEMP_MARK}{dead.pid}-0123abcd{artifacts.PREVIOUS}"
        aside.mkdir()
        (aside / "prompt.txt").write_text("old")
    artifacts.clean_stale(tmp_path)
    assert (tmp_path / "package" / "prompt.txt").read_text() == "old"
    shutil.rmtree(tmp_path / "package")
    (tmp_path / "kit" / "prompt.txt").unlink()  # clean_stale put it back too: move it aside again by hand
    os.rename(tmp_path / "kit", tmp_path / f".kit{TEMP_MARK}{dead.pid}-0123abcd{artifacts.PREVIOUS}")
    with artifacts.atomic_dir(tmp_path / "kit") as temp:
        assert (tmp_path / "kit").is_dir()  # the old folder is back before the new one is written
        (temp / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kit"] and (tmp_path / "kit" / "new.txt").is_file()
