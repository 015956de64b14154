"""`post`: the headless command line. Every user error ends in one line on stderr and exit code 2."""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, List, Optional

import typer

from engine.errors import PostError, os_problem
from post_tui.cli_privacy import privacy_app
from post_tui.render import make_console, print_wide

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="POST: transfer soft prompts from a small local model to a large one, privately.")
presets_app = typer.Typer(no_args_is_help=True, help="List and show run presets.")
app.add_typer(presets_app, name="presets")
app.add_typer(privacy_app, name="privacy")

console = make_console()
err_console = make_console(stderr=True)

PresetOpt = typer.Option(None, "--preset", "-p", help="Preset name (post presets list)")
ConfigOpt = typer.Option(None, "--config", "-c", help="A TOML config file")
SetOpt = typer.Option(None, "--set", "-s", help="Override a key: --set tune.lr=0.01 (repeatable)")
OutOpt = typer.Option(None, "--out", "-o", help="Run folder (default runs/<preset>-<UTC time>)")


def fail(message: str) -> None:
    from post_tui.render import print_error
    print_error(err_console, message)
    raise typer.Exit(2)


def guarded(fn: Callable[[], None]) -> None:
    """A short command: a PostError or an OSError the user can fix is one line, exit 2; `kill` (SIGTERM) or a
    dropped SSH session (SIGHUP) stops it as Ctrl-C does, so its atomic writes remove their temp files."""
    try:
        with _signals_interrupt():
            fn()
    except KeyboardInterrupt:
        err_console.print("interrupted: nothing half-written was left", markup=False, highlight=False)
        _exit(130)
    except PostError as err:
        fail(str(err))
    except OSError as err:
        message = in_the_way(err)
        if message is None:
            raise
        fail(message)


@contextlib.contextmanager
def _signals_interrupt():
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt
    names = [n for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)]
    previous = {n: signal.signal(getattr(signal, n), interrupt) for n in names}
    try:
        yield
    finally:
        for n, handler in previous.items():
            signal.signal(getattr(signal, n), handler)


def in_the_way(err: OSError) -> str | None:
    """One line for an OSError the user can fix — a file where post needs a folder (--out, POST_CACHE,
    POST_LEDGER given a file), a folder that cannot be written, a full disk — or None (a bug: raised)."""
    if isinstance(err, (NotADirectoryError, FileExistsError)):
        return (f"{err.filename or err}: a file is in the way where post needs a folder: give another path "
                "(--out, $POST_CACHE or $POST_LEDGER) or move the file")
    return os_problem(err)


# ---------------------------------------------------------------- presets

@presets_app.command("list")
def presets_list() -> None:
    """Every preset with a one-line description."""
    from rich.table import Table
    from engine.presets import describe, preset_names
    table = Table(show_header=True, box=None)
    table.add_column("preset", style="bold")
    table.add_column("description")
    for name in preset_names():
        table.add_row(name, describe(name))
    print_wide(console, table)


@presets_app.command("show")
def presets_show(name: str, sets: Optional[List[str]] = SetOpt) -> None:
    """The fully resolved TOML of a preset (defaults filled in)."""
    def go():
        from engine.config import to_toml
        from engine.presets import load_config
        sys.stdout.write(to_toml(load_config(name, None, sets)))
    guarded(go)


# ---------------------------------------------------------------- running

def _config_for(preset, config, sets, run_dir: Path | None = None):
    from engine.config import apply_overrides, read_toml, validate
    from engine.presets import load_config
    if run_dir is not None and preset is None and config is None:
        _check_run_folder(run_dir)
        saved = Path(run_dir) / "config.toml"
        if not saved.is_file():
            raise PostError(f"{run_dir} is not a run folder (no config.toml): give a run folder or --preset / --config")
        return validate(apply_overrides(read_toml(saved), list(sets or [])))
    return load_config(preset, config, sets)


