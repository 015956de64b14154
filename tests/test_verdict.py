"""The after-eval verdict (engine.verdict): pinned on the suite's measured rows."""
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


def test_a_student_prompt_at_chance_is_flagged():
    # the demo's old 600-step student: cpt 50.4 % on two balanced classes
    v = by_name(checks({"full_zs": 0.536, "cpt": 0.504, "direct": 0.552, "post": 0.626}, 500, 2))
    assert v["student_prompt_works"]["status"] == "warning" and "nothing to transfer" in v["student_prompt_works"]["message"]
    assert v["post_above_zero_shot"]["status"] == "ok"


def test_methods_not_scored_are_not_judged():
    assert checks({"cpt": 0.9}, 100, 2) == [checks({"cpt": 0.9}, 100, 2)[0]] and len(checks({}, 100, 2)) == 0
