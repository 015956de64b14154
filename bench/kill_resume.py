"""kill -9 a real run at chosen points, resume it, and compare with an uninterrupted run.

    python bench/kill_resume.py --preset demo --kill distill:300 --kill transfer:post:75 --out runs/kill-demo

A kill point is `STAGE:STEP` (a stage name as the events log has it, e.g. `transfer:post`): the
run is killed with SIGKILL as soon as its events log shows that stage at that step — chosen from
the log, never by sleeping. Each run gets its own cache folder (the fetched models, data and teacher
states are linked in, students are not), so the killed run cannot reuse the reference's student. Reports both runs' accuracies and, per kill, the step killed at, the checkpoint step the
resume continued from, and the seconds of work lost (the killed process's own step times after
that checkpoint). Re-running with the same --out reuses finished phases.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "post_tui.cli", *args]


def events_of(run_dir: Path) -> list[dict]:
    """Every readable line of the run's events log (a line torn by a kill is skipped)."""
    path = Path(run_dir) / "events.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _reached(events: list[dict], stage: str, step: int) -> bool:
    return any(e.get("event") == "Progress" and e.get("stage") == stage and e.get("step", 0) >= step for e in events)


def run_until(args: list[str], env: dict, run_dir: Path, stage: str, step: int, timeout: float) -> bool:
    """Start `args`; SIGKILL it once the events log shows `stage` at ≥ `step` (True), or let it finish (False)."""
    seen = len(events_of(run_dir))
    proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if _reached(events_of(run_dir)[seen:], stage, step):
                proc.send_signal(signal.SIGKILL)
                proc.wait(60)
                return True
            time.sleep(0.02)
        if proc.poll() is None:
            raise TimeoutError(f"{' '.join(args)} did not reach {stage} step {step} in {timeout:.0f} s")
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {proc.stderr.read().decode()[-2000:]}")
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(60)
        proc.stderr.close()


def complete(args: list[str], env: dict, timeout: float) -> None:
    done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0 or "Traceback" in done.stderr:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stderr[-2000:]}")


def private_cache(base: Path, folder: Path) -> Path:
    """A cache with everything of `base` linked in but its students (each run distils its own; the
    teacher's cached hidden states are the teacher's outputs on the corpus, content-keyed, shared)."""
    folder.mkdir(parents=True, exist_ok=True)
    for entry in base.iterdir() if base.is_dir() else []:
        link = folder / entry.name
        if entry.name not in ("students", ".partial") and not link.exists():
            link.symlink_to(entry.resolve())
    return folder


def by_process(events: list[dict]) -> list[list[dict]]:
    """The events log cut at each RunStarted: one list per process that ran on the folder."""
    runs: list[list[dict]] = []
    for e in events:
        if e.get("event") == "RunStarted" or not runs:
            runs.append([])
        runs[-1].append(e)
    return runs


def lost_work(killed: list[dict], resumed: list[dict], stage: str) -> dict:
    """What one kill cost: the step it hit, the checkpoint step the next process continued from,
    and the killed process's own seconds on the steps after that checkpoint."""
    steps = [e for e in killed if e.get("event") == "Progress" and e.get("stage") == stage]
    at = max((e["step"] for e in steps), default=0)
    starts = [int(m.group(1)) for e in resumed if e.get("event") == "Log"
              for m in [re.search(rf"^{re.escape(stage)}: continuing from the checkpoint at step (\d+)",
                                  e.get("message", ""))] if m]
    start = starts[0] if starts else 0
    seconds = sum(e.get("step_seconds") or 0 for e in steps if e["step"] > start)
    return {"stage": stage, "killed_at_step": at, "resumed_from_step": start, "lost_seconds": round(seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--kill", action="append", required=True, help="STAGE:STEP, e.g. distill:300 (repeatable, in order)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--set", dest="sets", action="append", default=[], help="--set for both runs")
    ap.add_argument("--timeout", type=float, default=7200)
    ap.add_argument("--only", choices=("reference", "killed"), help="run one phase (the two may run side by side); "
                    "a later run without --only writes the comparison")
    args = ap.parse_args()
    from engine.assets import cache_root
    sets = [a for s in args.sets for a in ("--set", s)]
    out = args.out.resolve()
    report_path = out / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {"preset": args.preset, "sets": args.sets}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}

    reference = out / "reference"
    if args.only != "killed" and not (reference / "results.json").is_file():
        start = time.time()
        env_ref = {**env, "POST_CACHE": str(private_cache(cache_root(), out / "cache-reference"))}
        args_ref = cli("run", "--resume", str(reference), *sets) if reference.exists() else \
            cli("run", "--preset", args.preset, "--out", str(reference), *sets)
        complete(args_ref, env_ref, args.timeout)
        report["reference_minutes"] = round((time.time() - start) / 60, 2)

    killed = out / "killed"
    env_kill = {**env, "POST_CACHE": str(private_cache(cache_root(), out / "cache-killed"))}
    if args.only != "reference" and not (killed / "results.json").is_file():
        report["kills"], start = [], time.time()
        for point in args.kill:
            stage, step = point.rsplit(":", 1)
            first = not killed.exists()
            args_k = cli("run", "--preset", args.preset, "--out", str(killed), *sets) if first else \
                cli("run", "--resume", str(killed), *sets)
            if not run_until(args_k, env_kill, killed, stage, int(step), args.timeout):
                raise SystemExit(f"the run finished before reaching {point}")
            report["kills"].append({"point": point})
        complete(cli("run", "--resume", str(killed), *sets), env_kill, args.timeout)
        report["killed_minutes"] = round((time.time() - start) / 60, 2)
        runs = by_process(events_of(killed))
        for i, kill in enumerate(report["kills"]):
            kill.update(lost_work(runs[i], runs[i + 1], kill["point"].rsplit(":", 1)[0]))

    out.mkdir(parents=True, exist_ok=True)
    if not ((reference / "results.json").is_file() and (killed / "results.json").is_file()):
        report_path.write_text(json.dumps(report, indent=2))
        return
    want = json.loads((reference / "results.json").read_text())["accuracy"]
    got = json.loads((killed / "results.json").read_text())["accuracy"]
    report["accuracy"] = {m: {"reference": want[m], "killed_and_resumed": got.get(m),
                              "difference_points": round(100 * (got.get(m, float("nan")) - want[m]), 2)} for m in want}
    out.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
