"""The privacy meter: ε spent of the target, with δ, σ, q and steps; "not private" when off."""
from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from post_tui.render import ledger_note
from post_tui.widgets import format as fmt
from post_tui.widgets.state import RunState

LEVELS = ((0.5, "safe", "green"), (0.8, "watch", "yellow"), (0.95, "near", "dark_orange"),
          (float("inf"), "limit", "bold red"))


def level(fraction: float) -> tuple[str, str]:
    for bound, name, style in LEVELS:
        if fraction < bound:
            return name, style
    return LEVELS[-1][1], LEVELS[-1][2]


class PrivacyMeter(Static):
    DEFAULT_CSS = "PrivacyMeter { height: auto; }"

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.plain = ""
        self.level = "off"

    def show(self, state: RunState) -> None:
        stage, spent = state.privacy_shown()
        text = Text()
        text.append("privacy ", style="bold")
        if spent is not None and stage and stage != "?":
            text.append(f"({stage}) ", style="dim")
        if spent is None:
            if state.privacy_enabled:
                target = f" (target ε {state.target_epsilon:g})" if state.target_epsilon else ""
                text.append(f"on: waiting for the first private step{target}", style="dim")
                self._set_level("waiting")
            elif state.privacy_enabled is None:
                text.append("unknown", style="dim")
                self._set_level("off")
            else:
                text.append("not private", style="bold yellow")
                text.append("  (no [privacy] epsilon / noise_multiplier set)", style="dim")
                self._set_level("off")
        else:
            target = spent.target_epsilon
            narrow = self.size.width < 100
            gap = " " if narrow else "  "
            if target:
                fraction = spent.epsilon / target
                name, style = level(fraction)
                text.append(f"ε {spent.epsilon:.2f} / {target:g} ", style=style)
                text.append(fmt.bar(fraction, 6 if narrow else 24), style=style)
                text.append(f" {100 * fraction:.0f}%", style=style)
                self._set_level(name)
            else:
                text.append(f"ε {spent.epsilon:.2f} (no target)", style="cyan")
                self._set_level("safe")
            text.append(f"{gap}δ {spent.delta:.2g}{gap}σ {spent.noise_multiplier:.3g}{gap}q {spent.sample_rate:.3g}"
                        f"{gap}steps {spent.steps}{gap}{spent.accountant}")
            note = ledger_note(spent)
            if note:  # every release on this data, composed: what the data has really spent
                text.append(f"{gap}ledger{note.removeprefix(',').replace('data ', '')}", style="bold magenta")
        self.plain = text.plain
        self.update(text)

    def _set_level(self, name: str) -> None:
        for old in ("off", "waiting", "safe", "watch", "near", "limit"):
            self.set_class(old == name, f"-{old}")
        self.level = name
