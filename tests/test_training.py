"""The prompt-training loop: best-on-validation kept, early stop on patience."""
import itertools

import pytest
import torch

from engine.context import RunContext
from engine.presets import load_config
from engine.prompt import SoftPrompt
from engine.training import make_optimizer, train_prompt


def run(tmp_path, accuracies, patience, steps=20, eval_every=2):
    ctx = RunContext(load_config("smoke"), tmp_path / "run")
    prompt = SoftPrompt(2, 3)
    scores = iter(accuracies)

    def loss_fn(copy, indices):  # pulls every prompt entry towards 1
        return ((copy - 1) ** 2).flatten(1).sum(1)

    return train_prompt(ctx, "tune", prompt, loss_fn, itertools.repeat([0, 1]), steps,
                        make_optimizer("sgd", [prompt.weight], 0.1), validate=lambda: next(scores),
                        eval_every=eval_every, patience=patience)


def test_patience_stops_after_that_many_validations_without_a_new_best(tmp_path):
    result = run(tmp_path, [0.5, 0.7, 0.6, 0.7, 0.65, 0.9, 0.9, 0.9, 0.9, 0.9], patience=3)
    # validations at steps 2, 4, 6, 8, 10: best at 4, then 6, 8, 10 do not beat it
    assert result.steps == 10 and result.best_step == 4 and result.best_accuracy == 0.7
    assert "stopped improving" in result.stopped_reason
    # SGD at lr 0.1 on (w − 1)²: w ← w + 0.2·(1 − w), so after 4 steps w = 1 − 0.8⁴ (the kept prompt)
    torch.testing.assert_close(result.best_weight, torch.full((2, 3), 1 - 0.8 ** 4))


def test_patience_without_validations_is_refused():
    import pytest
    from engine.errors import PostError
    with pytest.raises((PostError, ValueError), match="eval_every"):
        load_config("smoke", overrides=["tune.patience=2", "tune.eval_every=0"])


def test_no_patience_runs_every_step(tmp_path):
    result = run(tmp_path, [0.5] * 10, patience=0)
    assert result.steps == 20 and result.best_step == 2 and result.stopped_reason == ""


def test_a_loss_that_is_not_finite_stops_the_stage_in_one_line():
    from engine.errors import PostError
    from engine.training import check_finite
    check_finite("tune", 3, 0.25)
    for stage, key in (("tune", "tune.lr"), ("transfer:post", "transfer.lr"), ("distill", "distill.lr")):
        for bad in (float("nan"), float("inf")):
            with pytest.raises(PostError, match=f"{stage}: the loss became {bad} at step 7.*lower {key}"):
                check_finite(stage, 7, bad)
    # The audit's shadows replay the released tune's recipe, which the audit refuses to change.
    with pytest.raises(PostError, match="audit: the loss became nan at step 4.*tune again with a lower tune.lr, "
                                        "then audit"):
        check_finite("audit", 4, float("nan"))
    from engine.training import check_finite_weights
    check_finite_weights("tune", [torch.zeros(3, 4), torch.ones(2)])
    with pytest.raises(PostError, match="distill: the weights became inf or nan.*lower distill.lr"):
        check_finite_weights("distill", [torch.zeros(3), torch.tensor([0.0, float("inf")])])


def test_a_loss_not_finite_before_any_update_blames_the_start_not_the_rate():
    """At step 1 nothing has been updated yet: a lower learning rate cannot help, and a transfer's start
    (the user's small prompt) is where an upstream divergence shows."""
    from engine.errors import PostError
    from engine.training import check_finite
    with pytest.raises(PostError, match="transfer:post: the loss is nan at step 1, before any update.*the small "
                                        "prompt.*tune again with a lower tune.lr") as caught:
        check_finite("transfer:post", 1, float("nan"))
    assert "lower transfer.lr" not in str(caught.value)
    with pytest.raises(PostError, match="distill: the loss is inf at step 1, before any update"):
        check_finite("distill", 1, float("inf"))


@pytest.mark.parametrize("sets, stage, key", [
    (["tune.lr=1e30"], "tune", "tune.lr"),
    (['distill.loss="hidden"', "distill.lr=1e30", "distill.grad_clip=1e30"], "distill", "distill.lr"),
])
def test_a_diverging_stage_fails_in_one_line_and_keeps_nothing(tmp_path, sets, stage, key):
    """A learning rate that sends the loss to nan: the stage stops there, exit 2; no results, and a diverged
    student is never cached for a later run to reuse."""
    from engine.assets import cache_root
    from tests.helpers import run_with_sets
    students = set((cache_root() / "students").glob("*")) if (cache_root() / "students").is_dir() else set()
    result = run_with_sets(tmp_path / "r", sets + ["eval.full_pt=false"])
    assert result.exit_code == 2 and f"{stage}: the loss became" in result.output, result.output
    assert f"lower {key}" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r" / "results.json").exists()
    now = set((cache_root() / "students").glob("*")) if (cache_root() / "students").is_dir() else set()
    assert now == students or stage != "distill"


def test_a_prompt_blown_up_in_its_last_update_is_not_scored(tmp_path):
    """One SGD update at a huge rate leaves a finite prompt of ~1e37 that no loss has seen: the model's
    outputs with it are nan, whose argmax would still make an accuracy. The validation refuses it in tune,
    the stage that made it, rather than a later stage failing with the wrong setting named."""
    from tests.helpers import run_with_sets
    result = run_with_sets(tmp_path / "r", ["tune.lr=3e38", 'tune.optimizer="sgd"', "tune.steps=1",
                                            "tune.eval_every=1", "distill.steps=20", "eval.full_pt=false"])
    assert result.exit_code == 2, result.output
    assert "tune failed" in result.output and "scores being evaluated are inf or nan" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "r" / "results.json").exists()
    assert not list((tmp_path / "r" / "tune").glob("prompt*"))
