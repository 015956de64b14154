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
    assert warnings(v) == [] and len(v) == 3  # no predictions kept: no class-balance check


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


# class_shares of two run folders' test predictions (2026-12-06; BENCHMARKS.md "A transfer that carried a lean")
SPAM_SEED4 = {"labels": [0.73, 0.27], "post": [0.147, 0.853], "cpt": [0.647, 0.353], "full_zs": [0.31, 0.69]}
BBC_SIX_BLOCKS = {"labels": [0.235, 0.174, 0.188, 0.239, 0.164], "post": [0.141, 0.103, 0.263, 0.362, 0.131],
                  "cpt": [0.239, 0.122, 0.183, 0.3, 0.155]}


def test_a_transfer_that_carried_a_lean_is_told_so():
    accuracy = {"full_zs": 0.367, "cpt": 0.83, "direct": 0.57, "post": 0.343}
    v = by_name(checks(accuracy, 300, 2, shares=SPAM_SEED4, class_names=["ham", "spam"]))
    balance = v["post_class_balance"]
    assert balance["status"] == "warning"
    assert "85% of the test examples in 'spam', where the student's prompt puts 35% and the labels 27%" in balance["message"]
    assert "public set closer to the task's inputs" in balance["message"]
    assert "in class 1," in by_name(checks(accuracy, 300, 2, shares=SPAM_SEED4))["post_class_balance"]["message"]


def test_a_lean_the_student_shares_or_a_small_one_is_not_flagged():
    # POST 0.20 from the labels' shares, further than the student's 0.07 but under the floor of 0.25
    assert verdict.distance(BBC_SIX_BLOCKS["post"], BBC_SIX_BLOCKS["labels"]) == pytest.approx(0.2, abs=0.005)
    assert by_name(checks({"cpt": 0.8}, 213, 5, shares=BBC_SIX_BLOCKS))["post_class_balance"]["status"] == "ok"
    # far from the labels, but the student's prompt leans as far: the transfer carried what it was given
    shared_lean = {**SPAM_SEED4, "cpt": [0.3, 0.7]}
    assert by_name(checks({"cpt": 0.6}, 300, 2, shares=shared_lean))["post_class_balance"]["status"] == "ok"
    # no predictions kept, or shares of different lengths: no claim
    assert "post_class_balance" not in by_name(checks({"cpt": 0.8}, 300, 2))
    assert "post_class_balance" not in by_name(checks({"cpt": 0.8}, 300, 2, shares={**SPAM_SEED4, "cpt": [1.0]}))


def test_class_shares_count_each_class():
    found = verdict.class_shares({"labels": [0, 1, 1, 2], "post": [2, 2, 2, 2], "direct": [0, 0, 0, 0]}, 3)
    assert found == {"labels": [0.25, 0.5, 0.25], "post": [0.0, 0.0, 1.0]}  # direct is not one of them


def test_post_is_compared_with_saying_the_most_common_class_every_time():
    from engine.verdict import majority
    baseline = majority([0, 0, 0, 1], [0] * 7 + [1] * 3)  # ham three times in four, 70 % of the test
    assert baseline == {"class": 0, "train_share": 0.75, "accuracy": 0.7}
    assert majority([1, 0], [0, 1, 1])["class"] == 0  # a tie: the lower index
    # spam-smollm2 at seed 0 (zero-shot 34.3, POST 65.7, full PT 83.0), against ham said for all 300 mails (70 %)
    spam = {"full_zs": 0.343, "full_pt": 0.83, "cpt": 0.86, "direct": 0.403, "post": 0.657}
    v = by_name(checks(spam, 300, 2, class_names=["ham", "spam"], baseline=baseline))
    assert v["post_above_majority"]["status"] == "warning" and v["post_above_zero_shot"]["status"] == "ok"
    assert "does not beat saying the training split's most common class, 'ham', for every example (70.0%)" in \
        v["post_above_majority"]["message"] and v["post_above_majority"]["full_pt_above"] is True
    # spam-gemma3 at seed 3: full PT 69.7 does not beat it either — the gap closed there is calibration
    gemma = by_name(checks({"full_zs": 0.337, "full_pt": 0.697, "post": 0.647}, 300, 2, baseline=baseline))
    assert gemma["post_above_majority"]["full_pt_above"] is False and "measures calibration" in \
        gemma["post_above_majority"]["message"]
    # tweets-smollm2 at seed 4: POST 82.7 against the positive class's 68 %
    tweets = by_name(checks({"full_zs": 0.697, "post": 0.827}, 300, 2, baseline={"class": 1, "accuracy": 0.68}))
    assert tweets["post_above_majority"]["status"] == "ok"
    assert "post_above_majority" not in by_name(checks(spam, 300, 2))  # no baseline (reports before it): no claim
