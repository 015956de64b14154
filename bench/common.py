"""Shared helpers for the benchmark scripts: models, a batch of real text, medians."""
from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def median_time(fn, repeats: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def models(large_ref: str, blocks: list[int]):
    """(large, student, tokenizer); a real asset when cached, else a tiny random pair."""
    from engine.models import load, make_student
    large, tok = load(large_ref)
    large.requires_grad_(False)
    student = make_student(large, blocks).requires_grad_(False)
    return large, student, tok


def texts(n: int) -> list[str]:
    try:
        import pandas as pd
        from engine.assets import ensure
        frame = pd.read_parquet(ensure("mr") / "train.parquet")
        return [t + " It was" for t in frame.text[:n]]
    except Exception:  # no asset: generated smoke sentences
        from engine.data.smoke import make_rows
        return [r["text"] + " It was" for r in make_rows(n, 0)]


def pyplot():
    """matplotlib's pyplot on the file-only backend, or None where matplotlib is not installed (no plot)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(fig, ax, path) -> None:
    """The legend, a tight layout and the PNG written atomically, as every artifact."""
    ax.legend(fontsize=8)
    fig.tight_layout()
    from engine.artifacts import write_with
    write_with(path, lambda temp: fig.savefig(temp, dpi=120, format="png"))


def run_main(main) -> None:
    """A script's main: a refusal (SystemExit with a message, or the engine's PostError) prints its one line and
    exits 2, as every bad input."""
    import sys
    from engine.errors import PostError
    try:
        main()
    except PostError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            raise SystemExit(2) from None
        raise
