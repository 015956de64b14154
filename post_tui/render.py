"""Rich rendering of engine events for the headless CLI."""
from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from engine import events as ev

METHOD_ORDER = ("full_zs", "full_pt", "cpt", "direct", "post", "output", "shift", "inference")


def print_error(console: Console, message: str) -> None:
    """The one error line: a red "error:" and the message as plain text (a path with `[/]` stays as it is)."""
    console.print(Text.assemble(("error:", "bold red"), " ", str(message)), highlight=False, soft_wrap=True)


class ConsoleRenderer:
    """Subscriber: one progress bar per stage with its latest loss; logs and privacy lines above."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(TextColumn("[bold]{task.description:<18}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=console, transient=False)
        self.tasks: dict[str, int] = {}
        self.loss: dict[str, float] = {}
        self.extra: dict[str, str] = {}

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def _task(self, stage: str, total: int | None = None) -> int:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total, info="")
        return self.tasks[stage]

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.StageStarted):
            self._task(event.stage, event.total_steps)
            if event.description:
                self.console.log(f"[cyan]{event.stage}[/]: {event.description}")
        elif isinstance(event, ev.Metric):
            if event.name == "loss":
                self.loss[event.stage] = event.value
            elif event.name == "val_accuracy":
                self.extra[event.stage] = f"val {event.value:.3f}"
        elif isinstance(event, ev.Progress):
            parts = [f"loss {self.loss[event.stage]:.4f}"] if event.stage in self.loss else []  # eval has none
            if event.stage in self.extra:
                parts.append(self.extra[event.stage])
            info = "  ".join(parts)
            if event.tokens_per_s:
                info += f"  {event.tokens_per_s:,.0f} tok/s"
            self.progress.update(self._task(event.stage, event.total_steps), completed=event.step,
                                 total=event.total_steps, info=info)
        elif isinstance(event, ev.PrivacySpent):
            target = f" / {event.target_epsilon:g}" if event.target_epsilon else ""
            self.extra[event.stage] = f"ε {event.epsilon:.2f}{target}"
        elif isinstance(event, ev.StageFinished):
            if event.stage in self.tasks:
                task = self.progress.tasks[self.tasks[event.stage]]
                self.progress.update(self.tasks[event.stage], completed=task.total or task.completed)
            self.console.log(f"[green]{event.stage} done[/] in {event.seconds:.1f} s")
        elif isinstance(event, ev.StageFailed):
            self.console.log(f"[red]{event.stage} failed[/]")  # the reason is the CLI's one error line
        elif isinstance(event, ev.Log):
            style = "yellow" if event.level == "warning" else "dim"
            self.console.log(f"[{style}]{event.message}[/]")
        elif isinstance(event, ev.ArtifactSaved):
            self.console.log(f"saved {event.what}: {event.path}")


def results_table(results: dict) -> Table:
    acc = results.get("accuracy", {})
    table = Table(title=f"{results.get('preset')} — {results.get('task')} test accuracy "
                        f"({results.get('test_examples', '?')} examples)")
    table.add_column("method")
    table.add_column("accuracy", justify="right")
    for name in METHOD_ORDER:
        if name in acc:
            table.add_row(name, f"{100 * acc[name]:.2f}")
    gap = results.get("gap_closed")
    table.add_row("gap closed", "—" if gap is None else f"{gap:.2f}", style="bold")
    secs = results.get("seconds", {})
    table.caption = "minutes: " + ", ".join(f"{k} {v / 60:.1f}" for k, v in secs.items())
    privacy = results.get("privacy")
    table.caption += "   privacy: " + ("not private" if not privacy else
                                       f"ε = {privacy['epsilon']:.2f}, δ = {privacy['delta']:.2g}")
    return table
