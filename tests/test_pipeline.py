"""The whole smoke pipeline through the CLI, stage commands, bad input, and the import rule."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from post_tui.cli import app

runner = CliRunner()
FAST = ["--set", "distill.steps=20", "--set", "tune.steps=20", "--set", "transfer.steps=20",
        "--set", "tune.eval_every=10"]


def losses(run_dir: Path) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for line in (run_dir / "events.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e["event"] == "Metric" and e["name"] == "loss":
            out.setdefault(e["stage"], []).append(e["value"])
    return out


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    import os
    os.environ["POST_CACHE"] = str(tmp_path_factory.mktemp("smoke-cache"))
    run_dir = tmp_path_factory.mktemp("runs") / "smoke"
    result = runner.invoke(app, ["run", "--preset", "smoke", "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    return run_dir


def test_smoke_writes_every_result_field(smoke_run):
    results = json.loads((smoke_run / "results.json").read_text())
    assert {"preset", "task", "public", "large", "small", "accuracy", "gap_closed", "seconds", "privacy"} <= results.keys()
    assert {"full_zs", "full_pt", "cpt", "direct", "post", "output", "shift", "inference"} <= results["accuracy"].keys()
    assert all(0.0 <= a <= 1.0 for a in results["accuracy"].values())
    assert set(results["seconds"]) == {"distill", "tune", "transfer", "full_pt", "eval"}
    assert results["privacy"] is None
    # the verdict: every judged pair, each warning also in the events (smoke is at chance: warnings expected)
    assert {c["name"] for c in results["verdict"]} == {"post_above_zero_shot", "post_above_direct", "student_prompt_works",
                                                      "post_above_majority", "post_class_balance"}
    logged = [json.loads(line).get("message", "") for line in (smoke_run / "events.jsonl").read_text().splitlines()]
    assert all(c["message"] in logged for c in results["verdict"] if c["status"] == "warning")
    for name in ("config.toml", "events.jsonl", "distill/student.json", "tune/prompt.safetensors",
                 "full_pt/prompt.safetensors", "transfer/post.safetensors", "eval/accuracy.json"):
        assert (smoke_run / name).is_file(), name
    # each test example's prediction per method, kept on the user's side: the accuracies are their counts,
    # and POST's comparisons with direct and zero-shot are made example by example from them
    predictions = json.loads((smoke_run / "eval" / "predictions.json").read_text())
    labels = predictions["labels"]
    assert len(labels) == results["test_examples"] and set(results["accuracy"]) <= set(predictions)
    for method, accuracy in results["accuracy"].items():
        assert sum(p == y for p, y in zip(predictions[method], labels)) == round(accuracy * len(labels)), method
    assert set(results["paired"]) == {"direct", "full_zs"} and 0 <= results["paired"]["direct"]["p"] <= 1
    judged = {c["name"]: c for c in results["verdict"]}
    assert judged["post_above_direct"]["paired"] == results["paired"]["direct"]
    for method, shares in results["class_shares"].items():  # each class's share of the test examples, from the same
        assert shares == [round(predictions[method].count(c) / len(labels), 3) for c in range(len(shares))], method
    assert set(results["class_shares"]) == {"labels", "post", "cpt", "full_zs"}
    # the baseline that reads nothing: the training split's most common class, said for every test example
    from engine import loading
    from engine.context import RunContext
    from engine.presets import load_config
    ctx = RunContext(load_config(config_file=smoke_run / "config.toml"), smoke_run)
    splits = loading.task(ctx, loading.large(ctx)[1])
    common = max(range(2), key=lambda c: (splits["train"].labels.count(c), -c))
    assert results["majority"]["class"] == common
    assert results["majority"]["accuracy"] == pytest.approx(labels.count(common) / len(labels))


def eval_progress(run_dir: Path) -> list[tuple[int, int]]:
    """(step, total) of the latest eval stage's Progress events."""
    steps = []
    for line in (run_dir / "events.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e["event"] == "StageStarted" and e["stage"] == "eval":
            steps = []
        elif e["event"] == "Progress" and e["stage"] == "eval":
            steps.append((e["step"], e["total_steps"]))
    return steps


def test_eval_reports_progress_to_its_total(smoke_run):
    steps = eval_progress(smoke_run)
    results = json.loads((smoke_run / "results.json").read_text())
    assert [s for s, _ in steps] == list(range(1, len(steps) + 1))
    assert steps[-1][0] == steps[-1][1] and len(steps) % len(results["accuracy"]) == 0  # whole batches per method


def test_smoke_loss_falls_in_each_stage(smoke_run):
    for stage, values in losses(smoke_run).items():
        k = max(len(values) // 5, 1)
        assert sum(values[-k:]) / k < sum(values[:k]) / k, stage


def test_stage_commands_rerun_on_a_run_folder(smoke_run):
    before = json.loads((smoke_run / "results.json").read_text())["accuracy"]
    result = runner.invoke(app, ["eval", str(smoke_run)])
    assert result.exit_code == 0, result.output
    assert json.loads((smoke_run / "results.json").read_text())["accuracy"] == before


def test_separate_stages_match_roles(tmp_path):
    """Owner distils, user tunes, owner transfers, then eval — each as its own command."""
    run_dir = tmp_path / "run"
    base = ["--preset", "smoke", *FAST, "--set", "eval.full_pt=false", "--set", "transfer.methods=[\"post\",\"direct\"]"]
    assert runner.invoke(app, ["distill", "--out", str(run_dir), *base]).exit_code == 0
    for stage in ("tune", "transfer", "eval"):
        result = runner.invoke(app, [stage, str(run_dir)])
        assert result.exit_code == 0, (stage, result.output)
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["accuracy"]) == {"full_zs", "cpt", "direct", "post"}


def test_transfer_never_reads_private_data(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    base = ["--preset", "smoke", *FAST, "--set", "eval.full_pt=false"]
    assert runner.invoke(app, ["distill", "--out", str(run_dir), *base]).exit_code == 0
    assert runner.invoke(app, ["tune", str(run_dir)]).exit_code == 0
    import engine.data.sources as sources
    real = sources.read_split
    seen = []

    def spy(source, split, subset="", seed=0):
        seen.append(split)
        return real(source, split, subset, seed)
    monkeypatch.setattr(sources, "read_split", spy)
    import engine.data.tasks as tasks
    monkeypatch.setattr(tasks, "read_split", spy)
    assert runner.invoke(app, ["transfer", str(run_dir)]).exit_code == 0
    assert seen == ["corpus"]  # the public split only


def test_transfer_loss_is_zero_when_student_is_teacher_and_prompts_match():
    from engine.losses import transfer_loss
    from engine.prompt import SoftPrompt, prompted_logits
    from tests.helpers import TEXTS, batch, tiny_pair
    model, tok = tiny_pair("llama")
    prompt = SoftPrompt.from_text(model, tok, "predict the sentiment", 6)
    ids, mask = batch(tok, TEXTS)
    with torch.no_grad():
        prompted = prompted_logits(model, ids, mask, prompt.weight)
        plain = prompted_logits(model, ids, mask, None)
    for alpha in (0.0, 0.5, 1.0):
        assert torch.allclose(transfer_loss(prompted, prompted, plain, plain, alpha), torch.zeros(len(TEXTS)), atol=1e-6)


@pytest.mark.parametrize("args, needle", [
    (["run", "--preset", "nope"], "unknown preset"),
    (["run", "--preset", "smoke", "--set", "tune.lrr=1"], "did you mean tune.lr"),
    (["run", "--preset", "smoke", "--set", "tune.steps=-3"], "tune.steps"),
    (["run", "--preset", "smoke", "--set", "task.source=/no/such/file.csv"], "not found"),
    (["run", "--preset", "smoke", "--set", "task.label_words=[[\"good\"],[\"good!\"]]"], "collide"),  # one first token
    (["run", "--preset", "smoke", "--set", "distill.blocks=[0,12]"], "out of range"),
    (["run", "--preset", "smoke", "--set", "tune.prompt_length=400"], "context"),
    (["run", "--preset", "smoke", "--set", "models.large=some-org/some-model"], "offline presets"),
    (["run", "--config", "/no/such.toml"], "not found"),
    (["run", "--preset", "smoke", "--set", "transfer.alpha=\"select\"", "--set", "transfer.methods=[\"post\"]"],
     "put all three"),
    (["run", "--preset", "smoke", "--set", "transfer.alpha=\"select\"", "--set", "privacy.epsilon=8.0"],
     "private validation split"),
])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, args, needle):
    out = tmp_path / "run"
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.output
    assert not out.exists()


def test_data_without_text_or_label_column(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("review,label\n" + "\n".join(f"good film {i},{i % 2}" for i in range(40)))
    result = runner.invoke(app, ["run", "--preset", "smoke", "--set", f"task.source={str(data)!r}".replace("'", '"'),
                                 "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "no text column 'text'" in result.stderr
    result = runner.invoke(app, ["run", "--preset", "smoke", "--set", f'task.source="{data}"',
                                 "--set", 'task.text_fields=["review"]', "--set", 'task.label_field="stars"',
                                 "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "no label column 'stars'" in result.stderr


def test_local_csv_is_a_private_task(tmp_path):
    data = tmp_path / "mine.csv"
    from engine.data.smoke import make_rows
    rows = make_rows(200, 3)
    data.write_text("text,label\n" + "\n".join(f"\"{r['text']}\",{r['label']}" for r in rows))
    result = runner.invoke(app, ["run", "--preset", "smoke", *FAST, "--set", f'task.source="{data}"',
                                 "--set", "eval.full_pt=false", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r" / "results.json").read_text())["test_examples"] == 20


def test_presets_list_and_show():
    result = runner.invoke(app, ["presets", "list"])
    assert result.exit_code == 0 and "smoke" in result.output and "sst2-gpt2" in result.output
    result = runner.invoke(app, ["presets", "show", "smoke"])
    assert result.exit_code == 0 and "[privacy]" in result.output and 'large = "tiny:gpt2"' in result.output


def test_engine_imports_no_ui_code():
    code = ("import importlib, pkgutil, sys, engine\n"
            "for m in pkgutil.walk_packages(engine.__path__, 'engine.'):\n"
            "    importlib.import_module(m.name)\n"
            "bad = [m for m in sys.modules if m.split('.')[0] == 'textual' or m.startswith(('rich.live', 'rich.progress'))]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_transfer_on_label_words_only(tmp_path):
    run_dir = tmp_path / "lab"
    result = runner.invoke(app, ["run", "--preset", "smoke", *FAST, "--set", 'transfer.vocab="labels"',
                                 "--set", 'transfer.methods=["post"]', "--set", "eval.full_pt=false", "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    curve = losses(run_dir)["transfer:post"]
    assert curve[-1] < curve[0]
    result = runner.invoke(app, ["run", "--preset", "smoke", "--set", 'transfer.vocab="some"', "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "transfer.vocab" in result.output


def test_alpha_select_keeps_the_best_validation_prompt(smoke_run, tmp_path):
    import shutil
    run_dir = tmp_path / "run"
    shutil.copytree(smoke_run, run_dir)
    result = runner.invoke(app, ["eval", str(run_dir), "--set", "transfer.alpha=\"select\""])
    assert result.exit_code == 0, result.output
    choice = json.loads((run_dir / "eval" / "alpha.json").read_text())
    val = choice["validation"]
    assert set(val) == {"output", "post", "shift"} and val[choice["method"]] == max(val.values())
    losses_ = choice["validation_loss"]
    assert set(losses_) == set(val) and all(loss > 0 for loss in losses_.values())
    assert not [m for m in val if val[m] == val[choice["method"]] and losses_[m] < losses_[choice["method"]]]
    assert choice["alpha"] == {"output": 0.0, "post": 0.5, "shift": 1.0}[choice["method"]]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["alpha"]["post"] == choice["alpha"]
    assert results["accuracy"]["post"] == results["accuracy"][choice["method"]]
    predictions = json.loads((run_dir / "eval" / "predictions.json").read_text())
    assert predictions["post"] == predictions[choice["method"]]  # the paired test compares the chosen prompt
    chosen = run_dir / "transfer" / f"{choice['method']}.safetensors"
    assert (run_dir / "eval" / "post.safetensors").read_bytes() == chosen.read_bytes()
    steps = eval_progress(run_dir)
    assert steps[-1][0] == steps[-1][1]  # the bar ends full whichever α won


def test_alpha_select_settles_a_tie_by_the_validation_loss(smoke_run, tmp_path, monkeypatch):
    import shutil
    from engine import evaluate
    run_dir = tmp_path / "run"
    shutil.copytree(smoke_run, run_dir)
    real = evaluate.score_methods

    def tied(ctx, split, names=None, progress=None, predictions=None, limit=0):  # post and shift tie on accuracy; shift's loss is lower
        found = real(ctx, split, names, progress, predictions, limit)
        if split == "validation":
            found = {"output": (0.5, 0.40), "post": (0.75, 0.70), "shift": (0.75, 0.60)}
        return found
    monkeypatch.setattr(evaluate, "score_methods", tied)
    result = runner.invoke(app, ["eval", str(run_dir), "--set", "transfer.alpha=\"select\""])
    assert result.exit_code == 0, result.output
    choice = json.loads((run_dir / "eval" / "alpha.json").read_text())
    assert (choice["method"], choice["alpha"]) == ("shift", 1.0)
    assert choice["validation_loss"] == {"output": 0.40, "post": 0.70, "shift": 0.60}


def test_resume_retrains_transfer_prompts_whose_inputs_changed(smoke_run, tmp_path):
    import shutil
    run_dir = tmp_path / "run"
    shutil.copytree(smoke_run, run_dir)
    prompts = {m: run_dir / "transfer" / f"{m}.safetensors" for m in ("post", "output", "shift")}
    before = {m: p.read_bytes() for m, p in prompts.items()}
    tune_before = (run_dir / "tune" / "prompt.safetensors").stat().st_mtime_ns
    result = runner.invoke(app, ["run", "--resume", str(run_dir), "--set", "transfer.lr=0.05"])
    assert result.exit_code == 0, result.output
    assert (run_dir / "tune" / "prompt.safetensors").stat().st_mtime_ns == tune_before  # kept
    assert all(prompts[m].read_bytes() != before[m] for m in prompts)  # a new lr: every prompt trained again


def test_the_applied_shift_loss_reaches_the_transfer(smoke_run, tmp_path):
    import shutil
    from engine.prompt import SoftPrompt
    run_dir = tmp_path / "run"
    shutil.copytree(smoke_run, run_dir)
    result = runner.invoke(app, ["run", "--resume", str(run_dir), "--set", 'transfer.shift_loss="applied"'])
    assert result.exit_code == 0, result.output
    weight = {m: (SoftPrompt.load(smoke_run / "transfer" / f"{m}.safetensors").weight,
                  SoftPrompt.load(run_dir / "transfer" / f"{m}.safetensors").weight) for m in ("post", "shift")}
    # shift (α = 1) is L2 alone, post (α = 0.5) half: another L2, another prompt
    assert all((before - after).abs().max() > 1e-3 for before, after in weight.values())
    # output (α = 0) has no L2, so the setting cannot change its prompt: kept, not trained again
    output = "transfer/output.safetensors"
    assert (run_dir / output).read_bytes() == (smoke_run / output).read_bytes()
    earlier = len((smoke_run / "events.jsonl").read_text().splitlines())
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()][earlier:]
    assert any(e["event"] == "StageFinished" and e["stage"] == "transfer:output" and e["summary"].get("reused")
               for e in events)


def test_post_at_alpha_one_is_shift_and_is_copied_not_retrained(smoke_run, tmp_path):
    import shutil
    run_dir = tmp_path / "run"
    shutil.copytree(smoke_run, run_dir)
    result = runner.invoke(app, ["transfer", str(run_dir), "--set", "transfer.alpha=1.0"])
    assert result.exit_code == 0, result.output
    folder = run_dir / "transfer"
    shift = json.loads((folder / "shift.json").read_text())
    assert shift["copied_from"] == "post" and shift["alpha"] == 1.0
    finished = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert any(e["event"] == "StageFinished" and e["stage"] == "transfer:shift" and e["summary"].get("reused")
               for e in finished)  # the TUI shows the copied prompt as reused, not as never run
    assert (folder / "shift.safetensors").read_bytes() == (folder / "post.safetensors").read_bytes()
    from engine.prompt import SoftPrompt
    trained_shift = SoftPrompt.load(smoke_run / "transfer" / "shift.safetensors").weight
    # What training gives: same loss, start, batches and seed, so only the order of float sums can
    # differ (thread count, kernels of another CPU), which moves 60 Adam steps by up to ~1e-5;
    # a different α or batch order moves the prompt by more than 1e-2.
    torch.testing.assert_close(SoftPrompt.load(folder / "post.safetensors").weight, trained_shift, rtol=1e-4, atol=1e-4)


def test_a_prompt_trained_for_another_method_at_the_same_alpha_is_kept_not_retrained(smoke_run, tmp_path):
    import shutil
    run_dir = tmp_path / "run"
    shutil.copytree(smoke_run, run_dir)
    folder = run_dir / "transfer"

    def trained_steps(method):  # progress events of that method's training so far
        events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
        return sum(e["event"] == "Progress" and e["stage"] == f"transfer:{method}" for e in events)

    before = {m: trained_steps(m) for m in ("post", "output", "shift")}
    # α = 0: post needs what output was trained with (same inputs): copied, nothing trained
    result = runner.invoke(app, ["run", "--resume", str(run_dir), "--set", "transfer.alpha=0.0"])
    assert result.exit_code == 0, result.output
    assert json.loads((folder / "post.json").read_text())["copied_from"] == "output"
    # a copy of the file, not a retraining: byte-equal by construction on any machine
    assert (folder / "post.safetensors").read_bytes() == (folder / "output.safetensors").read_bytes()
    assert {m: trained_steps(m) for m in before} == before
    # shift gone, α = 1 asked: nothing holds α = 1 (post and output hold 0), so post trains and shift is its twin
    (folder / "shift.safetensors").unlink()
    (folder / "shift.json").unlink()
    result = runner.invoke(app, ["run", "--resume", str(run_dir), "--set", "transfer.alpha=1.0"])
    assert result.exit_code == 0, result.output
    assert trained_steps("post") > before["post"]  # nothing at α = 1 was left: trained
    assert json.loads((folder / "shift.json").read_text())["copied_from"] == "post"  # the run's own twin copy
    post_at_one = (folder / "post.safetensors").read_bytes()
    # "select" after an α = 1 run: shift (α = 1) is taken from post *before* post is trained again at 0.5
    (folder / "shift.safetensors").unlink()
    (folder / "shift.json").unlink()
    trained = {m: trained_steps(m) for m in before}
    result = runner.invoke(app, ["run", "--resume", str(run_dir), "--set", "transfer.alpha=\"select\""])
    assert result.exit_code == 0, result.output
    # a copy of post's file made in this test a moment ago, not a retraining: byte-equal by construction
    assert (folder / "shift.safetensors").read_bytes() == post_at_one
    assert json.loads((folder / "shift.json").read_text())["copied_from"] == "post"
    assert json.loads((folder / "post.json").read_text())["alpha"] == 0.5
    assert trained_steps("post") > trained["post"] and trained_steps("shift") == trained["shift"]
    assert trained_steps("output") == trained["output"]  # kept at α = 0 throughout


def test_copies_are_planned_on_the_earlier_attempts_files(smoke_run, tmp_path):
    """post copies output's α = 0 prompt, and shift needs post's *earlier* α = 1 prompt: shift must get
    the α = 1 prompt, not the copy post just received."""
    import shutil
    run_dir = tmp_path / "run"
    shutil.copytree(smoke_run, run_dir)
    folder = run_dir / "transfer"
    for suffix in (".safetensors", ".json"):
        (folder / f"shift{suffix}").unlink()
    result = runner.invoke(app, ["run", "--resume", str(run_dir), "--set", "transfer.alpha=1.0",
                                 "--set", 'transfer.methods=["post", "output", "direct"]'])
    assert result.exit_code == 0, result.output
    post_at_one, output_at_zero = (folder / "post.safetensors").read_bytes(), (folder / "output.safetensors").read_bytes()
    result = runner.invoke(app, ["run", "--resume", str(run_dir), "--set", "transfer.alpha=0.0",
                                 "--set", 'transfer.methods=["post", "output", "shift", "direct"]'])
    assert result.exit_code == 0, result.output
    # copies of files, not trained again: byte-equal by construction on any machine
    assert (folder / "post.safetensors").read_bytes() == output_at_zero
    assert (folder / "shift.safetensors").read_bytes() == post_at_one
    from engine import artifacts
    for method, alpha in (("post", 0.0), ("output", 0.0), ("shift", 1.0)):
        summary = json.loads((folder / f"{method}.json").read_text())
        assert summary["alpha"] == alpha and summary["prompt_sha256"] == artifacts.sha256_file(folder / f"{method}.safetensors")


def test_alpha_select_without_its_prompts_fails_before_evaluating(smoke_run, tmp_path):
    import shutil
    run_dir = tmp_path / "run"
    shutil.copytree(smoke_run, run_dir)
    (run_dir / "transfer" / "shift.safetensors").unlink()
    events = (run_dir / "events.jsonl").read_text()
    result = runner.invoke(app, ["eval", str(run_dir), "--set", "transfer.alpha=\"select\""])
    # the transfer's record lists the prompt: refused as the upstream stage's missing file
    assert result.exit_code == 2 and "shift.safetensors" in result.stderr and "is missing" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    new = (run_dir / "events.jsonl").read_text().removeprefix(events)
    assert '"stage": "eval"' not in new  # no minutes of evaluation spent on a run that cannot finish
