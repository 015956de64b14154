"""Rich rendering of engine events for the headless CLI."""
from __future__ import annotations

import time

from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from engine import events as ev
from engine import methods
from engine.machine import report_kinds
from post_tui.widgets.format import rank_line, seconds_per_step

METHOD_ORDER = methods.ORDER


def ledger_note(event) -> str:
    """', data ε 9.1 over 2 releases': what the privacy ledger composes for this training data."""
    if event.ledger_epsilon is None or not event.ledger_releases or event.ledger_releases < 2:
        return ""  # one release: the ledger's ε is this run's
    value = "∞ (used without DP)" if event.ledger_epsilon == float("inf") else f"{event.ledger_epsilon:.2f}"
    return f", data ε {value} over {event.ledger_releases} releases"


def print_error(console: Console, message: str) -> None:
    """The one error line: a red "error:" and the message as plain text (a path with `[/]` stays as it is)."""
    console.print(Text.assemble(("error:", "bold red"), " ", str(message)), highlight=False, soft_wrap=True)


class QuietOnBrokenPipe(Console):
    """Rich exits the process (SystemExit 1) when its output's reader is gone; a long run must not
    die because `| tee` or the SSH session did: go quiet and let the run finish."""

    def on_broken_pipe(self) -> None:
        import os
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self.file.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        finally:
            os.close(devnull)


def make_console(**kwargs) -> Console:
    """The CLI's console. Not a terminal (nohup, CI, a pipe): no wrapping, so a results line or a data path
    is never broken across lines (tables keep their natural width)."""
    console = QuietOnBrokenPipe(**kwargs)
    if not console.is_terminal:
        console.soft_wrap = True
    return console


def print_wide(console: Console, renderable: RenderableType) -> None:
    """A table on a terminal fits the window; in a log (not a terminal) it keeps its natural width, so no
    cell is folded into a column of fragments."""
    if console.is_terminal:
        console.print(renderable)
        return
    natural = Measurement.get(console, console.options.update_width(100_000), renderable).maximum
    wide = Console(file=console.file, width=max(natural, 1), soft_wrap=True, no_color=console.no_color)
    wide.print(renderable)


