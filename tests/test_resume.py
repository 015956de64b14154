"""Stage records, damaged artifacts, cancel and resume, DP journal composition (in-process, smoke)."""
import json
import shutil
import threading
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from engine import artifacts, records
from engine.events import EventBus, Progress
from engine.pipeline import Cancelled, run
from engine.presets import load_config
from post_tui.cli import app

runner = CliRunner()
FAST = ["distill.steps=20", "tune.steps=20", "transfer.steps=20", "tune.eval_every=10", "eval.full_pt=false",
        "runtime.checkpoint_every=5"]


def config(*sets):
    return load_config("smoke", None, [*FAST, *sets])


def logs(run_dir: Path) -> list[str]:
    from engine.events import read_events
    return [e.message for e in read_events(run_dir / "events.jsonl") if e.kind == "Log"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    import os
    os.environ["POST_CACHE"] = str(tmp_path_factory.mktemp("resume-cache"))
    run_dir = tmp_path_factory.mktemp("runs") / "finished"
    run(config(), out=run_dir)
    return run_dir


def copy(finished, tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(finished, target)
    return target


# ---------------------------------------------------------------- artifacts

def test_atomic_write_leaves_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "a.json"
    artifacts.write_json(path, {"v": 1})

    def broken(temp):
        temp.write_text("{\"v\": 2, \"tor")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        artifacts.write_with(path, broken)
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp file left


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    dead = tmp_path / f".x.json{artifacts.TEMP_MARK}999999999-abcd"  # no such pid
    dead.write_text("half")
    mine = tmp_path / f".y.json{artifacts.TEMP_MARK}{__import__('os').getpid()}-abcd"
    mine.write_text("being written")
    assert artifacts.clean_stale(tmp_path) == [dead]
    assert mine.exists()


def test_read_json_of_a_truncated_file_is_one_line_error(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text('{"steps": 3, "lo')
    with pytest.raises(artifacts.DamagedArtifact, match="damaged") as err:
        artifacts.read_json(path, "summary")
    assert "\n" not in str(err.value)


def test_record_names_what_changed_and_checks_artifact_hashes(tmp_path):
    art = tmp_path / "prompt.safetensors"
    art.write_bytes(b"abc")
    inputs = {"tune": {"lr": 0.1, "steps": 5}, "data": "d1"}
    records.write(tmp_path, "tune", records.COMPLETED, inputs, {"prompt": art}, steps=5)
    assert records.why_not_done(tmp_path, inputs) is None
    assert records.why_not_done(tmp_path, {**inputs, "tune": {"lr": 0.2, "steps": 5}}) == "its inputs changed: tune.lr"
    art.write_bytes(b"abd")
    assert "does not match the recorded sha256" in records.why_not_done(tmp_path, inputs)
    records.write(tmp_path, "tune", records.CANCELLED, inputs, {}, steps=3)
    assert records.why_not_done(tmp_path, inputs) == "it was cancelled after 3 steps"


@pytest.mark.parametrize("field,value", [("inputs", "x"), ("artifacts", [1]), ("artifacts", {"prompt": "x"}),
                                         ("artifacts", {"prompt": {"path": 5, "sha256": "0"}}), ("status", None)])
def test_a_record_with_a_field_of_the_wrong_kind_is_damaged_not_a_traceback(tmp_path, field, value):
    """An edited done.json (here, or an owner's folder that `post eval --from` imports) counts as no record."""
    import json
    records.write(tmp_path, "tune", records.COMPLETED, {"data": "d1"}, {})
    record = json.loads(records.path_of(tmp_path).read_text())
    record[field] = value
    records.path_of(tmp_path).write_text(json.dumps(record))
    assert records.read(tmp_path) is None
    assert "is damaged" in records.why_not_done(tmp_path, {"data": "d1"})

DAMAGE = {  # artifact → the stage that must run again
    "distill/student.json": "distill", "distill/done.json": "distill", "tune/prompt.safetensors": "tune",
    "tune/summary.json": "tune", "tune/done.json": "tune", "transfer/post.safetensors": "transfer",
    "transfer/post.json": "transfer", "transfer/done.json": "transfer", "results.json": "eval",
    "eval/accuracy.json": "eval",
}


@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_truncated_artifact_is_redone_on_resume(finished, tmp_path, name):
    run_dir = copy(finished, tmp_path)
    path = run_dir / name
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])  # what kill -9 of a plain write leaves
    result = runner.invoke(app, ["run", "--resume", str(run_dir)])
    assert result.exit_code == 0, result.output
    stage = DAMAGE[name]
    if stage != "eval":
        assert any(m.startswith(f"{stage}: runs again") for m in logs(run_dir)), logs(run_dir)
    assert json.loads((run_dir / "results.json").read_text())["accuracy"]
    assert json.loads((run_dir / stage / "done.json").read_text())["status"] == "completed"


def test_torn_events_line_does_not_break_resume_or_replay(finished, tmp_path):
    from engine.events import read_events
    run_dir = copy(finished, tmp_path)
    with open(run_dir / "events.jsonl", "a") as f:
        f.write('{"event": "Progress", "stage": "tu')
    result = runner.invoke(app, ["run", "--resume", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert all(e.kind for e in read_events(run_dir / "events.jsonl"))
    assert any("already done" in m for m in logs(run_dir))


def test_changed_setting_reruns_the_stage_and_says_why(finished, tmp_path):
    run_dir = copy(finished, tmp_path)
    before = (run_dir / "tune" / "prompt.safetensors").read_bytes()
    result = runner.invoke(app, ["run", "--resume", str(run_dir), "--set", "tune.lr=0.01"])
    assert result.exit_code == 0, result.output
    assert "tune: runs again, its inputs changed: tune.lr" in logs(run_dir)
    assert any(m.startswith("transfer: runs again, its inputs changed: small_prompt") for m in logs(run_dir))
    assert (run_dir / "tune" / "prompt.safetensors").read_bytes() != before
    assert "lr = 0.01" in (run_dir / "config.toml").read_text()  # the folder's config is the one last run


def test_a_public_file_edited_in_place_reruns_the_transfer(finished, tmp_path):
    """A local public set is keyed by its content, not its name: a transfer trained on the old texts is not
    kept for the new ones (a named asset's content is fixed by its name, so its key carries no hash)."""
    from engine.data.smoke import smoke_corpus
    run_dir, public = copy(finished, tmp_path), tmp_path / "public"
    public.mkdir()
    texts = smoke_corpus(0)[:80]
    (public / "corpus.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    first = runner.invoke(app, ["run", "--resume", str(run_dir), "--set", f'public.source="{public}"'])
    assert first.exit_code == 0, first.output
    before = (run_dir / "transfer" / "post.safetensors").read_bytes()
    (public / "corpus.jsonl").write_text("".join(json.dumps({"text": t + " indeed"}) + "\n" for t in texts))
    again = runner.invoke(app, ["run", "--resume", str(run_dir)])
    assert again.exit_code == 0, again.output
    assert any(m.startswith("transfer: runs again, its inputs changed: public.content") for m in logs(run_dir))
    assert (run_dir / "transfer" / "post.safetensors").read_bytes() != before
    record = (run_dir / "transfer" / "done.json").read_text()
    unchanged = runner.invoke(app, ["run", "--resume", str(run_dir)])
    assert unchanged.exit_code == 0, unchanged.output
    assert logs(run_dir).count(f"transfer: already done in {run_dir}, skipped") == 1  # the same texts: kept
    assert (run_dir / "transfer" / "done.json").read_text() == record  # not written again


def test_a_large_model_folder_replaced_in_place_trains_its_prompts_again(tmp_path):
    """A local large model is keyed by its content, not its folder's name: the owner swapping the weights
    under the same path must not get POST and full PT prompts trained on the old model scored on the new
    one (the student, given here, and the user's tune are unchanged, so they are kept)."""
    from tests.helpers import saved_tiny
    saved_tiny("gpt2", tmp_path / "large", seed=0)
    saved_tiny("gpt2", tmp_path / "small", seed=5)
    run_dir = tmp_path / "run"
    sets = [*FAST, f'models.large="{tmp_path / "large"}"', f'models.small="{tmp_path / "small"}"',
            'transfer.methods=["post"]', "eval.full_pt=true", "eval.full_pt_steps=4"]
    run(config(*sets), out=run_dir)
    before = {s: (run_dir / s / "done.json").read_text() for s in ("tune", "full_pt", "transfer")}
    shutil.rmtree(tmp_path / "large")
    saved_tiny("gpt2", tmp_path / "large", seed=7)  # another model under the same name
    result = runner.invoke(app, ["run", "--resume", str(run_dir)])
    assert result.exit_code == 0, result.output
    said = logs(run_dir)
    assert f"tune: already done in {run_dir}, skipped" in said
    for stage in ("full_pt", "transfer"):
        assert any(m.startswith(f"{stage}: runs again, its inputs changed: large_content") for m in said), said
        assert (run_dir / stage / "done.json").read_text() != before[stage]


def test_eval_refuses_prompts_trained_on_another_large_model(finished, tmp_path):
    """Eval run alone scores the folder's transfer prompts on the config's large model: with models.large
    changed since, it scored prompts trained on one model on another, silently."""
    from tests.helpers import saved_tiny
    run_dir = copy(finished, tmp_path)
    saved_tiny("gpt2", tmp_path / "other", seed=3)
    result = runner.invoke(app, ["eval", str(run_dir), "--set", f'models.large="{tmp_path / "other"}"'])
    assert result.exit_code == 2, result.output
    assert "were trained on the large model tiny:gpt2" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert runner.invoke(app, ["eval", str(run_dir)]).exit_code == 0  # the model they were trained on: scored


def test_dtype_auto_is_keyed_by_what_it_resolved_to(tmp_path, monkeypatch):
    """runtime.dtype = "auto" is bf16 on a CPU with AMX or AVX-512-BF16 and float32 elsewhere: a run folder moved
    to the other kind of machine must train full PT again, not keep a prompt trained in the other dtype."""
    import engine.context as context
    from engine.context import RunContext
    from engine.pipeline import why_rerun
    cfg = config('runtime.dtype="auto"', "eval.full_pt=true", "eval.full_pt_steps=4")
    monkeypatch.setattr(context, "cpu_flags", lambda: {"avx512_bf16"})
    run(cfg, out=tmp_path / "run", stages=["full_pt"])
    assert why_rerun(RunContext(cfg, tmp_path / "run"), "full_pt") is None
    monkeypatch.setattr(context, "cpu_flags", lambda: set())  # the folder on a machine without fast bf16
    assert why_rerun(RunContext(cfg, tmp_path / "run"), "full_pt") == "its inputs changed: dtype"
    explicit = config('runtime.dtype="float32"')
    from engine.fingerprints import _runtime
    assert _runtime(RunContext(explicit, tmp_path / "x")) == {"seed": 0, "dtype": "float32"}  # keys as they were


def test_prompts_of_the_same_weights_are_scored_under_any_name(tmp_path, monkeypatch):
    """Eval's check that prompts were trained on its large model: the same weights as a hub id and as a local
    copy of its snapshot match; a record from before hub commits were kept, or a hub model this machine has not
    fetched yet, matches by name; another commit of the same id does not."""
    import shutil
    from huggingface_hub import constants
    from engine.fingerprints import content_id, trained_on_another_large
    from tests.helpers import saved_tiny
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    commit, other = "a" * 40, "b" * 40
    _hub_snapshot(tmp_path / "hub", "acme/large", commit)
    snapshot = tmp_path / "hub" / "models--acme--large" / "snapshots" / commit
    saved_tiny("gpt2", snapshot, seed=0)
    copied = tmp_path / "copy"
    shutil.copytree(snapshot, copied)
    assert trained_on_another_large("acme/large", {"large": str(copied), "large_content": content_id(str(copied))}) is None
    assert trained_on_another_large(str(copied), {"large": "acme/large", "large_content": f"acme/large@{commit}"}) is None
    assert trained_on_another_large("acme/large", {"large": "acme/large"}) is None  # a record without the commit
    assert trained_on_another_large("acme/unfetched", {"large": "acme/unfetched", "large_content": f"acme/unfetched@{other}"}) is None
    assert "acme/large@" + other in trained_on_another_large("acme/large", {"large": "acme/large",
                                                                           "large_content": f"acme/large@{other}"})
    assert trained_on_another_large("acme/large", {"large": "tiny:gpt2"}) == "tiny:gpt2 (by its name)"


def test_a_local_teacher_is_keyed_by_all_of_its_weights(tmp_path):
    """The teacher's cheap fingerprint samples its first and last tensors; a fine-tune that moves only the
    middle (a merged LoRA, frozen embeddings) must still make another student, not reuse the cached one."""
    from engine.distill import teacher_identity
    from tests.helpers import saved_tiny
    model, folder = saved_tiny("gpt2", tmp_path / "large", seed=0)
    cfg = config(f'models.large="{folder}"')
    from engine.models import load
    teacher, tokenizer = load(folder, 0)
    before = teacher_identity(cfg, teacher, tokenizer)
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if ".h.0.mlp" in n).add_(0.5)
    model.save_pretrained(folder)
    teacher, tokenizer = load(folder, 0)
    after = teacher_identity(cfg, teacher, tokenizer)
    assert after["weights"] == before["weights"]  # what the sample alone would have said
    assert after != before and after["content"] != before["content"]
    named = teacher_identity(config(), *load("tiny:gpt2", 0))
    assert "content" not in named  # a named model: its name fixes its content, the key is as before


def test_a_hub_public_set_is_keyed_by_its_rows(finished, tmp_path, monkeypatch):
    """A hub data set's name does not fix its rows (its owner may push a new revision): a transfer trained on
    the old rows must not be kept for the new ones. The hub is replaced by rows served under a hub id."""
    from engine.data import sources
    from engine.data.smoke import smoke_corpus
    texts = smoke_corpus(0)[:80]
    served = {"rows": [{"text": t} for t in texts]}
    monkeypatch.setattr(sources, "_hub", lambda name, subset, split: list(served["rows"]))
    run_dir = copy(finished, tmp_path)
    first = runner.invoke(app, ["run", "--resume", str(run_dir), "--set", 'public.source="someone/public-texts"'])
    assert first.exit_code == 0, first.output
    before = (run_dir / "transfer" / "done.json").read_text()
    same = runner.invoke(app, ["run", "--resume", str(run_dir)])
    assert same.exit_code == 0, same.output
    assert logs(run_dir).count(f"transfer: already done in {run_dir}, skipped") == 1  # the same rows: kept
    served["rows"] = [{"text": t + " indeed"} for t in texts]  # a new revision under the same name
    again = runner.invoke(app, ["run", "--resume", str(run_dir)])
    assert again.exit_code == 0, again.output
    assert any(m.startswith("transfer: runs again, its inputs changed: public.rows") for m in logs(run_dir))
    assert (run_dir / "transfer" / "done.json").read_text() != before


def _hub_snapshot(cache, repo_id: str, commit: str) -> None:
    """A model in a hub cache's layout: refs/main names the snapshot from_pretrained loads."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")


def test_a_hub_model_is_keyed_by_its_commit(tmp_path, monkeypatch):
    """A hub model's name does not fix its weights: new weights pushed under the same id and fetched into the
    cache are another teacher and another large model (student, transfer and full PT keys change); an offline
    asset, a tiny test model and a local folder keep the keys they had."""
    from huggingface_hub import constants
    from engine.fingerprints import content_id, pinned_model
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    _hub_snapshot(tmp_path / "hub", "someone/model", "a" * 40)
    assert pinned_model("someone/model") == "someone/model@" + "a" * 40
    _hub_snapshot(tmp_path / "hub", "someone/model", "b" * 40)
    assert pinned_model("someone/model") == "someone/model@" + "b" * 40
    assert pinned_model("someone/elsewhere") == "someone/elsewhere"  # not in the cache: loading says so
    from types import SimpleNamespace
    from engine.distill import teacher_identity
    from engine.fingerprints import large_identity
    from engine.models import load
    cfg = config('models.large="someone/model"')
    assert large_identity(SimpleNamespace(config=cfg))["large_content"] == "someone/model@" + "b" * 40
    assert teacher_identity(cfg, *load("tiny:gpt2", 0))["content"] == "someone/model@" + "b" * 40
    assert pinned_model("smollm2-135m") == "smollm2-135m" and pinned_model("tiny:gpt2") == "tiny:gpt2"
    folder = tmp_path / "local"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert pinned_model(str(folder)) == content_id(str(folder)) != str(folder)


def test_stage_alone_refuses_an_unfinished_upstream_stage(finished, tmp_path):
    run_dir = copy(finished, tmp_path)
    record = json.loads((run_dir / "tune" / "done.json").read_text())
    record["status"] = "cancelled"
    (run_dir / "tune" / "done.json").write_text(json.dumps(record))
    result = runner.invoke(app, ["transfer", str(run_dir)])
    assert result.exit_code == 2
    assert "needs the tune stage finished" in result.stderr and len(result.stderr.strip().splitlines()) == 1


SWAPPED = 'task.label_words=[["positive", "good"], ["terrible", "bad"]]'  # smoke's classes, reversed


@pytest.mark.parametrize("command, edit, says", [
    (["eval"], ["--set", SWAPPED], "task.label_words"),            # prompts scored under reversed classes
    (["eval"], ["--set", 'task.template="Review: {text} Verdict:"'], "task.template"),
    (["transfer"], ["--set", SWAPPED], "task.label_words"),        # the transfer carries on a prompt of other settings
    (["eval"], ["--set", "transfer.steps=99"], "transfer.steps"),  # this run's own transfer, made with other settings
    (["eval"], "replaced", "does not match the recorded sha256"),  # another method's prompt under post's name
])
def test_a_stage_alone_refuses_what_its_upstream_was_not_made_for(finished, tmp_path, command, edit, says):
    run_dir = copy(finished, tmp_path)
    if edit == "replaced":
        shutil.copy(run_dir / "transfer" / "direct.safetensors" if (run_dir / "transfer" / "direct.safetensors").is_file()
                    else run_dir / "tune" / "prompt.safetensors", run_dir / "transfer" / "post.safetensors")
        edit = []
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name not in ("events.jsonl", ".post.lock")}
    result = runner.invoke(app, [*command, str(run_dir), *edit])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    said = result.stderr.strip()
    assert len(said.splitlines()) == 1 and f"post run --resume {run_dir}" in said
    assert says in said and (not edit or "its inputs changed: " in said)
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name not in ("events.jsonl", ".post.lock")}
    assert after == before  # nothing scored, trained or rewritten (config.toml included)


def test_a_stage_alone_goes_on_when_only_how_it_runs_changed(finished, tmp_path):
    run_dir = copy(finished, tmp_path)
    result = runner.invoke(app, ["eval", str(run_dir), "--set", "eval.batch_size=3", "--set", "runtime.threads=1"])
    assert result.exit_code == 0, result.output


def test_a_stage_alone_goes_on_where_dtype_auto_resolves_otherwise(tmp_path, monkeypatch):
    # a folder made on a bf16 machine, evaluated on one without: its prompts are scored, not trained again
    # (a resume there does train them again: the key holds the resolution, test_dtype_auto_is_keyed_...)
    from engine import context
    sets = ['runtime.dtype="auto"', "eval.full_pt=false"]
    with monkeypatch.context() as bf16:
        bf16.setattr(context, "pick_dtype", lambda *_: ("bfloat16", "a bf16 machine (test)"))
        run(config(*sets), out=tmp_path / "run")
    assert json.loads((tmp_path / "run" / "tune" / "done.json").read_text())["inputs"]["dtype"] == "auto:bfloat16"
    monkeypatch.setattr(context, "pick_dtype", lambda *_: ("float32", "a machine without fast bf16 (test)"))
    result = runner.invoke(app, ["eval", str(tmp_path / "run"), *[a for s in sets for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    edited = runner.invoke(app, ["eval", str(tmp_path / "run"), "--set", SWAPPED, *[a for s in sets for a in ("--set", s)]])
    assert edited.exit_code == 2 and "task.label_words" in edited.stderr  # the settings are still checked


def test_the_package_card_is_the_tuned_prompts_not_a_later_config(finished, tmp_path):
    run_dir = copy(finished, tmp_path)
    tuned = json.loads((run_dir / "tune" / "done.json").read_text())["inputs"]["task"]["label_words"]
    text = (run_dir / "config.toml").read_text()
    (run_dir / "config.toml").write_text(text.replace('"terrible"', '"@"').replace('"positive"', '"terrible"')
                                         .replace('"@"', '"positive"'))  # classes swapped after tuning
    assert load_config(None, run_dir / "config.toml").task.label_words != tuned
    result = runner.invoke(app, ["package", str(run_dir), "--out", str(tmp_path / "pkg")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "pkg" / "task_card.json").read_text())["label_words"] == tuned


# ---------------------------------------------------------------- cancel and continue

def cancel_at(stage: str, step: int):
    bus, cancel = EventBus(), threading.Event()
    bus.subscribe(lambda e: cancel.set() if isinstance(e, Progress) and e.stage == stage and e.step == step else None)
    return bus, cancel


@pytest.mark.parametrize("stage", ["distill", "tune", "transfer:post"])
def test_cancelled_stage_is_not_done_and_resume_continues_it(finished, tmp_path, stage):
    run_dir = tmp_path / "cancelled"
    bus, cancel = cancel_at(stage, 12)
    with pytest.raises(Cancelled):
        run(config(), bus=bus, out=run_dir, cancel=cancel)
    folder = run_dir / stage.split(":")[0]
    assert json.loads((folder / "done.json").read_text())["status"] == "cancelled"
    assert not (folder / "prompt.safetensors").exists() and not (folder / "student.json").exists()
    assert not (folder / "post.safetensors").exists()
    run(config(), out=run_dir, resume=True)
    assert any("continuing from the checkpoint at step 12" in m for m in logs(run_dir))
    # every random state is in the checkpoint: the same prompt as a run never cancelled, up to
    # float summation order (allclose: 20 Adam steps on one machine agree far below 1e-4)
    for name in ("tune/prompt.safetensors", "transfer/post.safetensors"):
        a = artifacts_tensor(run_dir / name)
        b = artifacts_tensor(finished / name)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_a_cancelled_rerun_is_not_shown_with_the_earlier_results(finished, tmp_path):
    """Resumed with another tune setting and cancelled mid-tune: results.json scored the folder's earlier
    prompts, so it is set aside (results.previous.json) and the run lists as cancelled, not finished."""
    from post_tui.widgets.state import load_run, run_summary
    run_dir = copy(finished, tmp_path)
    bus, cancel = cancel_at("tune", 5)
    with pytest.raises(Cancelled):
        run(config("tune.lr=0.02"), bus=bus, out=run_dir, cancel=cancel, resume=True)
    assert not (run_dir / "results.json").exists() and (run_dir / "results.previous.json").is_file()
    assert run_summary(run_dir)["status"] == "cancelled" and load_run(run_dir).status == "cancelled"
    (run_dir / "results.json").write_text("[1]")  # damaged: another shape than eval writes
    assert load_run(run_dir).results is None and run_summary(run_dir)["results"] is None


def test_a_resume_that_skips_a_dp_tune_says_what_it_spent(finished, tmp_path):
    """The privacy panel of a resumed run: a DP tune skipped as done still reports its ε (from its certificate)."""
    from engine.events import read_events
    run_dir = copy(finished, tmp_path)
    dp = ["--set", "privacy.noise_multiplier=1.0", "--set", "tune.steps=10"]
    assert runner.invoke(app, ["tune", str(run_dir), *dp]).exit_code == 0
    certificate = json.loads((run_dir / "tune" / "privacy.json").read_text())
    again = runner.invoke(app, ["run", "--resume", str(run_dir)])
    assert again.exit_code == 0, again.output
    events = list(read_events(run_dir / "events.jsonl"))
    last_start = max(i for i, e in enumerate(events) if e.kind == "RunStarted")
    spent = [e for e in events[last_start:] if e.kind == "PrivacySpent"]
    assert spent and spent[0].epsilon == certificate["epsilon"] and spent[0].steps == certificate["steps"]


def artifacts_tensor(path: Path) -> torch.Tensor:
    from engine.prompt import SoftPrompt
    return SoftPrompt.load(path).weight


# ---------------------------------------------------------------- DP journal

def test_dp_tune_again_composes_and_non_dp_tune_drops_the_certificate(finished, tmp_path):
    from engine.privacy import epsilon
    run_dir = copy(finished, tmp_path)
    dp = ["--set", "privacy.noise_multiplier=1.0", "--set", "tune.steps=10"]
    assert runner.invoke(app, ["tune", str(run_dir), *dp]).exit_code == 0
    first = json.loads((run_dir / "tune" / "privacy.json").read_text())
    assert runner.invoke(app, ["tune", str(run_dir), *dp]).exit_code == 0
    second = json.loads((run_dir / "tune" / "privacy.json").read_text())
    assert first["steps"] == 10 and second["steps"] == 20  # the second release composes with the first
    assert second["epsilon"] == pytest.approx(epsilon(second["history"], second["delta"], "rdp"))
    assert second["epsilon"] > first["epsilon"]
    no_dp = [arg for s in FAST for arg in ("--set", s)]  # the preset again: config.toml now says DP
    result = runner.invoke(app, ["tune", str(run_dir), "--preset", "smoke", *no_dp])
    assert result.exit_code == 0, result.output
    assert not (run_dir / "tune" / "privacy.json").exists()  # no certificate for a prompt trained without noise
    assert json.loads((run_dir / "tune" / "privacy.journal.json").read_text())["steps"] == 20  # spent stays spent


def test_a_dp_tune_under_another_accountant_composes_with_the_folders_earlier_steps(finished, tmp_path):
    """The journal's history is (σ, q, steps) whichever accountant reads it: another accountant must not restart
    the folder's total (its certificate would then cover only its own steps)."""
    from engine.privacy import epsilon
    run_dir = copy(finished, tmp_path)
    dp = ["--set", "privacy.noise_multiplier=1.0", "--set", "tune.steps=10"]
    assert runner.invoke(app, ["tune", str(run_dir), *dp]).exit_code == 0
    result = runner.invoke(app, ["tune", str(run_dir), *dp, "--set", 'privacy.accountant="prv"'])
    assert result.exit_code == 0, result.output
    second = json.loads((run_dir / "tune" / "privacy.json").read_text())
    assert second["steps"] == 20 and second["accountant"] == "prv"
    assert second["epsilon"] == pytest.approx(epsilon(second["history"], second["delta"], "prv"))


def test_a_copied_unfinished_dp_run_is_counted_apart_from_its_original(finished, tmp_path):
    """A DP tune cancelled at step 8, its folder copied (a backup, a second try), then both resumed: two
    prompts, each with the 8 shared steps and 12 of its own. The copy's journal names the original's ledger
    release; continuing it wrote one run's steps over the other's, and the ledger counted 20 steps, not 32."""
    from engine.privacy import ledger
    cfg = config("privacy.noise_multiplier=1.0", "runtime.seed=411")  # a data key of its own
    original, duplicate = tmp_path / "original", tmp_path / "copy"
    bus, cancel = cancel_at("tune", 8)
    with pytest.raises(Cancelled):
        run(cfg, bus=bus, out=original, cancel=cancel, stages=["distill", "tune"])
    shutil.copytree(original, duplicate)
    run(cfg, out=duplicate, resume=True, stages=["tune"])  # the copy first, then the original: either order
    run(cfg, out=original, resume=True, stages=["tune"])
    key = ledger.task_key(cfg.task, cfg.runtime.seed)
    assert ledger.composed(key)["steps"] == 8 + 12 + 12
    assert sorted(e["steps"] for e in ledger.entries(key)) == [12, 20]
    assert any("is not this run's alone" in m for m in logs(duplicate))
    certificates = [json.loads((d / "tune" / "privacy.json").read_text()) for d in (original, duplicate)]
    assert [c["steps"] for c in certificates] == [20, 20]  # each prompt's own history: 8 shared + 12


def test_the_budget_and_the_test_split_do_not_train_a_prompt_again(finished, tmp_path):
    """privacy.budget only refuses a run before it starts and the test split is read by eval alone: changing
    them on a finished DP run must keep its prompts, not tune again (spending ε again, or refused for it)."""
    run_dir = copy(finished, tmp_path)
    dp = ["--set", "privacy.noise_multiplier=1.0", "--set", "tune.steps=10"]
    assert runner.invoke(app, ["tune", str(run_dir), *dp]).exit_code == 0
    certificate = (run_dir / "tune" / "privacy.json").read_text()
    again = runner.invoke(app, ["run", "--resume", str(run_dir), "--set", "privacy.budget=100.0",
                                "--set", 'task.test_split="validation"'])
    assert again.exit_code == 0, again.output
    assert f"tune: already done in {run_dir}, skipped" in logs(run_dir)
    assert (run_dir / "tune" / "privacy.json").read_text() == certificate


def test_records_an_earlier_post_wrote_stay_done_after_the_keys_grew(tmp_path, monkeypatch):
    """Keys grew on 2026-12-07 (a hub set's rows, "auto" by its dtype, budget and test split left out): a run
    whose records post wrote before must not rerun its finished stages — a DP tune would be refused as out of
    ε, or spend it again — when nothing it used changed."""
    import engine.context as context
    from engine import fingerprints
    from engine.data import sources
    from engine.data.smoke import smoke_corpus
    monkeypatch.setattr(context, "cpu_flags", lambda: set())
    monkeypatch.setattr(sources, "_hub", lambda name, subset, split: [{"text": t} for t in smoke_corpus(0)[:80]])
    cfg = config("privacy.noise_multiplier=1.0", "privacy.budget=100.0", 'task.test_split="validation"',
                 'runtime.dtype="auto"', 'public.source="someone/public-texts"', 'distill.corpus="smoke"',
                 "runtime.seed=413")
    with fingerprints.keys_before_2026_12_07():  # the records as the earlier post wrote them
        run(cfg, out=tmp_path / "run")
    run(cfg, out=tmp_path / "run", resume=True)
    said = logs(tmp_path / "run")
    for stage in ("distill", "tune", "transfer"):
        assert f"{stage}: already done in {tmp_path / 'run'}, skipped" in said, (stage, said)


def test_damaged_privacy_journal_is_refused_not_forgotten(finished, tmp_path):
    run_dir = copy(finished, tmp_path)
    dp = ["--set", "privacy.noise_multiplier=1.0", "--set", "tune.steps=6"]
    assert runner.invoke(app, ["tune", str(run_dir), *dp]).exit_code == 0
    journal = run_dir / "tune" / "privacy.journal.json"
    journal.write_text(journal.read_text()[:40])
    result = runner.invoke(app, ["tune", str(run_dir), *dp])
    assert result.exit_code == 2 and "privacy journal is unreadable" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_second_process_in_a_run_folder_is_refused_until_the_first_is_gone(finished, tmp_path):
    """One process per run folder: another live one is refused in one line and nothing is written;
    once it is gone — even by kill -9 — the folder is free again (the OS drops the lock)."""
    import subprocess
    import sys
    from engine.runlock import RunLock
    run_dir = copy(finished, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom engine.runlock import RunLock\n"
                               f"with RunLock({str(run_dir)!r}):\n    print('held', flush=True)\n    time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file() and p.name != ".post.lock"}
        result = runner.invoke(app, ["run", "--resume", str(run_dir)])
        assert result.exit_code == 2 and f"pid {holder.pid}" in result.output
        assert "in use by another post process" in result.output and len(result.output.strip().splitlines()) == 1
        assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file() and p.name != ".post.lock"} == before
    finally:
        holder.kill()  # SIGKILL: no cleanup runs in the holder
        holder.wait()
    with RunLock(run_dir), RunLock(run_dir):  # free again; re-entrant within one thread
        other = []
        worker = threading.Thread(target=lambda: other.append(runner.invoke(app, ["run", "--resume", str(run_dir)])))
        worker.start()
        worker.join()
        assert other[0].exit_code == 2 and "in use by another run in this process" in other[0].output
    result = runner.invoke(app, ["run", "--resume", str(run_dir)])
    assert result.exit_code == 0, result.output
