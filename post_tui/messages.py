"""Textual messages that carry the engine's events from its worker thread to the UI.

The engine knows nothing of Textual: a bus subscriber in the worker thread wraps each engine
event in `EngineEvent` and posts it (`post_message` is thread-safe); the run's outcome arrives as
one `RunEnded`.
"""
from __future__ import annotations

from typing import Any

from textual.message import Message


class EngineEvent(Message):
    """One engine event (engine.events.*), posted from the engine's worker thread."""

    def __init__(self, event: Any) -> None:
        super().__init__()
        self.event = event


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