def _clock(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ConsoleRenderer:
    """Subscriber. On a terminal: one progress bar per stage with its latest loss, logs above.

    Not on a terminal (nohup, CI, a pipe): plain lines — a progress line per stage every `fraction` of
    its steps or every `interval_s` seconds, whichever comes first (stage, step / total, loss, tokens/s,
    ETA), and the log lines; nothing that redraws itself.
    """

    def __init__(self, console: Console, interval_s: float = 30.0, fraction: float = 0.1):
        self.console = console
        self.plain = not console.is_terminal
        self.interval_s, self.fraction = interval_s, fraction
        self.progress = None if self.plain else Progress(
            TextColumn("[bold]{task.description:<18}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, transient=False)
        self.tasks: dict[str, int] = {}
        self.loss: dict[str, float] = {}
        self.extra: dict[str, str] = {}
        self.started: dict[str, float] = {}              # stage → time of its first event
        self.printed: dict[str, tuple[float, int]] = {}  # stage → (time, fraction bucket) of its last line
        self.first_step: dict[str, tuple[float, int]] = {}  # stage → (time, step) of its first progress event

    def __enter__(self):
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()

    # ------------------------------------------------------------ output

    def _line(self, event: ev.Event, *parts) -> None:
        """One log line; parts are plain strings or (text, style) pairs — never parsed as markup."""
        if self.plain:
            stamp = time.strftime("%H:%M:%S", time.localtime(event.time))
            self.console.print(Text.assemble(f"[{stamp}] ", *parts), highlight=False, soft_wrap=True)
        else:
            self.console.log(Text.assemble(*parts))

    def _task(self, stage: str, total: int | None = None) -> int:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total, info="")
        return self.tasks[stage]

    def _info(self, event: ev.Progress) -> str:
        parts = [f"loss {self.loss[event.stage]:.4f}"] if event.stage in self.loss else []  # eval has none
        if event.stage in self.extra:
            parts.append(self.extra[event.stage])
        if event.tokens_per_s:
            parts.append(f"{event.tokens_per_s:,.0f} tok/s")
        return "  ".join(parts)

    def _progress_line(self, event: ev.Progress) -> None:
        start = self.started.setdefault(event.stage, event.time - (event.step_seconds or 0.0))
        first = self.first_step.setdefault(event.stage, (event.time, event.step))
        per_step = seconds_per_step(first, event.time, event.step, event.step_seconds)
        total = event.total_steps
        bucket = int(event.step / (total * self.fraction)) if total else 0
        last = self.printed.get(event.stage)
        due = (last is None or event.time - last[0] >= self.interval_s or bucket > last[1]
               or (total is not None and event.step >= total))
        if not due:
            return
        self.printed[event.stage] = (event.time, bucket)
        elapsed = event.time - start
        where = f"step {event.step}/{total} ({100 * event.step / total:.0f}%)" if total else f"step {event.step}"
        timing = f"elapsed {_clock(elapsed)}"
        if total and 0 < event.step < total and per_step:
            timing += f"  ETA {_clock(per_step * (total - event.step))}"
        info = self._info(event)
        self._line(event, (event.stage, "bold"), f": {where}", f"  {info}" if info else "", f"  {timing}")

    # ------------------------------------------------------------ events

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.StageStarted):
            self.started[event.stage] = event.time
            self.first_step.pop(event.stage, None)
            self.printed.pop(event.stage, None)
            if self.progress is not None:
                self._task(event.stage, event.total_steps)
            if event.description or self.plain:
                steps = f" ({event.total_steps} steps)" if self.plain and event.total_steps else ""
                self._line(event, (event.stage, "cyan"), f": {event.description or 'started'}{steps}")
        elif isinstance(event, ev.Metric):
            if event.name == "loss":
                self.loss[event.stage] = event.value
            elif event.name == "val_accuracy":
                self.extra[event.stage] = f"val {event.value:.3f}"
        elif isinstance(event, ev.Progress):
            if self.plain:
                self._progress_line(event)
            else:
                self.progress.update(self._task(event.stage, event.total_steps), completed=event.step,
                                     total=event.total_steps, info=self._info(event))
        elif isinstance(event, ev.PrivacySpent):
            target = f" / {event.target_epsilon:g}" if event.target_epsilon else ""
            self.extra[event.stage] = f"ε {event.epsilon:.2f}{target}" + ledger_note(event)
        elif isinstance(event, ev.StageFinished):
            if self.progress is not None and event.stage in self.tasks:
                task = self.progress.tasks[self.tasks[event.stage]]
                self.progress.update(self.tasks[event.stage], completed=task.total or task.completed)
            self._line(event, (f"{event.stage} done", "green"), f" in {event.seconds:.1f} s")
        elif isinstance(event, ev.StageFailed):
            self._line(event, (f"{event.stage} failed", "red"))  # the reason is the CLI's one error line
        elif isinstance(event, ev.Log):
            if event.level == "warning":
                self._line(event, ("warning: " + event.message, "yellow"))
            else:
                self._line(event, (event.message, "dim"))
        elif isinstance(event, ev.ArtifactSaved):
            self._line(event, f"saved {event.what}: {event.path}")
        elif isinstance(event, ev.RanksSample) and event.final and len(event.ranks) > 1:
            for r in event.ranks:  # several processes: each one's memory and speed at the stage's end
                self._line(event, (f"{event.stage} ", "dim"), rank_line(r))
        elif isinstance(event, ev.Diagnostics):
            self._diagnostics(event)

    def _diagnostics(self, event: ev.Diagnostics) -> None:
        """One block: a head line, then one line per check (warnings in yellow, with what to change)."""
        n = event.values.get("public", {}).get("examples", "?")
        warned = len(event.warnings)
        head = f"{warned} warning{'s' if warned != 1 else ''}" if warned else "all checks ok"
        self._line(event, ("diagnostics", "bold"), f" on {n} public inputs, before the transfer: {head}")
        for line in diagnostics_lines(event):
            self._line(event, line)


def diagnostics_lines(event: ev.Diagnostics) -> list[Text]:
    """One styled line per check: `  warning prompt: ...` / `  ok      fidelity: ...`."""
    lines = []
    for check in event.checks:
        warn = check.get("status") == "warning"
        lines.append(Text.assemble(("  warning " if warn else "  ok      ", "bold yellow" if warn else "green"),
                                   (f"{check.get('name', '?')}: ", "bold"), (check.get("message", ""), "yellow" if warn else "")))
    return lines


def results_table(results: dict) -> RenderableType:
    """The accuracy table, with its title and footer as whole lines above and below it: a long data path
    is never wrapped to the table's width."""
    acc = results.get("accuracy", {})
    title = Text(f"{results.get('preset')} — {results.get('task')} test accuracy "
                 f"({results.get('test_examples', '?')} examples)", style="bold")
    table = Table()
    table.add_column("method")
    table.add_column("accuracy", justify="right")
    for name in METHOD_ORDER:
        if name in acc:
            table.add_row(Text(name), f"{100 * acc[name]:.2f}")
    gap = results.get("gap_closed")
    table.add_row("gap closed", "—" if gap is None else f"{gap:.2f}", style="bold")
    secs = results.get("seconds", {})
    privacy = results.get("privacy")
    footer = Text("minutes: " + ", ".join(f"{k} {v / 60:.1f}" for k, v in secs.items()) + "   privacy: "
                  + ("not private" if not privacy else f"ε = {privacy['epsilon']:.2f}, δ = {privacy['delta']:.2g}"),
                  style="dim")
    return Group(title, table, footer)


# ---------------------------------------------------------------- post bench --suite

SUITE_COLUMNS = ("full_zs", "full_pt", "cpt", "direct", "inference", "post")


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _diagnostic_cells(found: dict | None) -> str:
    """Shift ratio, margin correlation and the checks that warned: what the diagnostics said before the
    transfer, beside what the row then measured."""
    if not found or not found.get("values"):
        return "— | — | —"
    values = found["values"]
    ratio = values.get("prompt", {}).get("shift_ratio")
    corr = values.get("fidelity", {}).get("margin_correlation")
    return (f"{'—' if ratio is None else f'{ratio:.2f}'} | {'—' if corr is None else f'{corr:.2f}'} | "
            f"{', '.join(found.get('warnings') or []) or 'none'}")


def _paired_lines(paired: dict | None) -> list[str]:
    """The paired test's reading of "POST above Direct / zero-shot", where rows kept their predictions."""
    if not paired:
        return []
    from engine.suite import SIGNIFICANT
    names = {"direct": "Direct", "full_zs": "Full ZS"}
    parts, unpaired = [], set()
    for other, found in paired.items():
        unpaired |= set(found["not_paired"])
        if found["above"] or found["below"] or found["undecided"]:
            parts.append(f"vs {names.get(other, other)}: above in {len(found['above'])}, below in {len(found['below'])}"
                         + (f" ({', '.join(found['below'])})" if found["below"] else "")
                         + f", not told apart in {len(found['undecided'])}"
                         + (f" ({', '.join(found['undecided'])})" if found["undecided"] else ""))
    if not parts:
        return []
    line = (f"Paired on the same test examples (exact McNemar, p < {SIGNIFICANT:g}), POST " + "; ".join(parts) + ".")
    if unpaired:
        line += " Not paired (reports written before the eval kept its predictions): " + ", ".join(sorted(unpaired)) + "."
    return ["", line]


def _boxes(rows: dict) -> list[str]:
    """Which kind of machine measured which rows. Float results differ in the last digits between CPUs'
    vector units and the students diverge from there, so rows from different kinds of box — or one row whose
    stages ran on several — are not a paired comparison. Rows that record no machine claim nothing."""
    boxes: dict[str, list[str]] = {}
    unrecorded = []
    for name, row in rows.items():
        kinds = report_kinds(row)
        if not kinds:
            unrecorded.append(name)
        else:
            boxes.setdefault(kinds[0] if len(kinds) == 1 else "stages on " + " and ".join(kinds), []).append(name)
    lines = []
    if len(boxes) == 1:
        lines = [f"Rows that name their machine ran on one kind: {next(iter(boxes))}."]
    elif boxes:
        lines = ["Rows measured on more than one kind of machine (float results differ in the last digits between "
                 "them, so these rows are not paired): " + "; ".join(f"{box}: {', '.join(names)}" for box, names in boxes.items()) + "."]
    if lines and unrecorded:
        lines[-1] += " Not recorded (reports written before rows named their machine): " + ", ".join(unrecorded) + "."
    return ["", *lines] if lines else []


def _majority_lines(outcomes: dict | None) -> list[str]:
    """Rows where POST, or full PT too, does not beat saying the most common training class every time."""
    if not outcomes or not any(outcomes.values()):  # no rows: nothing to say
        return []
    if not (outcomes["post_not_above"] or outcomes["unknown"]):
        return ["", "POST above saying the training split's most common class every time, in every row."]
    lines = []
    if outcomes["post_not_above"]:
        both = outcomes["full_pt_not_above"]
        lines.append("POST not above saying the training split's most common class every time: "
                     + ", ".join(outcomes["post_not_above"]) + " (its gain there is the classes' balance)"
                     + (f"; full PT not above it either: {', '.join(both)} (gap closed there measures calibration)"
                        if both else "") + ".")
    if outcomes["unknown"]:
        lines.append("Not compared with the most common class (reports from before 2026-12-06): "
                     + ", ".join(outcomes["unknown"]) + ".")
    return ["", " ".join(lines)]


def suite_markdown(report: dict) -> str:
    """The generality table: one row per (task, large model), accuracy % on test, gap closed, minutes."""
    lines = ["| row | classes | test n | α | " + " | ".join(SUITE_COLUMNS) + " | gap closed | val. gap closed "
             "| shift ratio | fidelity corr. | warnings | minutes |",
             "|---|---|---|---|" + "---|" * len(SUITE_COLUMNS) + "---|---|---|---|---|---|"]
    for name, row in report["rows"].items():
        acc = row["accuracy"]
        gap, vgap = row["gap_closed"], row.get("validation_gap_closed")
        alpha = (row.get("alpha") or {}).get("post")  # POST's α: under "select" the one chosen on validation
        lines.append(f"| {name}{' †' if row.get('archived') else ''} | {row['classes']} | {row['test_examples']} | {'—' if alpha is None else f'{alpha:g}'} | " +
                     " | ".join(_pct(acc.get(m)) for m in SUITE_COLUMNS) +
                     f" | {'—' if gap is None else f'{gap:.2f}'} | {'—' if vgap is None else f'{vgap:.2f}'}"
                     f" | {_diagnostic_cells(row.get('diagnostics'))} | {row['minutes']['total']:.1f} |")
    s = report["summary"]
    mean, capped = s["mean_gap_closed"], s.get("mean_gap_closed_capped")
    failing = [f"{row} ({check})" for row, checks in s["post_above"].items() for check, ok in checks.items() if ok is False]
    undefined_gap = [name for name, row in report["rows"].items() if row["gap_closed"] is None]  # not in the mean
    # three decimals: a goal of 0.60 is not met by 0.598
    lines += ["", f"Mean gap closed over {s['rows']} row{'' if s['rows'] == 1 else 's'}: {'—' if mean is None else f'{mean:.3f}'}"
              + ("" if capped is None or capped == mean else f" ({capped:.3f} with each row capped above at 1)")
              + (f" (the mean of the {s['rows'] - len(undefined_gap)} with one; no gap closed where "
                 f"Full PT equals Full ZS or is missing: {', '.join(undefined_gap)})" if undefined_gap else "") + ". "
              + ("No rows." if not s["rows"] else "POST above Direct and Full ZS in every row." if not failing else
                 "POST not above: " + ", ".join(failing) + ".")]
    if report.get("not_run"):
        lines[-1] += " Not in the table (not run, or no current report): " + ", ".join(report["not_run"]) + "."
    if s.get("gap_unresolved"):
        rest = s.get("mean_gap_closed_resolved")
        lines += ["", "Full PT not above Full ZS by two standard errors (gap closed there is noise): "
                  + ", ".join(s["gap_unresolved"]) + (f"; mean gap closed over the other rows: {rest:.3f}." if rest is not None else ".")]
    lines += _majority_lines(s.get("majority"))
    lines += _paired_lines(s.get("paired"))
    lines += _boxes(report["rows"])
    archived = [name for name, row in report["rows"].items() if row.get("archived")]
    if archived:
        lines += ["", "† the row's stored report, made for the same row, run folder and config digest; there is no run "
                  "folder at its run_dir, so its records and results.json were not checked again: " + ", ".join(archived) + "."]
    return "\n".join(lines) + "\n"