class StopSignals:
    """Ctrl-C, `kill` (SIGTERM) and a dropped SSH session (SIGHUP) cancel the run gracefully: the
    current step finishes, the stage writes its checkpoint and record, and the run can be resumed.
    A third Ctrl-C exits at once (exit 130; the last checkpoint is what a resume continues from)."""

    SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")

    def __init__(self, cancel: threading.Event, quiet: bool = False):
        self.cancel, self.count, self.previous, self.quiet, self.said = cancel, 0, {}, quiet, 0

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            for name in self.SIGNALS:
                if hasattr(signal, name):
                    self.previous[name] = signal.signal(getattr(signal, name), self._handle)
            if hasattr(signal, "SIGPIPE"):  # output piped to a reader that died (`| tee` over a dropped SSH):
                self.previous["SIGPIPE"] = signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # the run goes on
        return self

    def __exit__(self, *exc):
        for name, handler in self.previous.items():
            signal.signal(getattr(signal, name), handler)

    def _handle(self, signum, frame) -> None:
        # Only flags here: printing from a handler re-enters the console (or an import half done in the
        # main thread) when two signals come at once (`timeout` signals the process and its group).
        self.count += 1
        self.cancel.set()
        if self.count >= 3:
            os._exit(130)

    def say_pending(self) -> None:
        """What the signals so far mean, said once each (called by the thread that waits on the worker)."""
        while not self.quiet and self.said < min(self.count, 2):
            self.said += 1
            _say("cancelling: the current step finishes, then the stage saves a checkpoint "
                 "(post run --resume continues it)" if self.said == 1 else
                 "still finishing the current step; press Ctrl-C once more to exit now "
                 "(work since the last checkpoint is lost)")


def _say(message: str) -> None:
    try:
        err_console.print(message, style="yellow", markup=False, highlight=False)
    except OSError:  # no terminal any more (SIGHUP)
        pass


def _check_run_folder(run_dir: Path) -> None:
    if Path(run_dir).is_file():
        raise PostError(f"{run_dir} is a file, not a run folder: give the folder a run wrote (it holds config.toml)")
    if not Path(run_dir).is_dir():
        raise PostError(f"run folder {run_dir} does not exist: give the folder a run wrote (it holds config.toml)")


AGAIN = {"audit": "cancelled: the finished shadows are kept; post audit {where} continues"}


def _execute(config, out, stages=None, resume=False, force=False) -> dict | None:
    """Run the pipeline in a worker thread (see in_worker); prints the results table.

    Under torchrun (WORLD_SIZE > 1) every rank runs the same stages; rank 0 alone writes the run
    folder and draws, the others run silently in a scratch folder (engine.distributed)."""
    from engine import distributed
    from engine.pipeline import run
    from post_tui.render import results_table
    if distributed.init_from_env(config.runtime.device):
        if resume or stages is not None:
            raise PostError("several processes (torchrun) run the whole pipeline on a new run folder only: "
                            "--resume and single stages run with one process (post run --resume RUN_DIR)")
        if not distributed.is_main():
            return _follow(config)
    results = in_worker(lambda bus, cancel: run(config, bus, out=out, cancel=cancel, stages=stages,
                                                resume=resume, force=force), out,
                        AGAIN.get(stages[0]) if stages and len(stages) == 1 else None)
    if results:
        console.print(results_table(results))
    return results


def _follow(config) -> None:
    """A rank other than 0: the same stages, silently, in a scratch folder; one line on failure."""
    import shutil
    from engine import distributed
    from engine.events import EventBus
    from engine.pipeline import run
    from engine.pipeline import Cancelled
    scratch, cancel = distributed.follower_scratch(), threading.Event()
    try:
        with StopSignals(cancel, quiet=True):  # stops after the step every rank stops at (see ShardedAggregator)
            run(config, EventBus(), out=scratch / "run", cancel=cancel)
    except PostError as err:
        raise PostError(f"rank {distributed.rank()}: {err}") from None
    except Cancelled:
        raise typer.Exit(130)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return None


def in_worker(job, out=None, again: str | None = None):
    """Run `job(bus, cancel)` in a worker thread, its events drawn here, so Ctrl-C / SIGTERM / SIGHUP
    can ask it to stop after the current step (StopSignals). Returns what the job returns."""
    from engine.events import EventBus
    from engine.pipeline import Cancelled
    from post_tui.render import ConsoleRenderer
    bus, cancel = EventBus(), threading.Event()
    outcome: dict = {}

    def work():
        try:
            outcome["results"] = job(bus, cancel)
        except BaseException as err:  # handed to the main thread
            outcome["error"] = err

    with ConsoleRenderer(console) as renderer, StopSignals(cancel) as signals:
        bus.subscribe(renderer)
        # not a daemon: the interpreter never exits while the worker is inside torch
        worker = threading.Thread(target=work, name="post-engine")
        worker.start()
        while worker.is_alive():
            worker.join(0.2)
            signals.say_pending()
    error = outcome.get("error")
    if isinstance(error, Cancelled):
        where = out if out is not None else "RUN_DIR"
        _say(again.format(where=where) if again else
             f"cancelled: finished stages and checkpoints are kept; post run --resume {where} continues")
        raise typer.Exit(130)
    if error is not None:
        raise error
    return outcome.get("results")



