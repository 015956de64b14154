"""A prompt init cut to the prompt's length is said before any stage runs, with the classes it names."""
from __future__ import annotations

from engine.prompt import init_warning
from tests.helpers import LABEL_WORDS, run_with_sets, tiny_pair


def test_a_cut_init_names_the_one_class_it_keeps():
    _, tok = tiny_pair("llama")
    text = "the movie was great or bad"
    n = len(tok(text, add_special_tokens=False).input_ids)
    assert init_warning(tok, text, n, LABEL_WORDS) is None  # fits
    assert init_warning(tok, text, 0, LABEL_WORDS) is None  # no prompt at all: nothing is cut
    assert init_warning(tok, text + ".", n, LABEL_WORDS) is None  # only the full stop is cut
    cut = len(tok("the movie was great", add_special_tokens=False).input_ids)
    message = init_warning(tok, text, cut, LABEL_WORDS)
    assert f"is {n} tokens and tune.prompt_length is {cut}" in message
    assert "names the class 'great' and not the others" in message  # the first label word of its class
    assert "shorten task.prompt_init" in message


def test_the_run_says_it_before_tuning(tmp_path):
    result = run_with_sets(tmp_path / "r", ["tune.prompt_length=2", "distill.steps=2", "tune.steps=2", "transfer.steps=2",
                                             "eval.full_pt=false", "task.max_eval=8"])
    assert result.exit_code == 0, result.output
    assert "tune.prompt_length is 2" in result.output


def test_transfer_init_small_starts_the_large_prompt_at_the_small_one(tmp_path):
    import torch

    from engine.prompt import SoftPrompt
    sets = ["distill.steps=4", "tune.steps=4", "transfer.steps=0", "eval.full_pt=false", "task.max_eval=8"]
    text = tmp_path / "text"
    assert run_with_sets(text, sets).exit_code == 0
    small = tmp_path / "small"
    result = run_with_sets(small, sets + ['transfer.init="small"'])
    assert result.exit_code == 0, result.output
    tuned = SoftPrompt.load(small / "tune" / "prompt.safetensors").weight
    started = SoftPrompt.load(small / "transfer" / "post.safetensors")
    assert torch.equal(started.weight, tuned) and started.metadata["init"] == "small prompt"  # 0 steps: the start itself, copied bytes (exact)
    from_text = SoftPrompt.load(text / "transfer" / "post.safetensors")  # the paper's start: the init text
    assert not torch.equal(from_text.weight, SoftPrompt.load(text / "tune" / "prompt.safetensors").weight)
    assert "init" not in from_text.metadata
    from engine.config import read_toml, validate
    from engine.context import RunContext
    from engine.fingerprints import transfer_settings
    ctx = RunContext(config=validate(read_toml(small / "config.toml")), run_dir=small)
    as_text = RunContext(config=ctx.config.model_copy(update={"transfer": ctx.config.transfer.model_copy(
        update={"init": "text"})}), run_dir=small)
    # the same folder, only the start differs: another start is another transfer, never kept across it
    assert transfer_settings(ctx) != transfer_settings(as_text)
    assert transfer_settings(ctx)["small_prompt"] == transfer_settings(as_text)["small_prompt"]


def test_the_new_inits_at_their_defaults_leave_every_digest_as_it_was():
    from engine.config import stable_dump
    from engine.presets import load_config
    dump = stable_dump(load_config("starter"))
    assert "init" not in dump["transfer"] and "init" not in dump["distill"]
    assert "init" in stable_dump(load_config("starter", overrides=['transfer.init="small"']))["transfer"]
