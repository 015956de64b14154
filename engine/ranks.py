"""Other ranks' memory and throughput, reported on rank 0 (several processes, engine.distributed).

Only rank 0 emits events; the other ranks' figures reach it by one small gather of a dict per rank
(`gather_objects`) at moments every rank reaches together: a stage's end, and every `EVERY_STEPS`
steps of a training loop (the step count is the same on every rank: the ranks stop after the same
step). Rank 0 then emits a typed `RanksSample` with one entry per rank. With one process the stage's
end still yields a one-rank sample (the same shape for the run folder and the dashboards), and no
per-step ticks (the MemoryMonitor already samples this process).
"""
from __future__ import annotations

import time

from engine import distributed
from engine.events import RanksSample
from engine.memory import process_sample

EVERY_STEPS = 50  # a gather of a few hundred bytes per rank: negligible beside 50 training steps


class _Work:
    """Tokens this process pushed through its models, and the seconds that took, since the last report."""

    def __init__(self) -> None:
        self.tokens, self.seconds = 0, 0.0

    def take(self) -> dict:
        rate = self.tokens / self.seconds if self.seconds > 0 else None
        out = {"tokens": self.tokens, "busy_seconds": round(self.seconds, 3), "tokens_per_s": rate}
        self.tokens, self.seconds = 0, 0.0
        return out


_WORK = _Work()


def record_work(tokens: int, seconds: float) -> None:
    """A training step of this rank: its own share's tokens (not the whole step's) and its seconds."""
    _WORK.tokens += int(tokens)
    _WORK.seconds += float(seconds)


def local() -> dict:
    return {"rank": distributed.rank(), **process_sample(), **_WORK.take(), "time": time.time()}


def report(ctx, stage: str, final: bool = False) -> list[dict]:
    """Gather every rank's figures (a collective: every rank calls it at the same point); rank 0 emits them."""
    ranks = distributed.gather_objects(local())
    if distributed.is_main():
        ctx.emit(RanksSample(stage=stage, ranks=ranks, final=final))
    return ranks


def tick(ctx, stage: str, step: int) -> None:
    """Inside a training loop, after the step's collectives: a report every EVERY_STEPS steps (W > 1 only)."""
    if distributed.active() and step % EVERY_STEPS == 0:
        report(ctx, stage)


PEAK_KEYS = ("peak_rss_mib", "peak_allocated_mib", "gpu_total_mib", "total_mib")


def peaks() -> list[dict]:
    """Each rank's peak memory for results.json (a collective): rank, host, device and its peaks."""
    return [{k: r[k] for k in ("rank", "host", "device", *PEAK_KEYS) if k in r}
            for r in distributed.gather_objects(local())]
