"""Compare a run folder's public set and distillation corpus, under --set changes, with its private data
(engine.privacy.boundary.check_run) and keep them as compared — what `post run --resume` does before a
transfer, without running the stages. For the lever scripts, which then run `post transfer` alone.

    python bench/compare_public.py RUN_DIR [KEY=VALUE ...]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/compare_public.py` from the repo root works


USAGE = "usage: python bench/compare_public.py RUN_DIR [KEY=VALUE ...]"


def main(run_dir: Path, sets: list[str]) -> None:
    from engine.config import apply_overrides, read_toml, validate
    from engine.errors import PostError
    if not (run_dir / "config.toml").is_file():
        raise PostError(f"{run_dir} is not a run folder (no config.toml): give the folder a run wrote ({USAGE})")
    if any(s.startswith("-") for s in sets):
        raise PostError(f"give the settings as KEY=VALUE, without --set ({USAGE})")
    from engine.context import RunContext
    from engine.events import EventBus
    from engine.privacy import boundary
    config = validate(apply_overrides(read_toml(run_dir / "config.toml"), sets))
    bus = EventBus()
    bus.subscribe(lambda e: print(f"{e.level}: {e.message}") if getattr(e, "level", "info") == "warning" else None)
    from engine.parties import WITHHELD
    from engine.runlock import RunLock
    ctx = RunContext(config=config, run_dir=run_dir, bus=bus)
    if config.task.source in ("smoke", WITHHELD) or config.public.source == "generated":
        print(f"{run_dir}: nothing to compare (smoke task, the owner's folder or a generated public set)")
        return
    with RunLock(run_dir):  # CHECKED is read, merged and written: not beside a run in the same folder
        boundary.check_run(ctx, ["distill", "tune", "transfer"])  # an unreadable set is an error here, not a silent pass
    print(f"{run_dir}: public set and corpus compared with the private data")


if __name__ == "__main__":
    from bench.common import run_main

    def cli() -> None:
        if len(sys.argv) < 2:
            sys.exit(f"error: {USAGE}")
        main(Path(sys.argv[1]), sys.argv[2:])
    run_main(cli)
