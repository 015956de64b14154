"""`post-tui`: the Textual app (placeholder until the TUI lands)."""
import sys


def main() -> None:
    print("post-tui: the Textual dashboard is not built yet; use the headless CLI: post run --preset demo")
    sys.exit(0)
