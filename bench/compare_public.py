"""Compare a run folder's public set and distillation corpus, under --set changes, with its private data
(engine.privacy.boundary.check_run) and keep them as compared — what `post run --resume` does before a
transfer, without running the stages. For the lever scripts, which then run `post transfer` alone.

    python bench/compare_public.py RUN_DIR [KEY=VALUE ...]
"""
from __future__ import annotations

import sys
from pathlib import Path


def main(run_dir: Path, sets: list[str]) -> None:
    from engine.config import apply_overrides, read_toml, validate
    from engine.context import RunContext
    from engine.events import EventBus
    from engine.privacy import boundary
    config = validate(apply_overrides(read_toml(run_dir / "config.toml"), sets))
    bus = EventBus()
    bus.subscribe(lambda e: print(f"{e.level}: {e.message}") if getattr(e, "level", "info") == "warning" else None)
    ctx = RunContext(config=config, run_dir=run_dir, bus=bus)
    if config.task.source == "smoke" or config.public.source == "generated":
        print(f"{run_dir}: nothing to compare (smoke task or generated public set)")
        return
    boundary.check_run(ctx, ["tune", "transfer"])  # an unreadable set is an error here, not a silent pass
    print(f"{run_dir}: public set and corpus compared with the private data")


if __name__ == "__main__":
    from engine.errors import PostError
    try:
        main(Path(sys.argv[1]), sys.argv[2:])
    except PostError as err:
        sys.exit(f"error: {err}")
