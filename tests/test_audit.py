"""`post audit`: LiRA against the tuning recipe — the attack's arithmetic pinned, the stage end to end
(resume, the recipe check, DP shadows) and that it measures something: a prompt that can only memorise
(random labels) is told apart from its non-members, the same recipe under DP at ε = 1 is not."""
import json
import math
import random

import pytest
import torch
from typer.testing import CliRunner

from engine.audit import design, lira
from engine.errors import PostError
from post_tui.cli import app

runner = CliRunner()


# ---------------------------------------------------------------- the arithmetic

def test_confidence_logit_is_the_log_odds_of_the_true_class():
    scores = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    three = torch.tensor([[0.0, 0.0, 0.0]])
    phi = lira.confidence_logit(scores, torch.tensor([1, 0, 1]))
    assert phi.tolist() == pytest.approx([math.log(3.0), 0.0, 0.0], abs=1e-12)  # p = 0.75 → log 3; p = 0.5 → 0
    assert lira.confidence_logit(three, torch.tensor([2])).item() == pytest.approx(-math.log(2.0), abs=1e-12)
    far = lira.confidence_logit(torch.tensor([[0.0, 800.0]]), torch.tensor([1]))  # p rounds to 1 in float64
    assert far.item() == pytest.approx(800.0)  # the log-odds, not inf


def test_auc_and_tpr_at_fpr_pinned():
    assert lira.roc_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == pytest.approx(0.75)
    assert lira.roc_auc(torch.tensor([1.0, 1.0]), torch.tensor([1, 0])) == pytest.approx(0.5)  # a tie counts half
    neg, pos = torch.arange(100.0), torch.arange(100.0) + 95.5
    scores, truth = torch.cat([neg, pos]), torch.cat([torch.zeros(100), torch.ones(100)])
    # at most 1 % of the non-members flagged: the threshold is the second-highest non-member, 98
    assert lira.tpr_at_fpr(scores, truth, 0.01) == pytest.approx(0.97)
    assert lira.tpr_at_fpr(scores, truth, 0.001) == pytest.approx(0.96)  # none flagged: above 99
    with pytest.raises(ValueError):
        lira.roc_auc(torch.tensor([1.0]), torch.tensor([1]))


def test_lira_separates_planted_members_and_not_a_null():
    gen = torch.Generator().manual_seed(0)
    member = design.membership(4000, 8, seed=0)
    difficulty = torch.randn(4000, generator=gen) * 3  # per-example offsets: what LiRA's per-example means remove
    noise = torch.randn(8, 4000, generator=gen)
    planted = lira.audit(difficulty + noise + 1.5 * member, member)
    null = lira.audit(difficulty + noise, member)
    assert planted["auc"] > 0.8 and planted["auc"] > planted["confidence_auc"] + 0.1
    # nothing planted: a coin, not below one. With the target's own group left one shadow short, members
    # scored lower (0.468–0.474 over three seeds of this draw); 32,000 scores carry ≈ 0.003 of standard error
    assert abs(null["auc"] - 0.5) < 0.012 and abs(null["confidence_auc"] - 0.5) < 0.012
    assert planted["members"] == planted["non_members"] == 16000
    assert len(planted["per_target_auc"]) == 8


def test_each_examples_groups_are_cut_to_the_same_size_from_the_right_shadows():
    member = design.membership(50, 8, seed=1)
    for target in range(8):
        others = member[[k for k in range(8) if k != target]]
        m_in, m_out = lira._equal_groups(others, target)
        assert (m_in.sum(0) == 3).all() and (m_out.sum(0) == 3).all()
        assert not (m_in & ~others).any() and not (m_out & others).any()


def test_design_is_balanced_seeded_and_checked():
    member = design.membership(37, 6, seed=3)
    assert member.shape == (6, 37) and (member.sum(0) == 3).all()
    # exact: a seeded CPU generator draws the same bits on every machine and nothing is trained or summed
    assert torch.equal(member, design.membership(37, 6, seed=3))
    assert not torch.equal(member, design.membership(37, 6, seed=4))
    for shadows in (2, 4, 5):  # 4: groups of one shadow left, no variance to fit
        with pytest.raises(PostError, match="even number"):
            design.membership(10, shadows, seed=0)
    assert design.pool_indices(10, 0, seed=0) == list(range(10))
    pool = design.pool_indices(100, 20, seed=0)
    assert len(set(pool)) == 20 and pool == sorted(pool) and pool == design.pool_indices(100, 20, seed=0)


# ---------------------------------------------------------------- the stage

