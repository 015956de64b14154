"""Differential privacy: exact per-example gradients, clipping, noise, accounting, certificate, CLI."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from engine.config import PrivacyConfig
from engine.errors import PostError
from engine.events import PrivacySpent
from engine.privacy import DPSession, clip_per_example, epsilon, load_history, plan_noise
from post_tui.cli import app

torch.set_num_threads(1)
runner = CliRunner()


class FakeCtx:
    def __init__(self, seed: int = 0):
        self.config = SimpleNamespace(runtime=SimpleNamespace(seed=seed))
        self.events, self.logs, self.saved_paths = [], [], []
        self.run_dir = None

    def emit(self, event):
        self.events.append(event)

    def log(self, message, level="info"):
        self.logs.append((message, level))

    def saved(self, stage, path, what):
        self.saved_paths.append(path)

    def spent(self) -> list[PrivacySpent]:
        return [e for e in self.events if isinstance(e, PrivacySpent)]


def session(cfg: PrivacyConfig, n=1000, batch=50, steps=100, shape=(4, 8), history=None, seed=0, ctx=None):
    ctx = ctx or FakeCtx()
    return ctx, DPSession.create(ctx, "tune", cfg, n_examples=n, batch_size=batch, steps=steps, shape=shape,
                                 history=history, reproducible=True, seed=seed)


# ---------------------------------------------------------------- per-example gradients

@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_batched_per_example_gradients_equal_a_loop(family):
    from engine.losses import cloze_loss
    from engine.prompt import SoftPrompt, bos_id, prompted_logits
    from engine.tiny import tiny
    from engine.verbalizer import Verbalizer
    model, tok = tiny(f"tiny:{family}")
    model = model.double()
    verbalizer = Verbalizer.build(tok, [["terrible", "bad", "awful"], ["great", "good", "amazing"]])
    prompt = SoftPrompt.from_text(model, tok, "Predict the sentiment of this text.", 5)
    prompt.weight.data = prompt.weight.data.double()
    texts = ["the movie was great and we talked about it for a long time It was", "bad It was",
             "this film felt dull It was", "an amazing cast It was"]
    labels = torch.tensor([1, 0, 0, 1])
    bos = bos_id(tok)

    def losses(copy, ids, mask, y):
        return cloze_loss(verbalizer.class_scores(prompted_logits(model, ids, mask, copy, bos)), y)

    for side in ("right", "left"):
        enc = tok(texts, padding=True, return_tensors="pt", padding_side=side, add_special_tokens=False)
        assert (enc.attention_mask == 0).any()  # really padded, to different lengths
        copy = prompt.per_example(len(texts))
        losses(copy, enc.input_ids, enc.attention_mask, labels).sum().backward()
        for i, text in enumerate(texts):
            one = tok([text], return_tensors="pt", add_special_tokens=False)
            single = prompt.per_example(1)
            losses(single, one.input_ids, one.attention_mask, labels[i:i + 1]).sum().backward()
            assert copy.grad.dtype == torch.float64
            assert (copy.grad[i] - single.grad[0]).abs().max().item() <= 1e-6
            assert single.grad.abs().max() > 0


def test_every_clipped_gradient_is_within_c():
    g = torch.randn(64, 5, 7, generator=torch.Generator().manual_seed(0)) * torch.logspace(-3, 2, 64).view(-1, 1, 1)
    clipped = clip_per_example(g, 0.5)
    assert clipped.dtype == torch.float32
    norms = clipped.double().flatten(1).norm(dim=1)  # measured exactly: ≤ C, not just up to an ulp
    assert (norms <= 0.5).all()
    small = g.flatten(1).norm(dim=1) < 0.4
    assert small.any() and torch.allclose(clipped[small], g[small], rtol=1e-5)  # small ones untouched
    assert torch.allclose(norms[~small & (g.flatten(1).norm(dim=1) > 0.6)], torch.tensor(0.5, dtype=torch.float64), atol=1e-5)


# ---------------------------------------------------------------- the mechanism

def test_noise_has_the_planned_standard_deviation():
    cfg = PrivacyConfig(noise_multiplier=1.3, clip=0.7)
    _, dp = session(cfg, n=1000, batch=50, shape=(100, 64))
    q_n = dp.sample_rate * dp.n_examples
    assert q_n == pytest.approx(50)
    noise = torch.cat([dp.aggregate(torch.zeros(0, 100, 64)) for _ in range(4)]) * q_n  # B = 0: noise only
    std, mean = noise.std().item(), noise.mean().item()
    n = noise.numel()
    assert abs(std - 1.3 * 0.7) < 4 * 0.91 / math.sqrt(2 * n)  # 4 standard errors of the sample std
    assert abs(mean) < 4 * 0.91 / math.sqrt(n)


def test_update_is_clipped_sum_plus_noise_over_expected_batch():
    cfg = PrivacyConfig(noise_multiplier=0.8, clip=1.0)
    g = torch.randn(7, 4, 8, generator=torch.Generator().manual_seed(1)) * 3
    _, a = session(cfg, seed=5)
    _, b = session(cfg, seed=5)  # same seed: same noise
    diff = a.aggregate(g) - b.aggregate(torch.zeros(0, 4, 8))
    assert torch.allclose(diff, clip_per_example(g, 1.0).sum(0) / 50, atol=1e-6)


def test_poisson_batches_have_rate_q_and_may_be_empty():
    _, dp = session(PrivacyConfig(noise_multiplier=1.0, sample_rate=0.002), n=500)
    it = dp.batches(0)
    sizes = [len(next(it)) for _ in range(2000)]
    assert sum(sizes) / len(sizes) == pytest.approx(1.0, rel=0.1)
    assert 0 in sizes
    _, dp = session(PrivacyConfig(noise_multiplier=1.0), n=1000, batch=50)
    batch = next(dp.batches(0))
    assert len(set(batch)) == len(batch) and all(0 <= i < 1000 for i in batch)


# ---------------------------------------------------------------- accounting

def take(dp, step):
    """What the training loop does around one step: count it (journal first), then check the budget."""
    dp.before_step(step)
    return dp.after_step(step)


def test_opacus_reference_value():
    assert epsilon([(1.5, 0.04, 2250)], 1e-5, "rdp") == pytest.approx(7.33, abs=0.01)


def test_plan_then_run_reaches_but_does_not_exceed_the_target(tmp_path):
    ctx, dp = session(PrivacyConfig(epsilon=3.0), n=500, batch=25, steps=120)
    assert dp.noise_multiplier == plan_noise(3.0, 1 / 500, 0.05, 120, "rdp")
    for step in range(1, dp.steps + 1):
        assert take(dp, step) is None
    spent = [e.epsilon for e in ctx.spent()]
    assert len(spent) == 120 and spent == sorted(spent)
    assert 3.0 - 0.01 <= spent[-1] <= 3.0
    cert = dp.save_certificate(tmp_path)
    assert cert["epsilon"] == spent[-1] and cert["steps"] == 120 and cert["history"] == [[dp.noise_multiplier, 0.05, 120]]


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_certificate_epsilon_is_opacus_on_the_stored_history(tmp_path, accountant):
    from opacus.accountants import create_accountant
    _, dp = session(PrivacyConfig(noise_multiplier=1.1, accountant=accountant), n=400, batch=20, steps=30)
    for step in range(1, 31):
        take(dp, step)
    cert = dp.save_certificate(tmp_path)
    stored = json.loads((tmp_path / "privacy.json").read_text())
    assert stored == json.loads(json.dumps(cert))
    assert {"accountant", "delta", "epsilon", "target_epsilon", "clip", "n_examples", "sample_rate",
            "noise_multiplier", "sampling", "steps", "history", "versions"} <= stored.keys()
    assert stored["sampling"] == "poisson" and set(stored["versions"]) == {"opacus", "torch"}
    acc = create_accountant(accountant)
    acc.history = [tuple(h) for h in stored["history"]]
    assert stored["epsilon"] == acc.get_epsilon(delta=stored["delta"])


def test_budget_stop_on_a_resumed_history_and_resume_continuity(tmp_path):
    cfg = PrivacyConfig(epsilon=4.0)
    ctx, dp = session(cfg, n=500, batch=25, steps=100)
    for step in range(1, 41):
        take(dp, step)
    dp.save_certificate(tmp_path)
    history = load_history(tmp_path / "privacy.json", cfg, 500)
    ctx2, resumed = session(cfg, n=500, batch=25, steps=100, history=history)
    assert resumed.steps == 60 and resumed.noise_multiplier == dp.noise_multiplier
    for step in range(1, 61):
        assert take(resumed, step) is None
    _, whole = session(cfg, n=500, batch=25, steps=100)
    for step in range(1, 101):
        take(whole, step)
    assert resumed.certificate()["epsilon"] == whole.certificate()["epsilon"] <= 4.0
    # an earlier history with less noise than planned (σ = 0.7): the budget runs out before the plan ends
    ctx3, tight = session(cfg, n=500, batch=25, steps=100, history=[[0.7, 0.05, 10]])
    reason, steps = None, 0
    while reason is None and steps < tight.steps:
        steps += 1
        reason = take(tight, steps)
    assert reason and "one more step would exceed" in reason and steps < tight.steps
    assert tight.epsilon_spent <= 4.0
    assert epsilon([*tight.history[:-1], (tight.history[-1][0], 0.05, tight.history[-1][2] + 1)], tight.delta, "rdp") > 4.0
    assert any("stopped early" in m for m, _ in ctx3.logs)
    with pytest.raises(PostError, match="too small for even one more step"):
        session(cfg, n=500, batch=25, steps=100, history=[[0.3, 0.05, 50]])


@pytest.mark.parametrize("cfg, n, needle", [
    (dict(epsilon=8, delta=0.01), 200, "must be at most 1/N"),
    (dict(epsilon=8, delta=0.0051), 200, "must be at most 1/N"),
    (dict(epsilon=1e-3), 200, "too small for even one step"),
])
def test_bad_session_input(cfg, n, needle):
    with pytest.raises(PostError, match=needle):
        session(PrivacyConfig(**cfg), n=n, batch=10)


def test_the_default_delta_written_out_is_accepted():
    """The default δ is 1/N; the same value written in the config must not be refused (it was: "< 1/N")."""
    from engine.privacy.session import resolve_delta
    assert resolve_delta(PrivacyConfig(epsilon=8), 160) == resolve_delta(PrivacyConfig(epsilon=8, delta=0.00625), 160) == 1 / 160


# ---------------------------------------------------------------- CLI

def test_cli_plan_prints_sigma():
    result = runner.invoke(app, ["privacy", "plan", "--epsilon", "8", "--delta", "1e-5", "--sample-rate", "0.01",
                                 "--steps", "1000", "--accountant", "rdp"])
    assert result.exit_code == 0, result.output
    sigma = float(result.stdout.split("noise_multiplier = ")[1].split()[0])
    eps = float(result.stdout.split("epsilon = ")[1].split()[0])
    assert sigma == pytest.approx(0.616, abs=1e-3) and 7.99 <= eps <= 8.0
    result = runner.invoke(app, ["privacy", "plan", "--sigma", "1.5", "--delta", "1e-5", "--sample-rate", "0.04",
                                 "--epochs", "90"])
    assert result.exit_code == 0 and "epsilon = 7.329" in result.stdout and "steps = 2250" in result.stdout


PLAN = ["privacy", "plan", "--delta", "1e-5", "--sample-rate", "0.01", "--steps", "1000"]


@pytest.mark.parametrize("args, needle", [
    ([*PLAN, "--epsilon", "0"], "epsilon must be"),
    ([*PLAN, "--epsilon", "-2"], "epsilon must be"),
    ([*PLAN, "--epsilon", "8", "--sigma", "1"], "exactly one"),
    (PLAN, "exactly one"),
    ([*PLAN, "--epsilon", "0.001"], "too small for even one step"),
    (["privacy", "plan", "--epsilon", "8", "--delta", "1", "--sample-rate", "0.01", "--steps", "10"], "delta"),
    ([*PLAN, "--epsilon", "8", "--accountant", "gdp"], "rdp or prv"),
    (["privacy", "verify", "/no/such/run"], "does not exist"),
    (["run", "--preset", "smoke", "--set", "privacy.epsilon=-1"], "privacy.epsilon"),
    (["run", "--preset", "smoke", "--set", "privacy.epsilon=8", "--set", "privacy.noise_multiplier=1"], "not both"),
    (["run", "--preset", "smoke", "--set", "privacy.epsilon=8", "--set", "privacy.clip=0"], "privacy.clip"),
    (["run", "--preset", "smoke", "--set", "privacy.epsilon=8", "--set", "privacy.delta=0.01"], "1/N"),
    (["run", "--preset", "smoke", "--set", "privacy.epsilon=0.001"], "too small"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, needle):
    out = ["--out", str(tmp_path / "run")] if args[0] == "run" else []
    result = runner.invoke(app, [*args, *out])
    assert result.exit_code == 2, result.output
    assert needle in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_dp_smoke_run_end_to_end_and_verify(tmp_path):
    run_dir = tmp_path / "dp"
    result = runner.invoke(app, ["run", "--preset", "smoke", "--set", "privacy.epsilon=8", "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    results = json.loads((run_dir / "results.json").read_text())
    assert results["privacy"]["epsilon"] <= 8 and results["privacy"]["target_epsilon"] == 8
    for stage in ("tune", "full_pt"):
        assert (run_dir / stage / "privacy.json").is_file()
    result = runner.invoke(app, ["privacy", "verify", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("OK ") == 2
    # a tampered certificate is caught
    path = run_dir / "tune" / "privacy.json"
    cert = json.loads(path.read_text())
    cert["epsilon"] = cert["epsilon"] - 0.5
    path.write_text(json.dumps(cert))
    result = runner.invoke(app, ["privacy", "verify", str(run_dir)])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "accountant gives" in result.stderr


def test_verify_needs_a_certificate(tmp_path):
    result = runner.invoke(app, ["privacy", "verify", str(tmp_path)])
    assert result.exit_code == 2 and "no privacy certificate" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_budget_check_counts_a_run_in_progress_at_its_plan(tmp_path):
    """Two runs on the same data that each fit the budget alone, not together: the second is refused
    while the first runs; the ε reported is always the steps actually taken."""
    import subprocess
    import sys
    from engine.errors import PostError
    from engine.privacy import accounting, ledger
    step = (1.0, 0.01)
    running = ledger.Release.start("k", private=True, stage="tune", run_dir=tmp_path, delta=1e-5,
                                   planned=[[*step, 1000]])
    running.update([[*step, 10]])  # 10 of its 1000 steps taken so far
    assert ledger.composed("k")["steps"] == 10 and ledger.composed("k", reserved=True)["steps"] == 1000
    alone = accounting.epsilon([(*step, 1010)], 1e-5, "rdp")
    both = accounting.epsilon([(*step, 2000)], 1e-5, "rdp")
    budget = (alone + both) / 2
    with pytest.raises(PostError, match="1 of them still running"):
        ledger.check_budget("k", budget, [(*step, 1000)], 1e-5)
    running.update([[*step, 1000]], finished=True)  # finished: its steps as taken (here: all of them)
    with pytest.raises(PostError, match="would be exceeded"):
        ledger.check_budget("k", budget, [(*step, 1000)], 1e-5)
    running.update([[*step, 10]], finished=True)  # finished early (a budget stop): 10 steps, nothing reserved
    assert ledger.check_budget("k", budget, [(*step, 1000)], 1e-5)["steps"] == 1010
    # a run whose process is gone (killed) counts at the steps its journal recorded, not its plan
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    running.record.update(finished=False, pid=int(gone.stdout))
    running.save()
    assert not ledger.in_progress(running.record) and ledger.composed("k", reserved=True)["steps"] == 10


def test_a_dp_tune_that_diverges_leaves_its_steps_spent_and_nothing_reserved(tmp_path):
    """A diverged DP tune raises inside the engine's process (the TUI runs the engine in a thread): its steps
    stay spent, and its plan must not stay reserved as if it still ran, or a later run is refused for it."""
    from engine import pipeline
    from engine.errors import PostError
    from engine.presets import load_config
    from engine.privacy import ledger
    cfg = load_config("smoke", overrides=["privacy.epsilon=2.0", "tune.lr=1e30", "eval.full_pt=false",
                                          "runtime.seed=977"])  # a data key of its own
    with pytest.raises(PostError, match="tune: the loss became"):
        pipeline.run(cfg, out=tmp_path / "r")
    key = ledger.task_key(cfg.task, cfg.runtime.seed)
    spent, reserved = ledger.composed(key), ledger.composed(key, reserved=True)
    assert 0 < spent["steps"] == reserved["steps"]


def test_the_same_rows_read_through_other_fields_are_linked(tmp_path):
    """Privacy is lost per example: the same rows read with a text field more, another label column, or labels
    written otherwise are other rows to a row fingerprint, but the same examples — their ε must compose."""
    import csv
    from engine.data.smoke import make_rows
    from engine.presets import load_config
    from engine.privacy import ledger
    path = tmp_path / "mine.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label", "source", "flipped", "decimal"])
        for i, row in enumerate(make_rows(120, seed=3)):
            writer.writerow([row["text"], row["label"], f"site{i % 3}", 1 - row["label"], f"{row['label']}.0"])

    def key(*sets):
        return ledger.register_task(load_config("smoke", None, [f'task.source="{path}"', *sets]).task, 0)
    plain = key()
    others = [key('task.text_fields=["text", "source"]', 'task.template="{text} ({source}) It was"'),
              key('task.label_field="flipped"'), key('task.label_field="decimal"', 'task.label_names=["0.0", "1.0"]')]
    assert len({plain, *others}) == 4  # four data keys: a row fingerprint alone would link none of them
    assert sorted(ledger.linked(plain)[1:]) == sorted(others)
    unrelated = tmp_path / "theirs.csv"  # other texts, but a source column with the same few values
    unrelated.write_text("text,label,source\n" + "".join(f"another text {i},{i % 2},site{i % 3}\n" for i in range(40)))
    theirs = load_config("smoke", None, [f'task.source="{unrelated}"', 'task.text_fields=["text", "source"]',
                                         'task.template="{text} ({source}) It was"']).task
    assert ledger.linked(ledger.register_task(theirs, 0)) == [ledger.register_task(theirs, 0)]


@pytest.mark.parametrize("field,value", [("history", "abc"), ("history", [[1.0, 0.01]]), ("history", [[1.0, 0.01, -5]]),
                                         ("delta", "x"), ("started", 5), ("private", "no"), ("epsilon", "abc")])
def test_a_ledger_entry_with_a_field_of_the_wrong_kind_is_refused_in_one_line(tmp_path, field, value):
    """An edited or damaged entry stops `post privacy ledger` (and every DP run on the data) with its path, not a
    traceback from the composition, nor a step count below zero that under-reports ε."""
    from engine.privacy import ledger
    entry = ledger.Release.start("k", private=True, stage="tune", run_dir=tmp_path, delta=1e-5)
    entry.update([[1.0, 0.01, 10]], finished=True)
    entry.record[field] = value
    entry.save()
    result = runner.invoke(app, ["privacy", "ledger"])
    assert result.exit_code == 2 and "damaged privacy ledger entry" in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    with pytest.raises(PostError, match="damaged privacy ledger entry"):
        ledger.check_budget("k", 8.0, [(1.0, 0.01, 10)], 1e-5)
