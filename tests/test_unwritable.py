"""Folders post cannot write or read: one line, exit 2, no traceback, nothing half-written (a probe of
2026-12-06 found tracebacks, "damaged" for unreadable records, and a read-only ledger found after distill).

The real cases run `python -m post_tui.cli` without the right to override file permissions: as a normal
user chmod is enough; as root (CI boxes) the process drops its capabilities with util-linux's setpriv, so
the permission bits apply to it too. Where neither is possible they are skipped, and the in-process
tests below still pin the messages.
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.errors import PostError, os_problem
from post_tui.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _unprivileged() -> list[str] | None:
    """The command prefix that makes permission bits apply, or None where this box cannot."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = [setpriv, "--bounding-set", "-all", "--inh-caps", "-all"]
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    return prefix if probe.returncode == 0 else None


PREFIX = _unprivileged()
needs_permissions = pytest.mark.skipif(PREFIX is None, reason="root without setpriv: permission bits do not apply")


def cli(args: list[str], tmp: Path, **env: str) -> tuple[int, str]:
    environment = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", **env)
    done = subprocess.run([*PREFIX, sys.executable, "-m", "post_tui.cli", *args], cwd=tmp, env=environment,
                          capture_output=True, text=True, timeout=300)
    return done.returncode, done.stderr


def one_line(code: int, err: str, needle: str) -> None:
    """Exit 2, one error line, no traceback. Other stderr lines are tolerated: these runs load models, and
    another transformers or torch version may add a warning of its own."""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, (code, err)
    assert needle in errors[0], errors[0]


