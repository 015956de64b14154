"""Textual messages that carry the engine's events from its worker thread to the UI.

The engine knows nothing of Textual: a bus subscriber in the worker thread (screens/dashboard.py's
`EventPump`) queues each engine event and posts an `EngineEvents` message (`post_message` is
thread-safe) unless one is already on its way — a fast engine costs the UI one message per
loop turn, not one per event. The run's outcome arrives as one `RunEnded`.
"""
from __future__ import annotations

from typing import Any

from textual.message import Message


class EngineEvents(Message):
    """Engine events (engine.events.*) are waiting: the handler takes them all from `pump.drain()`."""

    def __init__(self, pump: Any) -> None:
        super().__init__()
        self.pump = pump


class RunEnded(Message):
    """The engine returned: outcome is "finished", "cancelled" or "failed" (message: the one-line error)."""

    def __init__(self, outcome: str, message: str = "", results: dict | None = None) -> None:
        super().__init__()
        self.outcome = outcome
        self.message = message
        self.results = results


class RunLoaded(Message):
    """A past run folder was read (in a worker) into a RunState, ready to show."""

    def __init__(self, state: Any, error: str = "") -> None:
        super().__init__()
        self.state = state
        self.error = error