@app.command("run")
def run_cmd(preset: Optional[str] = PresetOpt, config: Optional[Path] = ConfigOpt,
            sets: Optional[List[str]] = SetOpt, out: Optional[Path] = OutOpt,
            resume: Optional[Path] = typer.Option(None, "--resume", help="Continue an interrupted run folder"),
            nproc: int = typer.Option(1, "--nproc", min=1, help="Processes on this machine (re-launches under torchrun)")) -> None:
    """The whole pipeline: distill → tune → (full PT) → transfer → eval."""
    def go():
        cfg = _config_for(preset, config, sets, resume)  # a bad config is refused before torchrun starts
        if nproc > 1:
            from engine.distributed import backend_for
            backend_for(cfg.runtime.device, local=nproc)  # e.g. more processes than GPUs: one line here
            _check_new_folder_for_ranks(resume, out)  # here, not once per rank under torchrun's traceback
            _relaunch_under_torchrun(nproc)
        _execute(cfg, resume or out, resume=resume is not None)
    guarded(go)


def _check_new_folder_for_ranks(resume: Path | None, out: Path | None) -> None:
    """Several processes start a run folder, they do not continue one (engine.pipeline refuses it on
    every rank; said once, before the launch)."""
    if resume is not None:
        raise PostError("several processes (--nproc) run the whole pipeline on a new run folder only: "
                        f"continue {resume} with one process (post run --resume {resume})")
    from engine.pipeline import is_fresh
    if out is not None and Path(out).is_dir() and not is_fresh(Path(out)):
        raise PostError(f"run folder {out} already exists: give several processes a new --out "
                        f"(or continue it with one: post run --resume {out})")


def _only_run_under_a_launcher(argv: list[str]) -> None:
    """Under torchrun (WORLD_SIZE > 1) only `post run` knows to leave the writing to rank 0; every
    other command would have each rank write the same files."""
    from engine.distributed import launched_world
    if launched_world() > 1 and argv and not argv[0].startswith("-") and argv[0] != "run":
        raise PostError(f"post {argv[0]} runs with one process: under torchrun only `post run` is distributed")