def read_only(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def new_run_with_a_read_only(variable: str, tmp: Path) -> tuple[int, str, Path]:
    """A new smoke run whose $POST_CACHE or $POST_LEDGER (`variable`) is an empty read-only folder."""
    folder = tmp / variable.lower()
    folder.mkdir()
    read_only(folder)
    env = {"POST_CACHE": str(tmp / "cache"), "POST_LEDGER": str(tmp / "ledger"), variable: str(folder)}
    code, err = cli(["run", "--preset", "smoke", "--out", str(tmp / "run")], tmp, **env)
    return code, err, folder


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished smoke run (its cache and ledger beside it)."""
    base = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("POST_CACHE", str(base / "cache"))
        env.setenv("POST_LEDGER", str(base / "ledger"))
        result = runner.invoke(app, ["run", "--preset", "smoke", "--out", str(base / "run"), "--set", "distill.steps=10",
                                     "--set", "tune.steps=10", "--set", "transfer.steps=10"])
    assert result.exit_code == 0, result.output
    return base


@needs_permissions
def test_a_run_folder_under_a_read_only_folder_is_refused_before_anything(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    read_only(locked)
    code, err = cli(["run", "--preset", "smoke", "--out", str(locked / "new" / "run")], tmp_path,
                    POST_CACHE=str(tmp_path / "cache"), POST_LEDGER=str(tmp_path / "ledger"))
    one_line(code, err, f"cannot write in {locked} (where {locked / 'new' / 'run'} would be made)")
    assert list(locked.iterdir()) == []


@needs_permissions
def test_a_read_only_ledger_is_refused_before_distillation(tmp_path):
    code, err, _ = new_run_with_a_read_only("POST_LEDGER", tmp_path)
    one_line(code, err, "$POST_LEDGER (the privacy ledger, where tune records")
    assert not (tmp_path / "run").exists()  # a fresh folder refused in preflight is not kept


@needs_permissions
def test_a_read_only_ledger_does_not_stop_a_resume_whose_tune_is_done(finished, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished / "run", copy)
    ledger = tmp_path / "ledger"
    shutil.copytree(finished / "ledger", ledger)
    read_only(ledger)  # nothing will be written there: tune and full PT are done
    code, err = cli(["run", "--resume", str(copy)], tmp_path, POST_CACHE=str(finished / "cache"), POST_LEDGER=str(ledger))
    assert code == 0, err


@needs_permissions
def test_a_read_only_empty_cache_fails_the_stage_in_one_line_and_keeps_nothing(tmp_path):
    code, err, cache = new_run_with_a_read_only("POST_CACHE", tmp_path)
    one_line(code, err, f"distill: cannot use {cache}")  # where the student would be written, not a temp file
    assert "chmod" in err and "error.txt" not in err
    assert not (tmp_path / "run").exists()


@needs_permissions
def test_a_read_only_run_folder_is_refused_by_a_later_stage(finished, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished / "run", copy)
    read_only(copy)
    before = sorted(p.name for p in copy.rglob("*"))
    code, err = cli(["eval", str(copy)], tmp_path, POST_CACHE=str(finished / "cache"),
                    POST_LEDGER=str(finished / "ledger"))
    one_line(code, err, f"cannot write in {copy}")
    assert sorted(p.name for p in copy.rglob("*")) == before


@needs_permissions
def test_an_unreadable_record_is_not_called_damaged_nor_run_again(finished, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished / "run", copy)
    record = copy / "tune" / "done.json"
    before = record.read_bytes()  # this file's own bytes: the refused resume must leave them untouched
    record.chmod(0)
    code, err = cli(["run", "--resume", str(copy)], tmp_path, POST_CACHE=str(finished / "cache"),
                    POST_LEDGER=str(finished / "ledger"))
    one_line(code, err, f"cannot read {record}")
    assert "damaged" not in err
    record.chmod(0o644)
    assert record.read_bytes() == before


# ---------------------------------------------------------------- the messages, in process (any box)

def test_the_os_errors_a_user_can_fix_say_what_to_do():
    temp = PermissionError(errno.EACCES, "Permission denied", "/data/cache/.student.json.post-tmp-12-ab")
    assert os_problem(temp).startswith("cannot use /data/cache: permission denied — make it readable and writable")
    full = OSError(errno.ENOSPC, "No space left on device", "/runs/r/tune/prompt.safetensors")
    assert "no space left on the device — free some space there" in os_problem(full)
    assert "read-only" in os_problem(OSError(errno.EROFS, "Read-only file system", "/mnt/ro"))
    assert os_problem(OSError(errno.EIO, "Input/output error", "/x")) is None  # not the user's to fix: a bug report
    assert "give a path on a writable file system" in os_problem(OSError(errno.EROFS, "Read-only file system", "/m"))
    assert os_problem(PermissionError(errno.EACCES, "Permission denied")) is None  # no path: a lock, a socket — a bug
    fd = OSError(errno.EACCES, "Permission denied")
    fd.filename = 12  # an error on an open descriptor names it by number
    assert os_problem(fd) is None
    assert "cannot use a path post writes: no space left" in os_problem(OSError(errno.ENOSPC, "No space left on device"))


def test_a_stage_that_cannot_write_fails_in_one_line_without_an_error_file(tmp_path, monkeypatch):
    from engine import pipeline

    def denied(ctx):
        raise PermissionError(errno.EACCES, "Permission denied", str(ctx.run_dir / "distill" / ".x.post-tmp-1-a"))
    monkeypatch.setattr(pipeline, "run_distill", denied)
    result = runner.invoke(app, ["run", "--preset", "smoke", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert f"distill: cannot use {tmp_path / 'run' / 'distill'}: permission denied" in result.stderr
    assert not (tmp_path / "run").exists()  # nothing finished in a fresh folder: bad input leaves nothing


def test_an_engine_bug_in_a_folder_that_cannot_take_its_traceback_still_says_one_true_line(tmp_path, monkeypatch):
    from engine import artifacts, pipeline

    def bug(ctx):
        raise RuntimeError("a bug")
    real_write = artifacts.write_text

    def refuse_error_file(path, text):
        if Path(path).name == "error.txt":
            raise PermissionError(errno.EACCES, "Permission denied", str(Path(path).parent / ".error.txt.post-tmp-1"))
        return real_write(path, text)
    monkeypatch.setattr(pipeline, "run_distill", bug)
    monkeypatch.setattr(artifacts, "write_text", refuse_error_file)
    result = runner.invoke(app, ["run", "--preset", "smoke", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "distill failed: RuntimeError: a bug (no traceback kept: cannot use" in line and "Traceback" not in line


def test_an_unreadable_record_is_refused_not_run_again(tmp_path, monkeypatch):
    from engine import artifacts, records
    record = tmp_path / "tune" / records.RECORD
    record.parent.mkdir()
    record.write_text('{"status": "completed"}')
    real_read = Path.read_text

    def denied(path, *args, **kwargs):
        if path == record:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_read(path, *args, **kwargs)
    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(PostError, match="cannot read .* permission denied — make it readable") as refused:
        records.read(tmp_path / "tune")  # not None, which would run the stage again
    assert not isinstance(refused.value, artifacts.DamagedArtifact)


def test_a_config_that_is_a_folder_is_named_so(tmp_path):
    result = runner.invoke(app, ["run", "--config", str(tmp_path)])
    assert result.exit_code == 2 and "is a folder: give the path of a TOML file" in result.stderr


def test_the_tui_says_when_a_past_run_cannot_be_read(tmp_path, monkeypatch):
    from post_tui.widgets import state as state_module
    run = tmp_path / "run"
    run.mkdir()
    (run / "events.jsonl").write_text("{}\n")
    (run / "results.json").write_text("{}")

    def denied(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))
    monkeypatch.setattr(state_module, "open", denied, raising=False)  # the event log
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: denied(self))  # results.json, config.toml
    loaded = state_module.load_run(run)
    said = [message for _, level, message in loaded.logs if level == "error"]
    assert f"cannot read {run / 'events.jsonl'}: permission denied — make it readable to see this run" in said
    assert loaded.error.startswith(f"cannot read {run / 'results.json'}") and loaded.results is None
