"""A smaller pre-trained member of the large model's family as the student (`models.small`).

Llama 3.x, Qwen2.5 and Gemma 3 share a tokenizer across sizes, so a user can tune on the small
member instead of distilling one. Here the family is tiny Llama models built in the test: the large
`tiny:llama` (4 blocks, width 64) and a 2-block, width-32 model with the same tokenizer.
"""
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.tiny import build_model, build_tokenizer
from post_tui.cli import app

runner = CliRunner()
FAST = ["tune.steps=12", "transfer.steps=10", "eval.full_pt=false", 'models.large="tiny:llama"']


def small_member(folder, vocab_size=700):
    tokenizer = build_tokenizer(vocab_size=vocab_size)
    build_model("llama", len(tokenizer), layers=2, dim=32, seed=3, init_std=0.2).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def run(tmp_path, small, *extra):
    args = ["run", "--preset", "smoke", "--out", str(tmp_path / "run")]
    for s in (*FAST, f'models.small="{small}"', *extra):
        args += ["--set", s]
    return runner.invoke(app, args)


def test_a_narrower_pretrained_student_runs_the_whole_method(tmp_path):
    result = run(tmp_path, small_member(tmp_path / "small"))
    assert result.exit_code == 0, result.output
    folder = tmp_path / "run"
    assert not (folder / "distill").exists()  # no distillation: the student is given
    accuracy = json.loads((folder / "results.json").read_text())["accuracy"]
    assert {"full_zs", "cpt", "post", "output", "shift", "inference"} <= accuracy.keys()
    assert "direct" not in accuracy  # the 32-wide prompt cannot run on the 64-wide model as is
    assert "direct is not scored" in result.output
    from safetensors import safe_open
    with safe_open(folder / "transfer" / "post.safetensors", "pt") as f:
        assert f.get_tensor(f.keys()[0]).shape[-1] == 64  # POST's prompt is the large model's width


def test_a_student_with_another_tokenizer_is_refused_in_one_line(tmp_path):
    result = run(tmp_path, small_member(tmp_path / "small", vocab_size=300))  # the default saturates at 475
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "tokenizer" in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("align", [False, True])
def test_a_narrower_student_with_transfer_init_small_is_refused_before_tuning(tmp_path, align):
    extra = ["distill.align=true", 'distill.loss="kd"', "distill.steps=3"] if align else []
    result = run(tmp_path, small_member(tmp_path / "small"), 'transfer.init="small"', *extra)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "32 wide" in result.output and "transfer.init" in result.output
    assert not (tmp_path / "run" / "tune").exists()  # said before any stage ran


def test_aligning_the_smaller_model_to_the_large_one(tmp_path):
    """distill.align: the distill stage starts from models.small (not the teacher's blocks) and trains it
    on the large model's logits; the result is a kit like any distilled student."""
    small = small_member(tmp_path / "small")
    result = run(tmp_path, small, "distill.align=true", 'distill.loss="kd"', "distill.steps=30")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "run"
    summary = json.loads((folder / "distill" / "summary.json").read_text())
    assert summary["blocks"] is None and summary["final_loss"] < summary["first_loss"]
    kit = json.loads((folder / "distill" / "student.json").read_text())["kit"]
    config = json.loads((Path(kit) / "student" / "config.json").read_text())
    assert config["hidden_size"] == 32 and config["num_hidden_layers"] == 2  # the small model, trained
    assert json.loads((folder / "results.json").read_text())["accuracy"].keys() >= {"cpt", "post"}


@pytest.mark.parametrize("sets, message", [
    (["distill.align=true"], "set models.small"),
    (['models.small="x"', "distill.align=true", 'distill.loss="hidden"'], 'distill.loss = "kd"'),
])
def test_align_settings_that_cannot_work_are_refused(tmp_path, sets, message):
    from tests.helpers import run_with_sets
    result = run_with_sets(tmp_path / "r", sets)
    assert result.exit_code == 2 and message in result.output, result.output


def test_the_owner_transfers_for_a_preset_with_an_aligned_student(tmp_path):
    from engine.package import CARD_FIELDS
    from engine.parties import owner_config
    from engine.presets import load_config
    cfg = load_config("smoke", overrides=['models.small="S"', "distill.align=true", 'distill.loss="kd"'])
    card = {**{f: getattr(cfg.task, f) for f in CARD_FIELDS}, "prompt_length": 8}
    owner = owner_config(cfg, tmp_path / "KIT", card)  # the kit is the student: no align check applies
    assert owner.student_source == "kit" and not owner.distills
