"""The loss curve of one stage (validation accuracy on a right-hand axis where there is one)."""
from __future__ import annotations

from rich.text import Text
from textual_plotext import PlotextPlot

from post_tui.widgets.state import StageView


class LossPlot(PlotextPlot):
    """Redrawn only when the plotted stage's data changed (the dashboard calls `show` on a timer)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.stage: str | None = None
        self._drawn: tuple[str | None, int] | None = None
        self.points = 0
        self.title_text = ""
        self.empty = "loss: no training step yet"

    def render(self):
        if self.empty:
            return Text(self.empty, style="dim")
        return super().render()

    def show(self, view: StageView | None, position: str = "", private: bool = False) -> None:
        """`private`: a DP stage's curve — computed from the private data without noise, so it is
        marked as the user's own view (post package and the owner's folder never carry it)."""
        key = (view.name if view else None, view.version if view else -1, private)
        if key == self._drawn:
            return
        self._drawn = key
        self.stage = key[0]
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        if view is None or not view.loss.last:
            self.points = 0
            self.empty = f"{view.name if view else 'loss'}: no training step yet"
            self.refresh()
            return
        self.empty = ""
        xs, ys = view.loss.points()
        self.points = len(xs)
        title = f"{view.name} loss"
        if ys:
            title += f" {ys[-1]:.4f}"
        vx, vy = view.val.points()
        if vy:
            title += f" · val acc {vy[-1]:.3f}"
        if position:
            title += f"  {position}"
        if private:
            title += "  [private: not noised, stays on this machine]"
        self.title_text = title
        plt.title(title)
        if xs:
            plt.plot(xs, ys, marker="braille", color="cyan")
            lo, hi = int(xs[0]), int(xs[-1])
            count = min(5, hi - lo + 1)
            ticks = sorted({round(lo + i * (hi - lo) / (count - 1)) for i in range(count)}) if count > 1 else [lo]
            plt.xticks(ticks, [str(t) for t in ticks])
        if vx:
            plt.plot(vx, vy, marker="dot", color="green", yside="right")
        plt.xlabel("step")
        self.refresh()
