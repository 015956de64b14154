"""The commands that cross the owner / user boundary (engine.parties):

    post kit build --preset P --out KIT                        owner → user: the student kit
    post package RUN_DIR --out PKG  ·  post package inspect PKG  user → owner: the prompt package
    post transfer RUN_DIR  |  post transfer --kit KIT --package PKG --out OWNER_RUN
    post eval RUN_DIR [--from OWNER_RUN]
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from engine.errors import PostError

kit_app = typer.Typer(no_args_is_help=True, help="Model owner: the student kit a user tunes on.")


def register(app: typer.Typer, stage_command) -> None:
    from post_tui import cli
    app.add_typer(kit_app, name="kit")
    plain_transfer, plain_eval = stage_command("transfer"), stage_command("eval")

    @kit_app.command("build")
    def kit_build(preset: Optional[str] = cli.PresetOpt, config: Optional[Path] = cli.ConfigOpt,
                  sets: Optional[List[str]] = cli.SetOpt,
                  out: Path = typer.Option(..., "--out", "-o", help="The kit folder to write")) -> None:
        """Distil (or reuse) the student and write it as a kit: weights, tokenizer, teacher identity, manifest."""
        def go():
            from engine import kit
            cfg = cli._config_for(preset, config, sets)
            made = cli.in_worker(lambda bus, cancel: kit.build(cfg, out, bus=bus, cancel=cancel), out)
            cli.console.print(f"student kit {out}: {len(made['files'])} files, teacher {made['teacher']}, "
                              f"blocks {made['blocks']}", markup=False, highlight=False)
        cli.guarded(go)

    @app.command("package")
    def package_cmd(target: Path = typer.Argument(..., help="RUN_DIR (a user's run folder), or the word inspect"),
                    folder: Optional[Path] = typer.Argument(None, help="with inspect: the package folder"),
                    out: Optional[Path] = typer.Option(None, "--out", "-o", help="The package folder to write")) -> None:
        """User: pack the tuned prompt, its task card and privacy certificate for the owner (`inspect PKG` shows one)."""
        def go():
            from engine import package
            if str(target) == "inspect":
                if folder is None:
                    raise PostError("post package inspect needs the package folder: post package inspect PKG")
                for line in package.inspect(folder):
                    typer.echo(line)
                return
            if out is None:
                raise PostError("post package needs --out PKG: the folder to write the package to")
            made = package.build(target, out)
            size = sum(e["bytes"] for e in made["files"].values())
            typer.echo(f"prompt package {out}: {', '.join(made['files'])} ({size} bytes); "
                       f"inspect it with: post package inspect {out}")
        cli.guarded(go)

    @app.command("transfer")
    def transfer_cmd(run_dir: Optional[Path] = typer.Argument(None, help="An existing run folder (one machine)"),
                     kit_dir: Optional[Path] = typer.Option(None, "--kit", help="Owner: the student kit the user tuned on"),
                     package_dir: Optional[Path] = typer.Option(None, "--package", help="Owner: the user's prompt package"),
                     preset: Optional[str] = cli.PresetOpt, config: Optional[Path] = cli.ConfigOpt,
                     sets: Optional[List[str]] = cli.SetOpt, out: Optional[Path] = cli.OutOpt) -> None:
        """Model owner: transfer the small prompt to the large model (public data only)."""
        if kit_dir is None and package_dir is None:
            return plain_transfer(run_dir=run_dir, preset=preset, config=config, sets=sets, out=out)

        def go():
            from engine import parties
            missing = [name for name, given in (("--kit", kit_dir), ("--package", package_dir), ("--out", out))
                       if given is None]
            if missing or run_dir is not None:
                wrong = f"{', '.join(missing)} missing" if missing else f"a RUN_DIR ({run_dir}) given"
                raise PostError(f"the owner's transfer takes --kit KIT --package PKG --out OWNER_RUN (and --preset / "
                                f"--config for the large model and public data), no RUN_DIR: {wrong}")
            cfg = cli._config_for(preset, config, sets)
            cli.in_worker(lambda bus, cancel: parties.owner_transfer(cfg, kit_dir, package_dir, out, bus, cancel), out)
            cli.console.print(f"transferred prompts in {out / 'transfer'}: send that folder's prompts to the user "
                              f"(post eval RUN_DIR --from {out})", markup=False, highlight=False)
        cli.guarded(go)

    @app.command("eval")
    def eval_cmd(run_dir: Optional[Path] = typer.Argument(None, help="An existing run folder"),
                 from_owner: Optional[Path] = typer.Option(None, "--from", help="The owner's transfer folder to score"),
                 preset: Optional[str] = cli.PresetOpt, config: Optional[Path] = cli.ConfigOpt,
                 sets: Optional[List[str]] = cli.SetOpt, out: Optional[Path] = cli.OutOpt) -> None:
        """Accuracy of every method on the private test split; writes results.json."""
        if from_owner is not None:
            def take():
                from engine import parties
                if run_dir is None:
                    raise PostError("post eval --from OWNER_RUN needs the user's RUN_DIR")
                cli._check_run_folder(run_dir)  # the same words as every command given a run folder
                cfg = cli._config_for(preset, config, sets, run_dir)  # the eval's settings, --set included
                parties.import_transfer(run_dir, from_owner, full_pt=cfg.eval.full_pt, large=cfg.models.large)
            cli.guarded(take)
        return plain_eval(run_dir=run_dir, preset=preset, config=config, sets=sets, out=out)
