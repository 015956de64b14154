"""The loss curve of one stage (validation accuracy on a right-hand axis where there is one)."""
from __future__ import annotations

from textual_plotext import PlotextPlot

from post_tui.widgets.state import StageView


class LossPlot(PlotextPlot):
    """Redrawn only when the plotted stage's data changed (the dashboard calls `show` on a timer)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.stage: str | None = None
        self._drawn: tuple[str | None, int] = (None, -1)
        self.points = 0

    def show(self, view: StageView | None, position: str = "") -> None:
        key = (view.name if view else None, view.version if view else -1)
        if key == self._drawn:
            return
        self._drawn = key
        self.stage = key[0]
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        if view is None:
            plt.title("loss — waiting for the first training step")
            self.points = 0
            self.refresh()
            return
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
        plt.title(title)
        if xs:
            plt.plot(xs, ys, marker="braille", color="cyan")
        if vx:
            plt.plot(vx, vy, marker="dot", color="green", yside="right")
        plt.xlabel("step")
        self.refresh()