def invoke(*args, code=0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


def random_label_csv(path):
    """Word salad with coin-flip labels: nothing to learn, so a prompt that fits it can only memorise."""
    rng = random.Random(0)
    words = "apple river stone cloud table music paper glass forest light window garden silver winter ocean candle".split()
    rows = [f"{' '.join(rng.choice(words) for _ in range(6))},{rng.randint(0, 1)}" for _ in range(240)]
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    return path


MEMORISE = ["tune.steps=300", "tune.lr=0.1", "distill.steps=20"]


def tuned(folder, data, *extra):
    sets = [a for s in (*MEMORISE, f'task.source="{data}"', *extra) for a in ("--set", s)]
    invoke("distill", "--preset", "smoke", *sets, "--out", folder)
    invoke("tune", folder)
    return folder


def len_train(run) -> int:
    return json.loads((run / "audit" / "audit.json").read_text())["train_examples"]


def audit_steps(run) -> list[tuple[int, int]]:
    """(step, total) of every audit progress event the run folder's events.jsonl holds, in order."""
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    return [(e["step"], e["total_steps"]) for e in events if e["event"] == "Progress" and e["stage"] == "audit"]


def test_audit_tells_memorised_members_apart_and_dp_hides_them(tmp_path):
    data = random_label_csv(tmp_path / "coin.csv")
    plain = tuned(tmp_path / "plain", data)
    dp = tuned(tmp_path / "dp", data, "privacy.epsilon=1")
    for run in (plain, dp):
        out = invoke("audit", run, "--set", "audit.pool=64").output
        assert "LiRA AUC" in out
    plain_report = json.loads((plain / "audit" / "audit.json").read_text())
    dp_report = json.loads((dp / "audit" / "audit.json").read_text())
    # observed (2 seeds, this box and AMD-free): plain 0.805 / 0.814, DP ε = 1 0.522 / 0.458; the scores of
    # 8 correlated shadows on 64 examples carry ≈ 0.04 of standard error, so the margins below are 3 of them
    assert plain_report["lira"]["auc"] > 0.68
    assert dp_report["lira"]["auc"] < plain_report["lira"]["auc"] - 0.12
    assert plain_report["shadow_dp"] is None and dp_report["released"]["dp"]
    shadow_dp = dp_report["shadow_dp"]
    assert all(0.9 < e <= 1.0 + 1e-9 for e in shadow_dp["epsilon"])  # σ planned for ε = 1 per shadow
    # the released tune's δ (1/N of the training split) and expected batch (tune.batch_size), not the shadow's
    assert all(d == pytest.approx(1 / dp_report["train_examples"]) for d in shadow_dp["delta"])
    assert all(q * n == pytest.approx(16) for q, n in zip(shadow_dp["sample_rate"], dp_report["members_per_shadow"]))
    assert sum(plain_report["members_per_shadow"]) == 64 * 4  # each example in half of the 8 shadows
    record = json.loads((plain / "audit" / "done.json").read_text())
    assert record["status"] == "completed" and record["artifacts"]["report"]["path"].endswith("audit.json")


def test_audit_resumes_its_finished_shadows_and_repeats_only_the_released_recipe(tmp_path):
    from engine import pipeline
    from engine.config import read_toml, validate
    from engine.context import RunContext
    data = random_label_csv(tmp_path / "coin.csv")
    run = tuned(tmp_path / "run", data, "tune.steps=30")
    invoke("audit", run, "--set", "audit.pool=40", "--set", "audit.shadows=6")
    first = json.loads((run / "audit" / "audit.json").read_text())
    steps = audit_steps(run)  # one bar over all six shadows, not one that starts again per shadow
    total = steps[0][1]
    assert [s for s, _ in steps] == list(range(1, total + 1)) and {t for _, t in steps} == {total}
    assert total % 6 == 0 and total == 6 * round(30 * 20 / len_train(run))  # six equal shadows of 20 members
    ctx = RunContext(config=validate(read_toml(run / "config.toml")), run_dir=run)
    assert pipeline.why_rerun(ctx, "audit") is None  # its record says done for these inputs
    (run / "audit" / "phi-2.safetensors").unlink()  # as if the run had stopped during shadow 3
    seen = len(audit_steps(run))
    out = invoke("audit", run).output  # the pool and shadows come back from the run's config.toml
    assert out.count("audit: shadow ") == 1 and "shadow 3 of 6" in out
    resumed = audit_steps(run)[seen:]  # shadow 3's steps, numbered after shadows 1 and 2
    assert resumed[0][0] == steps[-1][0] // 6 * 2 + 1 and resumed[-1][0] == steps[-1][0] // 6 * 3
    again = json.loads((run / "audit" / "audit.json").read_text())
    assert again["lira"]["auc"] == pytest.approx(first["lira"]["auc"], abs=0.05)  # a shadow retrained: near, not equal
    invoke("audit", run, "--set", "audit.shadows=8")  # another design: every shadow anew
    assert len(list((run / "audit").glob("phi-*.safetensors"))) == 8
    config = (run / "config.toml").read_text()
    refused = invoke("audit", run, "--set", "tune.lr=0.5", code=2).output
    assert "not current" in refused and "tune.lr" in refused and "Traceback" not in refused
    small = invoke("audit", run, "--set", "audit.pool=20", code=2).output  # halves of 10: under a batch of 16
    assert "audit.pool ≥ 32" in small and "Traceback" not in small
    assert (run / "config.toml").read_text() == config  # a refused --set leaves the folder's config as it was
    assert json.loads((run / "audit" / "done.json").read_text())["status"] == "completed"


def test_audit_needs_a_tuned_prompt(tmp_path):
    invoke("distill", "--preset", "smoke", "--set", "distill.steps=5", "--out", tmp_path / "run")
    out = invoke("audit", tmp_path / "run", code=2).output
    assert "needs the tune stage finished" in out and "Traceback" not in out
    assert not (tmp_path / "run" / "audit").exists()
