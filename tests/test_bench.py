"""`post bench --preset smoke`: both blocks, the report files, and what they claim."""
import json

import pytest
from typer.testing import CliRunner

from engine.bench import block_configs, markdown
from engine.presets import load_config
from post_tui.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    import os
    os.environ["POST_CACHE"] = str(tmp_path_factory.mktemp("bench-cache"))
    out = tmp_path_factory.mktemp("bench") / "smoke"
    result = runner.invoke(app, ["bench", "--preset", "smoke", "--out", str(out),
                                 "--set", "tune.steps=30", "--set", "transfer.steps=20", "--set", "distill.steps=20"])
    assert result.exit_code == 0, result.output
    return out


def test_bench_writes_json_md_png(bench_dir):
    report = json.loads((bench_dir / "bench.json").read_text())
    for block in ("nodp", "dp"):
        acc = report[block]["accuracy"]
        assert set(acc) == {"full_zs", "full_pt", "cpt", "direct", "post", "output", "shift", "inference"}
        assert report[block]["minutes"]["total"] > 0
        assert report[block]["tokens"]["tune"] > 0 and report[block]["tokens"]["transfer"] > 0
        assert "tune" in report[block]["loss_curves"]
    assert report["nodp"]["privacy"] is None
    spent = report["dp"]["privacy"]
    assert spent["target_epsilon"] == 8.0 and 0 < spent["epsilon"] <= 8.0
    assert (bench_dir / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (bench_dir / "bench.md").read_text()
    assert "| no DP |" in md and "DP ε=8" in md and "Full PT" in md


def test_dp_block_reuses_the_student(bench_dir):
    student = {b: json.loads((bench_dir / b / "distill" / "student.json").read_text())["path"] for b in ("nodp", "dp")}
    assert student["nodp"] == student["dp"]


def test_bench_resumes_without_recomputing(bench_dir):
    before = (bench_dir / "nodp" / "tune" / "prompt.safetensors").stat().st_mtime_ns
    result = runner.invoke(app, ["bench", "--preset", "smoke", "--out", str(bench_dir),
                                 "--set", "tune.steps=30", "--set", "transfer.steps=20", "--set", "distill.steps=20"])
    assert result.exit_code == 0, result.output
    assert (bench_dir / "nodp" / "tune" / "prompt.safetensors").stat().st_mtime_ns == before


def test_resume_with_a_new_alpha_retrains_only_post(bench_dir):
    transfer = bench_dir / "nodp" / "transfer"
    kept = {m: (transfer / f"{m}.safetensors").stat().st_mtime_ns for m in ("output", "shift", "post")}
    kept_seconds = sum(json.loads((transfer / f"{m}.json").read_text())["seconds"] for m in ("output", "shift"))
    result = runner.invoke(app, ["bench", "--preset", "smoke", "--out", str(bench_dir), "--set", "transfer.alpha=0.25",
                                 "--set", "tune.steps=30", "--set", "transfer.steps=20", "--set", "distill.steps=20"])
    assert result.exit_code == 0, result.output
    after = {m: (transfer / f"{m}.safetensors").stat().st_mtime_ns for m in kept}
    assert after["output"] == kept["output"] and after["shift"] == kept["shift"] and after["post"] != kept["post"]
    assert json.loads((transfer / "post.json").read_text())["alpha"] == 0.25
    results = json.loads((bench_dir / "nodp" / "results.json").read_text())
    assert results["alpha"]["post"] == 0.25
    assert results["seconds"]["transfer"] >= kept_seconds  # minutes count the kept prompts' training too


def test_auto_alpha_is_not_used_under_dp():
    cfg = load_config("smoke", overrides=["transfer.alpha=\"auto\""])
    blocks = block_configs(cfg)
    assert blocks["nodp"].privacy.enabled is False and blocks["nodp"].transfer.alpha == "auto"
    assert blocks["dp"].privacy.epsilon == 8.0 and isinstance(blocks["dp"].transfer.alpha, float)


def test_markdown_gap_closed_and_cost_ratio():
    block = {"accuracy": {"full_zs": 0.5, "full_pt": 0.9, "post": 0.8}, "gap_closed": 0.75, "alpha": {"post": 0.5},
             "privacy": None, "test_examples": 10, "tokens": {"tune": 100},
             "minutes": {"tune": 1.0, "transfer": 1.0, "full_pt": 10.0, "total": 12.0}}
    report = {"preset": "p", "large": "m", "task": "t", "public": "u", "date": "d", "machine": {"platform": "x"},
              "epsilon": 8.0, "alpha_source": "preset", "nodp": block,
              "dp": {**block, "privacy": {"epsilon": 7.99}}}
    md = markdown(report)
    assert "| no DP | 50.00 | 90.00 | — | — | 80.00 |" in md
    assert "DP ε=8 (spent 7.99)" in md and "0.75" in md and "5.0× cheaper" in md


def test_quality_cost_prices_each_recipe_with_its_own_students_costs(tmp_path, monkeypatch):
    """bench/quality_cost.py: a 6-block recipe is priced with the 6-block student's measured seconds, not the
    4-block one's; gap closed is on the row's own validation examples; an unmeasured student is refused."""
    from bench import quality_cost

    def student(blocks, tune, distill):
        seconds = {"full_pt": 1000.0, "tune": tune, "transfer_one": 50.0, "target_pass": 5.0, "teacher_cache": 20.0,
                   "distill": distill, "post_one_alpha": tune + 55.0}
        return {"blocks": blocks, "layers": 30, "run_seconds": seconds, "steps": {"distill": 1200}}

    (tmp_path / "ablation").mkdir()
    (tmp_path / "scaling.json").write_text(json.dumps({"students": {
        "date": "d", "command": "c", "students": [student([0, 1, -2, -1], 100.0, 600.0),
                                                 student([0, 1, 2, -3, -2, -1], 200.0, 1200.0)]}}))
    for name, blocks, steps, post in (("four", [0, 1, 28, 29], 2400, 0.7), ("six", [0, 1, 2, 27, 28, 29], 1200, 0.6)):
        (tmp_path / "ablation" / f"{name}.json").write_text(json.dumps({
            "lever": name, "validation": {"full_zs": 0.5, "post": post, "cpt": 0.6},
            "distill": {"blocks": blocks, "steps": steps}}))
    monkeypatch.setattr(quality_cost, "RESULTS", tmp_path)
    models = quality_cost.cost_models()
    four = quality_cost.point("four", models, full_pt=0.9)
    six = quality_cost.point("six", models, full_pt=0.9)
    # four: POST = 155 (user + transfer) + 20 (teacher cache) + 600 · 2400 / 1200 (its KD steps) = 1375
    assert four["full_pt_over_post"] == round(1000 / 1375, 2) and four["gap_closed"]["post"] == 0.5
    # six: its own student's seconds — 255 + 20 + 1200 = 1475
    assert six["full_pt_over_post"] == round(1000 / 1475, 2) and six["gap_closed"]["post"] == 0.25
    (tmp_path / "ablation" / "two.json").write_text(json.dumps({
        "lever": "two", "validation": {"full_zs": 0.5, "post": 0.6}, "distill": {"blocks": [0, 29], "steps": 1}}))
    with pytest.raises(SystemExit, match=r"two: no cost measured for a student of blocks \[0, 29\]"):
        quality_cost.point("two", models, full_pt=0.9)
    # a suite row's report (bench/student_curve.py's points) reads its recipe from `method`, full PT from the row
    report = tmp_path / "blocks6-mr.json"
    report.write_text(json.dumps({"row": "mr", "validation": {"full_zs": 0.5, "full_pt": 0.7, "post": 0.6},
                                  "method": {"distill": {"blocks": [0, 1, 2, 27, 28, 29], "steps": 1200}}}))
    suite_point = quality_cost.point(str(report), models, full_pt=0.9)
    assert suite_point["name"] == "blocks6-mr" and suite_point["full_pt_over_post"] == round(1000 / 1475, 2)
    assert suite_point["gap_closed"]["post"] == pytest.approx(0.5)  # (0.6 − 0.5) / (0.7 − 0.5): the row's full PT


def test_student_curve_orders_students_by_size_and_finds_where_the_goal_is_crossed(tmp_path):
    """bench/student_curve.py: points sorted by blocks kept (the oracle — the large model as its own student —
    counts all of them), the goal's crossing on the straight line between the neighbours that straddle it,
    and another row's or another student's report refused."""
    from bench import student_curve

    def report(name, blocks, gap, val_gap, enabled=True, row="mr-smollm2", student=None):
        path = tmp_path / f"{name}.json"
        acc = {m: 0.5 for m in ("cpt", "inference", "post", "full_zs", "full_pt")}
        path.write_text(json.dumps({
            "row": row, "large": "smollm2-135m", "student": student, "accuracy": acc, "validation": acc,
            "gap_closed": gap, "validation_gap_closed": val_gap, "alpha": {"post": 1.0}, "minutes": {"total": 1.0},
            "method": {"distill": {"enabled": enabled, "blocks": blocks, "steps": 1200}}}))
        return path

    paths = [report("oracle", [0, -1], 0.9, 0.95, enabled=False), report("four", [0, 1, -2, -1], 0.6, 0.7),
             report("ten", list(range(10)), 0.7, 0.85)]
    points = sorted((student_curve.point(p, 30) for p in paths), key=lambda p: p["blocks"])
    assert [p["blocks"] for p in points] == [4, 10, 30] and points[-1]["student"] == "the large model itself"
    # test: 0.7 at 10 blocks, 0.9 at 30 → 0.8 halfway, at 20; validation: 0.7 → 0.85 from 4 to 10 → 0.8 at 8
    assert student_curve.crossing(points, "gap_closed") == 20.0
    assert student_curve.crossing(points, "validation_gap_closed") == 8.0
    assert student_curve.crossing(points[:2], "gap_closed") is None  # never reaches the goal
    with pytest.raises(SystemExit, match="not the large model"):
        student_curve.point(report("other", [], 0.9, 0.9, enabled=False, student="gemma3-270m"), 30)
    (tmp_path / "ablation.json").write_text(json.dumps({"lever": "x", "validation": {}}))  # not a suite report
    with pytest.raises(SystemExit, match=r"ablation.json: not a suite row's report \(KeyError: 'method'\)"):
        student_curve.point(tmp_path / "ablation.json", 30)


def test_prompt_response_compares_a_students_answer_to_the_large_models_prompt(tmp_path):
    """bench/prompt_response.py: the large model as its own "student" answers exactly as itself
    (correlation 1, the same accuracies: one model, one computation); a two-block student is measured on
    the same examples; bad prompts (another width, nan, not a matrix), students (missing, not a model, another
    width, a kit of another teacher) and arguments (a name twice, --out a folder) are refused in one line."""
    import subprocess
    import sys
    import torch
    from pathlib import Path
    from engine.models import make_student
    from engine.prompt import SoftPrompt
    from tests.helpers import saved_tiny
    from bench import prompt_response
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text('extends = "smoke"\n')
    large, large_folder = saved_tiny("gpt2", tmp_path / "large")
    from engine.tiny import tiny
    _, tokenizer = tiny("tiny:gpt2")
    make_student(large, [0, -1]).save_pretrained(tmp_path / "student")
    tokenizer.save_pretrained(tmp_path / "student")
    prompt = SoftPrompt.from_text(large, tokenizer, "Predict the sentiment of the review.", 4)
    prompt.weight.data += 0.5 * torch.randn(prompt.weight.shape, generator=torch.Generator().manual_seed(0))
    prompt.save(tmp_path / "prompt.safetensors")
    out = prompt_response.measure(run, tmp_path / "prompt.safetensors",
                                  {"itself": Path(large_folder), "two": tmp_path / "student"}, "validation")
    itself, two = out["students"]["itself"], out["students"]["two"]
    assert itself["correlation"] == pytest.approx(1.0, abs=1e-3)
    assert {k: itself[k] for k in ("zero_shot", "prompted")} == {k: out["large"][k] for k in ("zero_shot", "prompted")}
    assert itself["mean_change"] == pytest.approx(out["large"]["mean_change"], abs=1e-3)
    assert out["large"]["mean_change"] != 0  # the prompt does move the large model
    assert -1 <= two["correlation"] <= 1 and out["examples"] > 0
    narrow = SoftPrompt(4, 8)
    narrow.save(tmp_path / "narrow.safetensors")
    from safetensors.torch import save_file
    save_file({"prompt": torch.full((4, 64), float("nan"))}, tmp_path / "nan.safetensors")
    save_file({"prompt": torch.zeros(64)}, tmp_path / "flat.safetensors")
    from transformers import GPT2Config, GPT2LMHeadModel
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4)).save_pretrained(tmp_path / "w32")
    tokenizer.save_pretrained(tmp_path / "w32")
    from engine import kit
    kit.write(tmp_path / "other", make_student(large, [0, -1]), tokenizer, "tiny:llama", {"weights": "another"},
              [0, -1], "k")
    (tmp_path / "empty").mkdir()
    good, student = str(tmp_path / "prompt.safetensors"), f"s={tmp_path / 'student'}"
    script = Path(__file__).parents[1] / "bench" / "prompt_response.py"
    for args, says in [([str(tmp_path / "narrow.safetensors"), student], "not the large model's"),
                       ([good, f"s={tmp_path / 'nowhere'}"], "NAME=FOLDER"),
                       ([str(tmp_path / "nan.safetensors"), student], "inf or nan values"),
                       ([str(tmp_path / "flat.safetensors"), student], "not vectors × width"),
                       ([good, student, f"s={tmp_path / 'student'}"], "names two students"),
                       ([good, student, "--out", str(tmp_path)], "is a folder"),
                       ([good, f"e={tmp_path / 'empty'}"], "config.json"),
                       ([good, f"w={tmp_path / 'w32'}"], "a student of width 32"),
                       ([good, f"o={tmp_path / 'other'}"], "distilled from 'tiny:llama'")]:
        done = subprocess.run([sys.executable, str(script), str(run), *args], capture_output=True, text=True)
        assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_calibration_biases_give_the_target_class_shares():
    """bench/calibration.py: with two classes the bias is the exact margin threshold; with more, prior
    matching brings the soft shares to the target (checked within 0.02, float sums on any CPU)."""
    import torch
    from bench.calibration import accuracy, share_biases, shares
    log_probs = torch.log_softmax(torch.tensor([[0.0, 2.0], [0.0, 1.0], [0.0, 0.5], [0.0, -1.0]]), -1)
    bias = share_biases(log_probs, [0.75, 0.25])  # one input of four in class 1: the largest margin
    assert shares(log_probs.double() + bias, 2) == [0.75, 0.25]
    assert accuracy(log_probs, torch.tensor([1, 0, 0, 0]), bias) == 1.0 and accuracy(log_probs, torch.tensor([1, 0, 0, 0])) == 0.5
    assert shares(log_probs.double() + share_biases(log_probs, [0.0, 1.0]), 2) == [0.0, 1.0]
    torch.manual_seed(0)
    three = torch.log_softmax(torch.randn(400, 3) + torch.tensor([2.0, 0.0, -1.0]), -1)
    soft = torch.softmax(three.double() + share_biases(three, [0.2, 0.3, 0.5]), -1).mean(0)
    assert torch.allclose(soft, torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64), atol=0.02)


def test_compare_public_refuses_bad_input_in_one_line(tmp_path):
    """bench/compare_public.py: no RUN_DIR, a folder that is no run folder, or `--set` given: one line, exit 2."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    for args in ([], [str(tmp_path)], [str(tmp_path), "--set", "public.size=8"]):
        done = subprocess.run([sys.executable, "bench/compare_public.py", *args], cwd=root, capture_output=True,
                              text=True, env={**__import__("os").environ, "PYTHONPATH": str(root)})
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
