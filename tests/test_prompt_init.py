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
