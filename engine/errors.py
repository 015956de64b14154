"""The one error type users see.

Anything the user can fix (bad config, missing file, unreachable hub, budget too small)
is raised as `PostError` with a single line that says what is wrong and how to fix it.
The CLI and the TUI print that line and exit with code 2 — never a traceback.
"""


class PostError(Exception):
    """A user-facing, one-line error (exit code 2)."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line

    def __str__(self) -> str:
        return self.args[0]
