"""`post-tui`: the Textual app — pick a preset, adjust it, run it, and watch it over SSH.

    post-tui                                   presets screen
    post-tui --preset smoke                    the preset's config, ready to edit and run
    post-tui --preset smoke --set tune.lr=0.1 --run [--out DIR]   straight to the dashboard
    post-tui --runs-dir DIR                    where past runs are looked for (default runtime.out_dir)

The engine runs in a worker thread (see screens/dashboard.py); the UI only draws its events.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from textual.app import App
from textual.binding import Binding

from post_tui.screens.confirm import ConfirmScreen
from post_tui.screens.dashboard import DashboardScreen


class PostApp(App):
    CSS_PATH = "post_tui.tcss"
    TITLE = "POST"
    SUB_TITLE = "private soft-prompt transfer"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [Binding("q", "quit", "Quit")]

    def __init__(self, preset: str | None = None, overrides: list[str] | None = None, start: bool = False,
                 out: Path | None = None, runs_dir: Path | None = None, config: Any = None,
                 config_file: Path | None = None) -> None:
        super().__init__()
        self.preset = preset
        self.overrides = list(overrides or [])
        self.start_run = start
        self.out = Path(out) if out is not None else None
        self.runs_dir_explicit = runs_dir is not None
        self.runs_dir = Path(runs_dir) if runs_dir is not None else Path(
            getattr(getattr(config, "runtime", None), "out_dir", "runs"))
        self.initial_config = config
        self.config_file = config_file

    def on_mount(self) -> None:
        from post_tui.screens.presets import PresetsScreen
        self._stop_on_signals()
        self.push_screen(PresetsScreen())
        if self.initial_config is not None and self.start_run:
            self.run_config(self.initial_config, out=self.out)
        elif self.initial_config is not None:
            self._edit(self.initial_config, self.preset or (self.config_file.stem if self.config_file else "config"))

    # ------------------------------------------------------------ navigation used by the screens
    def _overrides_for(self, name: str) -> list[str]:
        return self.overrides if name == self.preset else []

    def run_preset(self, name: str) -> None:
        from engine.errors import PostError
        from engine.presets import load_config
        try:
            config = load_config(name, None, self._overrides_for(name))
        except PostError as err:
            self.notify(str(err), severity="error", markup=False)
            return
        self.run_config(config)

    def run_config(self, config: Any, out: Path | None = None) -> None:
        config = config.model_copy(deep=True)
        if self.runs_dir_explicit:
            config.runtime.out_dir = str(self.runs_dir)
        self.push_screen(DashboardScreen(config, out=out))

    def edit_preset(self, name: str) -> None:
        from engine.config import apply_overrides
        from engine.errors import PostError
        from engine.presets import preset_data
        try:
            data = apply_overrides(preset_data(name), self._overrides_for(name))
        except PostError as err:
            self.notify(str(err), severity="error", markup=False)
            return
        self._push_config(data, f"{name} (preset)")

    def _edit(self, config: Any, title: str) -> None:
        from engine.config import apply_overrides
        from engine.presets import preset_data
        set_keys = None
        if self.preset:
            set_keys = apply_overrides(preset_data(self.preset), list(self.overrides))
        data = config.model_dump(mode="json", exclude_none=True)
        self._push_config(data, title, set_keys)

    def _push_config(self, data: dict, title: str, set_keys: dict | None = None) -> None:
        from post_tui.screens.config import ConfigScreen, flatten
        keys = set(flatten(set_keys if set_keys is not None else data))
        self.push_screen(ConfigScreen(data, title, keys))

    def show_runs(self) -> None:
        from post_tui.screens.runs import RunsScreen
        self.push_screen(RunsScreen(self.runs_dir))

    def open_run(self, run_dir: Path) -> None:
        self.push_screen(DashboardScreen(run_dir=run_dir))

    # ------------------------------------------------------------ quitting
    def active_runs(self) -> list[DashboardScreen]:
        return [s for s in self.screen_stack if isinstance(s, DashboardScreen) and s.state.active]

    async def action_quit(self) -> None:
        running = self.active_runs()
        if not running:
            self.exit()
            return
        if isinstance(self.screen, ConfirmScreen):
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.cancel_and_exit()

        self.push_screen(ConfirmScreen(
            "A run is in progress. Quit anyway?",
            "Quitting cancels it: the current step finishes and the stage saves what it has."), answer)


    def cancel_and_exit(self, why: str = "") -> None:
        """Cancel every run in progress and leave; the engine's threads finish the current step and save what
        the stage has (its record says cancelled) before the process ends. Exit status 130, as `post run`."""
        folders = []
        for screen in self.active_runs():
            screen.cancel_event.set()
            folders.append(screen.state.run_dir or "RUN_DIR")
        if not folders:
            self.exit(return_code=130 if why else 0)
            return
        self.exit(return_code=130, message=f"post-tui: {why}cancelling the run; the current step finishes and the "
                                          f"stage saves what it has (post run --resume {' '.join(folders)} continues it)")

    def _stop_on_signals(self) -> None:
        """`kill` (SIGTERM) and a dropped SSH session (SIGHUP) cancel as quitting does, not kill the run mid-step
        with nothing saved."""
        import asyncio
        import contextlib
        import signal
        if sys.platform == "win32":  # its event loops take no signal handlers
            return
        loop = asyncio.get_running_loop()
        for name in ("SIGTERM", "SIGHUP"):
            with contextlib.suppress(RuntimeError, ValueError):  # an app run outside the main thread
                loop.add_signal_handler(getattr(signal, name), self.cancel_and_exit, f"{name}: ")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="post-tui", description="POST dashboard: pick a preset, adjust it, "
                                     "run it and watch distillation, private tuning and transfer.")
    parser.add_argument("--preset", "-p", help="preset name (post presets list)")
    parser.add_argument("--config", "-c", type=Path, help="a TOML config file (on top of --preset, if given)")
    parser.add_argument("--set", "-s", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key, e.g. --set tune.lr=0.01 (repeatable)")
    parser.add_argument("--run", action="store_true", help="open on the dashboard and start the run")
    parser.add_argument("--out", "-o", type=Path, help="run folder of the --run run (default runs/<preset>-<UTC time>)")
    parser.add_argument("--runs-dir", type=Path, help="folder of past runs (default: the config's runtime.out_dir, runs)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from engine.errors import PostError

    def fail(message: str) -> None:
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)

    config = None
    if args.preset or args.config:
        from engine.presets import load_config
        try:
            config = load_config(args.preset, args.config, args.sets)
        except PostError as err:
            fail(str(err))
    elif args.sets or args.run:
        fail("--set and --run need --preset NAME or --config FILE (post presets list shows the presets)")
    app = PostApp(preset=args.preset, overrides=args.sets, start=args.run, out=args.out,
                  runs_dir=args.runs_dir, config=config, config_file=args.config)
    app.run()
    if app.return_code:
        sys.exit(app.return_code)


if __name__ == "__main__":
    main()
