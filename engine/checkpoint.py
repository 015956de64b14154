"""Checkpoints inside long stages: one file per trained thing, written atomically.

A checkpoint holds what the stage needs to continue exactly where it was (weights, optimizer,
step, random states, the loop's history) and the fingerprint of the stage's inputs; it is
only loaded back when that fingerprint matches, so a changed config never continues an old
run. It is written every `runtime.checkpoint_every` steps or `runtime.checkpoint_minutes`,
whichever comes first, and when a stage is cancelled; `kill -9` loses at most that interval.
It is removed once the stage's final artifacts and record are written.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from engine import artifacts


class Checkpointer:
    def __init__(self, ctx, path: Path, fingerprint: str):
        runtime = ctx.config.runtime
        self.ctx, self.path, self.fingerprint = ctx, Path(path), fingerprint
        self.every_steps, self.every_seconds = runtime.checkpoint_every, runtime.checkpoint_minutes * 60
        # Under DP (engine.tune) a step's noise is spent once journaled and never drawn again, so a step lost
        # after the last checkpoint is lost for good: there the loop checkpoints after every step, the last too.
        self.each_step = False
        self._last = self._logged = time.monotonic()

    def due(self, step: int) -> bool:
        if self.each_step:
            return True
        if self.every_steps and step % self.every_steps == 0:
            return True
        return bool(self.every_seconds) and time.monotonic() - self._last >= self.every_seconds

    def save(self, step: int, state: dict) -> None:
        artifacts.torch_save(self.path, {"fingerprint": self.fingerprint, "step": step, "state": state})
        self._last = time.monotonic()
        if not self.each_step or self._log_due(step):  # every step under DP: logged at the usual interval only
            self.ctx.log(f"checkpoint at step {step}: {self.path}")
            self._logged = self._last

    def _log_due(self, step: int) -> bool:
        if self.every_steps and step % self.every_steps == 0:
            return True
        return bool(self.every_seconds) and self._last - self._logged >= self.every_seconds

    def load(self) -> tuple[int, dict] | None:
        """(step, state) of a checkpoint made for the same inputs, or None."""
        if not self.path.is_file():
            return None
        try:
            blob = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as err:  # a damaged checkpoint is ignored (the stage restarts), never trusted
            self.ctx.log(f"ignoring damaged checkpoint {self.path}: {type(err).__name__}", "warning")
            return None
        if not isinstance(blob, dict) or blob.get("fingerprint") != self.fingerprint:
            self.ctx.log(f"ignoring checkpoint {self.path}: it was made for other inputs")
            return None
        return blob["step"], blob["state"]

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
