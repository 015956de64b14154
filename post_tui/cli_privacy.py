"""`post privacy plan | verify`: plan σ for a budget, and check a run's privacy certificates.

Every user error prints one line on stderr and exits with code 2 (like post_tui.cli).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console

from engine.errors import PostError

privacy_app = typer.Typer(no_args_is_help=True, help="Differential privacy: plan the noise, verify certificates.")
err_console = Console(stderr=True)


def _guarded(fn: Callable[[], None]) -> None:
    try:
        fn()
    except PostError as err:
        from post_tui.render import print_error
        print_error(err_console, str(err))
        raise typer.Exit(2)


@privacy_app.command("plan")
def plan_cmd(epsilon: Optional[float] = typer.Option(None, "--epsilon", "-e", help="Target ε (σ is planned to reach it)"),
             noise_multiplier: Optional[float] = typer.Option(None, "--noise-multiplier", "--sigma",
                                                              help="σ instead of a target ε: report the ε it yields"),
             delta: float = typer.Option(..., "--delta", "-d", help="δ (at most 1/N; smaller is stronger)"),
             sample_rate: float = typer.Option(..., "--sample-rate", "-q", help="Poisson sampling rate q = batch / N"),
             steps: Optional[int] = typer.Option(None, "--steps", help="Optimizer steps"),
             epochs: Optional[float] = typer.Option(None, "--epochs", help="Epochs (steps = int(epochs / q), as Opacus)"),
             accountant: str = typer.Option("rdp", "--accountant", "-a", help="rdp or prv (Opacus)")) -> None:
    """σ for a target ε (Opacus' get_noise_multiplier), and the ε it yields with the same accountant."""
    def go():
        from engine.privacy import accounting
        if (epsilon is None) == (noise_multiplier is None):
            raise PostError("give --epsilon (to plan σ) or --noise-multiplier (to get ε), exactly one")
        if (steps is None) == (epochs is None):
            raise PostError("give --steps or --epochs, exactly one")
        if not 0 < sample_rate <= 1:
            raise PostError(f"--sample-rate must be in (0, 1], got {sample_rate:g}")
        if epochs is not None and not (epochs > 0 and math.isfinite(epochs)):
            raise PostError(f"--epochs must be > 0, got {epochs:g}")
        n_steps = steps if steps is not None else int(epochs / sample_rate)
        if noise_multiplier is not None and not (noise_multiplier > 0 and math.isfinite(noise_multiplier)):
            raise PostError(f"--noise-multiplier must be > 0, got {noise_multiplier:g}")
        accounting.check_budget(epsilon, delta, sample_rate, n_steps, accountant)
        sigma = noise_multiplier if noise_multiplier is not None else \
            accounting.plan_noise(epsilon, delta, sample_rate, n_steps, accountant)
        eps = accounting.epsilon([(sigma, sample_rate, n_steps)], delta, accountant)
        how = f"planned for target epsilon {epsilon:g}" if epsilon is not None else "given"
        typer.echo(f"noise_multiplier = {sigma:.6f}  ({how})")
        typer.echo(f"epsilon = {eps:.6f}  (delta = {delta:g}, sample_rate = {sample_rate:g}, steps = {n_steps}, "
                   f"accountant = {accountant})")
    _guarded(go)


@privacy_app.command("verify")
def verify_cmd(run_dir: Path = typer.Argument(..., help="A run folder (checks tune/ and full_pt/privacy.json) or a privacy.json")) -> None:
    """Recompute ε from each certificate's history with its accountant; exit 2 when one differs."""
    def go():
        import opacus
        from engine.privacy import verify_run
        for r in verify_run(run_dir):
            target = f", target {r['target_epsilon']:g}" if r["target_epsilon"] is not None else ""
            note = ""
            if r["recorded_versions"].get("opacus") != opacus.__version__:
                note = f" (recorded with opacus {r['recorded_versions'].get('opacus')}, checked with {opacus.__version__})"
            typer.echo(f"OK {r['path']}: epsilon = {r['epsilon']:.6f}{target} (delta = {r['delta']:.3g}, "
                       f"{r['accountant']}, {r['steps']} steps){note}")
    _guarded(go)


@privacy_app.command("ledger")
def ledger_cmd(data: Optional[str] = typer.Argument(None, help="A ledger key (or its first characters); "
                                                     "omit to list every data set"),
               preset: Optional[str] = typer.Option(None, "--preset", "-p", help="The data of this preset's task"),
               config: Optional[Path] = typer.Option(None, "--config", "-c", help="The data of this config's task")) -> None:
    """Every release computed from a private data set, and the ε they compose to (Opacus' accountant)."""
    def go():
        from engine.privacy import ledger
        key = data
        if preset or config:
            from engine.presets import load_config
            cfg = load_config(preset, config, [])
            key = ledger.task_key(cfg.task, cfg.runtime.seed)
        keys = sorted(p.name for p in ledger.root().iterdir() if p.is_dir()) if ledger.root().is_dir() else []
        if key:
            keys = [k for k in keys if k.startswith(key)]
            if not keys:
                raise PostError(f"no ledger entry for {key} in {ledger.root()}: nothing has been released from that data")
        if not keys:
            typer.echo(f"the privacy ledger {ledger.root()} is empty")
        for k in keys:
            total = ledger.composed(k)
            typer.echo(f"data {k}: {total['releases']} release(s), composed epsilon = "
                       f"{ledger.describe_epsilon(total['epsilon'])}"
                       + (f" (delta = {total['delta']:.3g}, {total['steps']} DP steps)" if total["delta"] else ""))
            if total["data_sets"] > 1:  # the releases of data sets that share rows with this one count too
                typer.echo(f"  composed with {total['data_sets'] - 1} data set(s) sharing rows with it: "
                           + ", ".join(k2[:12] for k2 in ledger.linked(k)[1:]))
            for e in ledger.entries(k):
                what = "DP" if e.get("private") else "no DP"
                typer.echo(f"  {e['release']}  {e['stage']:<8} {what:<6} epsilon = {ledger.describe_epsilon(e.get('epsilon'))}"
                           f"  steps = {e.get('steps', 0)}{'' if e.get('finished') or not e.get('private') else '  (unfinished: counted as far as it went)'}"
                           f"  run {e.get('run_dir')}")
    _guarded(go)
