"""The after-eval verdict (engine.verdict): pinned on the suite's measured rows."""
import pytest

from engine import verdict
from engine.verdict import checks, warnings


def by_name(verdict):
    return {c["name"]: c for c in verdict}


def test_the_bbc_row_is_told_its_student_is_the_limit():
    # bbc-smollm2 (BENCHMARKS.md "Generality"): POST below zero-shot, the student's prompt below it too
    v = by_name(checks({"full_zs": 0.798, "cpt": 0.709, "direct": 0.737, "post": 0.784}, 213, 5))
    assert v["post_above_zero_shot"]["status"] == "warning"
    assert "student knows less" in v["post_above_zero_shot"]["message"] and "distill.blocks" in v["post_above_zero_shot"]["message"]
    assert v["post_above_direct"]["status"] == "ok" and v["student_prompt_works"]["status"] == "ok"


def test_the_mr_row_passes():
    v = checks({"full_zs": 0.553, "full_pt": 0.81, "cpt": 0.62, "direct": 0.567, "post": 0.697}, 300, 2)
    assert warnings(v) == [] and len(v) == 3


def test_a_tie_is_not_a_win_and_a_lost_transfer_is_told_apart():
    v = by_name(checks({"full_zs": 0.60, "cpt": 0.75, "direct": 0.60, "post": 0.6 + 0.5 / 300}, 300, 2))
    assert v["post_above_zero_shot"]["status"] == "warning" and "the transfer lost it" in v["post_above_zero_shot"]["message"]
    assert v["post_above_direct"]["status"] == "warning"
    assert 'try transfer.alpha = "select"' in v["post_above_zero_shot"]["message"]
    chosen = by_name(checks({"full_zs": 0.60, "cpt": 0.75, "post": 0.6}, 300, 2, alpha_selected=True))
    message = chosen["post_above_zero_shot"]["message"]  # α was chosen already: not advised again
    assert "at each α tried on validation" in message and '"select"' not in message


def test_a_student_prompt_at_chance_is_flagged():
    # the demo's old 600-step student: cpt 50.4 % on two balanced classes
    v = by_name(checks({"full_zs": 0.536, "cpt": 0.504, "direct": 0.552, "post": 0.626}, 500, 2))
    assert v["student_prompt_works"]["status"] == "warning" and "nothing to transfer" in v["student_prompt_works"]["message"]
    assert v["post_above_zero_shot"]["status"] == "ok"


def test_methods_not_scored_are_not_judged():
    assert checks({"cpt": 0.9}, 100, 2) == [checks({"cpt": 0.9}, 100, 2)[0]] and len(checks({}, 100, 2)) == 0


def test_the_exact_mcnemar_p_value():
    """Pinned against the binomial tail (scipy.stats.binomtest gives the same: 0.5034, 0.0079)."""
    from engine.verdict import mcnemar_p
    assert mcnemar_p(8, 12) == pytest.approx(0.503445, abs=1e-6) == mcnemar_p(12, 8)
    assert mcnemar_p(30, 12) == pytest.approx(0.007916, abs=1e-6)
    assert mcnemar_p(0, 10) == pytest.approx(2 / 1024) and mcnemar_p(0, 0) == 1.0 and mcnemar_p(5, 5) == 1.0


def test_post_is_compared_with_direct_and_zero_shot_example_by_example():
    from engine.verdict import paired
    predictions = {"labels": [0, 1, 1, 0, 1, 0], "post": [0, 1, 1, 1, 0, 0], "direct": [1, 1, 0, 0, 0, 0],
                   "full_zs": [0, 1, 1, 1, 0, 0]}
    found = paired(predictions)
    assert found["direct"] == {"only_post": 2, "only_direct": 1, "p": 1.0}  # examples 0 and 2 against 3
    assert found["full_zs"] == {"only_post": 0, "only_full_zs": 0, "p": 1.0}  # the same predictions
    assert paired({"post": [0], "direct": [0]}) == {} and "direct" not in paired({**predictions, "direct": [0]})
    accuracy = {"post": 4 / 6, "direct": 3 / 6, "full_zs": 4 / 6, "cpt": 0.9}
    checks = {c["name"]: c for c in verdict.checks(accuracy, 6, 2, found)}
    assert checks["post_above_direct"]["paired"] == found["direct"]
    assert "2 only POST gets right, 1 only direct; exact McNemar p = 1" in checks["post_above_direct"]["message"]
    assert "only zero-shot" in checks["post_above_zero_shot"]["message"]
    assert "paired" not in {k for c in verdict.checks(accuracy, 6, 2) for k in c}  # no predictions: no claim