def _relaunch_under_torchrun(nproc: int) -> None:
    """`post run --nproc N ...` → `torchrun --standalone --nproc_per_node=N -m post_tui.cli run ...`
    (this process is replaced; torchrun's exit status is post's)."""
    import shutil
    if os.environ.get("WORLD_SIZE"):
        raise PostError("--nproc is for a plain `post run`; this process was already started by a launcher")
    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            argv.append(arg)
    torchrun = shutil.which("torchrun", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if torchrun is None:
        raise PostError("--nproc needs torchrun (it comes with torch) next to this Python or on PATH")
    command = [torchrun, "--standalone", f"--nproc_per_node={nproc}", "-m", "post_tui.cli", *argv]
    sys.stdout.flush()
    os.execv(torchrun, command)


@app.command("bench")
def bench_cmd(preset: Optional[str] = PresetOpt, config: Optional[Path] = ConfigOpt,
              sets: Optional[List[str]] = SetOpt, out: Optional[Path] = OutOpt,
              suite: Optional[str] = typer.Option(None, "--suite", help="A suite (presets/suites) or suite TOML: many tasks, the shipped defaults"),
              rows: Optional[List[str]] = typer.Option(None, "--row", help="Only this suite row (repeatable)"),
              results: Path = typer.Option(Path("bench/results/suite"), "--results", help="Where a suite writes <row>.json and suite.md"),
              validation: bool = typer.Option(True, "--validation/--no-validation", help="Also score every method of a suite row on the validation split"),
              report_only: bool = typer.Option(False, "--report-only", help="With --suite: write suite.md from the stored <row>.json (each checked against the run folder it names), run nothing")) -> None:
    """The paper's table for a preset: every method, without DP and at the preset's ε (8 if unset).

    Writes bench.json, bench.md and bench.png; run it again with the same --out to resume.
    With --suite: one run per (task, large model) row with the same method settings, a JSON per
    row and the generality table; run it again with the same --out to resume.
    """
    if suite is not None:
        guarded(lambda: _bench_suite(suite, preset or config, sets, out, rows, results, validation, report_only))
        return
    if report_only:
        fail("--report-only writes a suite's table from its stored row reports: give --suite NAME")
    if rows:
        fail("--row picks rows of a suite: give --suite NAME (a preset's bench runs every block of its table)")

    def go():
        from engine.bench import default_out, run_bench
        cfg = _config_for(preset, config, sets)
        folder = out or default_out(cfg)

        def run_block(block_cfg, run_dir: Path):
            from rich.text import Text
            console.rule(Text.assemble((run_dir.name, "bold"), f" · {_block_label(block_cfg)}"))
            again = run_dir.is_dir() and any(run_dir.iterdir())  # an earlier attempt: resume its finished stages
            return _execute(block_cfg, run_dir, resume=again)

        run_bench(cfg, folder, run_block)
        console.print((folder / "bench.md").read_text(), markup=False, highlight=False)
        console.print(f"bench report: {folder / 'bench.md'} · {folder / 'bench.png'}", markup=False,
                      highlight=False, soft_wrap=True)
    guarded(go)


def _bench_suite(suite: str, clash, sets, out: Optional[Path], rows, results: Path, validation: bool,
                 report_only: bool = False) -> None:
    from engine.artifacts import write_text
    from engine.suite import run_suite, stored_table
    from post_tui.render import suite_markdown
    if clash is not None:
        raise PostError("--suite runs the suite's own rows: leave out --preset / --config (use --set for every row)")
    folder = out or Path("runs") / f"suite-{Path(suite).stem}"
    if report_only:
        if rows:
            raise PostError("--report-only writes the whole table from the stored reports: leave out --row")
        report = stored_table(suite, results, sets)
        if not report["rows"]:  # never replace a table with an empty one
            raise PostError(f"no report in {results} is current for this suite's rows: nothing written (give the "
                            "--results and --set the rows ran under)")
        write_text(results / "suite.md", suite_markdown(report))
        console.print(suite_markdown(report), markup=False, highlight=False)
        return

    _check_results_folder(results)  # before any row runs: a row on a real model takes an hour

    def run_row(name: str, cfg, run_dir: Path):
        from rich.text import Text
        console.rule(Text.assemble((name, "bold"), f" · {cfg.task.source} on {cfg.models.large}"))
        again = run_dir.is_dir() and any(run_dir.iterdir())  # an earlier attempt: resume its finished stages
        return _execute(cfg, run_dir, resume=again)

    def write_table(report: dict) -> None:  # after every row: current even if a later row is stopped
        write_text(results / "suite.md", suite_markdown(report))

    report = run_suite(suite, folder, results, run_row, only=rows, overrides=sets, validation=validation,
                       after_row=write_table)
    console.print(suite_markdown(report), markup=False, highlight=False)
    console.print(f"suite results: {results}/<row>.json · {results / 'suite.md'} · run folders in {folder}",
                  markup=False, highlight=False, soft_wrap=True)


def _check_results_folder(results: Path) -> None:
    """--results is a folder, or can be made one, and takes files: refused where it enters, not after a row ran."""
    from engine.pipeline import check_writable
    existing = next((p for p in (results, *results.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        where = "is a file" if existing == results else f"is under {existing}, a file"
        raise PostError(f"--results {results} {where}: give a folder for the row reports and suite.md")
    check_writable(results, f"--results {results}")


def _block_label(cfg) -> str:
    p = cfg.privacy
    if not p.enabled:
        return "no DP"
    return f"DP ε={p.epsilon:g}" if p.epsilon is not None else f"DP σ={p.noise_multiplier:g}"


def _stage(stage: str):
    def command(run_dir: Optional[Path] = typer.Argument(None, help="An existing run folder"),
                preset: Optional[str] = PresetOpt, config: Optional[Path] = ConfigOpt,
                sets: Optional[List[str]] = SetOpt, out: Optional[Path] = OutOpt) -> None:
        def go():
            if run_dir is not None:
                _check_run_folder(run_dir)
            cfg = _config_for(preset, config, sets, run_dir)
            target = run_dir or out
            if target is None and stage != "distill":
                raise PostError(f"post {stage} needs a run folder: give RUN_DIR (or --out for a new one)")
            _execute(cfg, target, stages=[stage], force=True)
        guarded(go)
    command.__doc__ = {"distill": "Model owner: distil the student from the large model.",
                       "tune": "User: tune the soft prompt on the student with the private data.",
                       "full_pt": "Reference: tune a prompt on the large model itself.",
                       "transfer": "Model owner: transfer the small prompt to the large model (public data only).",
                       "eval": "Accuracy of every method on the private test split; writes results.json.",
                       "audit": "User: membership inference (LiRA) against the tuning recipe, with shadow prompts "
                                "on the private data (--set audit.shadows=8 --set audit.pool=0)."}[stage]
    return command


for _name in ("distill", "tune"):
    app.command(_name)(_stage(_name))
app.command("full-pt")(_stage("full_pt"))
app.command("audit")(_stage("audit"))

from post_tui import cli_parties  # noqa: E402  (post transfer / eval / kit / package: the two-party commands)

cli_parties.register(app, _stage)


# ---------------------------------------------------------------- assets

@app.command("fetch")
def fetch_cmd(names: Optional[List[str]] = typer.Argument(None, help="Assets to fetch"),
              list_: bool = typer.Option(False, "--list", "-l", help="List the assets")) -> None:
    """Fetch real models and data sets into the cache ($POST_CACHE, default ~/.cache/post)."""
    def go():
        from engine.assets import fetch, list_assets
        if list_ or not names:
            from rich.table import Table
            table = Table(box=None)
            for col in ("asset", "kind", "size", "licence", "cached", "description"):
                table.add_column(col)
            for a in list_assets():
                table.add_row(a["name"], a["kind"], f"{a['size_mb']:.0f} MB", a["licence"],
                              "yes" if a["cached"] else "no", a["description"])
            print_wide(console, table)
            return
        from engine.assets import lookup
        for name in names:
            lookup(name)  # every name checked before anything is fetched
        for name in names:
            with console.status(f"fetching {name}") as status:
                path = fetch(name, progress=lambda msg: status.update(f"{name}: {msg}"))
            from rich.text import Text
            console.print(Text.assemble((name, "green"), f" ready in {path}"), soft_wrap=True)
    guarded(go)


# ---------------------------------------------------------------- export

@app.command("export")
def export_cmd(run_dir: Path = typer.Argument(..., help="A finished run folder"),
               method: str = typer.Option("post", "--method", "-m", help="Whose large-model prompt: post, shift, "
                                          "output, direct or full_pt"),
               out: Path = typer.Option(..., "--out", "-o", help="The adapter folder to write (new or empty)")) -> None:
    """A run's large-model prompt as a PEFT prompt-tuning adapter (PeftModel.from_pretrained loads it)."""
    def go():
        from engine.export import export
        with console.status(f"exporting {method} from {run_dir} and checking it through PEFT"):
            info = export(run_dir, method, out)
        check = info["check"]
        console.print(f"PEFT adapter {out}: {info['label']} ({info['prompt']}), {info['num_virtual_tokens']} virtual "
                      f"tokens for {info['large_model']}; PEFT's logits match post's within "
                      f"{check['max_abs_logit_difference']:.1g} on {check['texts']} fixed texts. Tokenize with "
                      f"{info['tokenize']}", markup=False, highlight=False, soft_wrap=True)
    guarded(go)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        _only_run_under_a_launcher(sys.argv[1:])
        code = app(standalone_mode=False)  # usage errors come back here: one line, not click's boxed panel
        if isinstance(code, int) and code:
            _exit(code)
    except typer.Abort:  # Ctrl-C at a prompt
        _exit(130)
    except typer.TyperException as err:  # click's usage errors (typer vendors click): the message, one line
        from post_tui.render import print_error
        context = getattr(err, "ctx", None)
        where = f"{context.command_path} --help" if context is not None else "post --help"
        message = err.format_message() if hasattr(err, "format_message") else str(err)
        print_error(err_console, f"{message} ({where} lists what it takes)")
        _exit(getattr(err, "exit_code", 2))
    except PostError as err:
        from post_tui.render import print_error
        print_error(err_console, str(err))
        _exit(2)
    except OSError as err:
        message = in_the_way(err)
        if message is None:
            raise
        from post_tui.render import print_error
        print_error(err_console, message)
        _exit(2)
    except SystemExit as done:
        _exit(_exit_code(done.code))
    _exit(0)


def _exit(code: int) -> None:
    """Exit with `code`; a rank of several processes leaves without the interpreter's teardown
    (engine.distributed.leave: gloo's threads could abort it there, and a finished run would look failed)."""
    distributed = sys.modules.get("engine.distributed")  # not imported: no process group (and no torch import to exit)
    if distributed is not None and distributed.active():
        distributed.leave(code)
    sys.exit(code)


def _exit_code(code) -> int:
    """SystemExit's code as a process status: None is 0; a message is printed and is 1 (as Python does)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    main()
