"""The method works: on the `smoke-learn` preset a prompt can learn the task, so the ordering POST
promises — full PT > zero-shot, POST > direct — is checked on a real pipeline run
(distill → tune → full PT → transfer → eval, engine.pipeline.run), with its diagnostics.

Why the task is learnable: `tiny:gpt2`'s weights are drawn wide (engine.tiny), so its outputs
depend on the input in a chaotic way a soft prompt can steer; with enough prompt-tuning steps
(400 at lr 0.1, not smoke's 60 at 0.03) the prompt finds the sentiment words, and the 2-block
student distilled from it follows it well enough that a transfer on 400 unlabelled public
sentences carries the small prompt's effect over. Without a prompt the teacher is at chance, and
the small prompt used as is on the teacher (direct) stays near it (49–62 % below).

Observed (test accuracy on 128 examples; this 2-core AMD EPYC, float32, shared with other jobs;
seeds are `runtime.seed`, which also draws the teacher's weights and the data):
| threads | seed | full_zs | full_pt | cpt | direct | post | full_pt − zs | post − direct |
|---|---|---|---|---|---|---|---|---|
| 1 | 0 | 50.8 | 87.5 | 97.7 | 50.8 | 91.4 | 0.37 | 0.41 |
| 1 | 1 | 53.9 | 93.0 | 89.8 | 49.2 | 86.7 | 0.39 | 0.38 |
| 1 | 2 | 57.0 | 96.9 | 92.2 | 50.0 | 85.9 | 0.40 | 0.36 |
| 1 | 3 | 51.6 | 88.3 | 100.0 | 62.5 | 89.1 | 0.37 | 0.27 |
| 1 | 4 | 46.1 | 75.8 | 89.8 | 55.5 | 90.6 | 0.30 | 0.35 |
| 2 | 0 | 50.8 | 87.5 | 97.7 | 50.8 | 91.4 | 0.37 | 0.41 |

(Seed 0 at 1 thread: its transfer run again with the final settings on the same tuned prompt. The
2-thread run reused the student distilled at 1 thread; tune, full PT and transfer ran at 2 threads and
gave the same accuracies. Seed 1 at 2 threads was not finished: 2 threads on the shared box took 21
minutes a run. This test's own run (fresh cache, seed 0) passed in 6 minutes under that load.)
Smallest: full PT − zero-shot 0.30, POST − direct 0.27. With the transfer at 200 steps (lr 0.1)
instead of 400 (0.05) POST − direct fell to 0.16 on seed 1: the transfer's steps are what the margin
needs most. Wall time under that load (4+ jobs on 2 cores): 110–270 s a run. At a lighter load the
stages took tune 400 steps 14.7 s, full PT 200 steps 13.8 s, transfer 200 steps 9.6 s (so ≈ 19 s at
400), distill 4 s: about a minute with imports, the cost of a task a prompt can really learn.

The asserted margins are below the smallest observed by a wide gap: a different CPU (Intel AMX,
AVX-512) changes float sums in the last digits, and through hundreds of training steps on a
chaotic model that acts like another draw of the same noise — the spread over seeds and thread
counts above is that noise, measured. Bit-equality is never asserted.
"""
from __future__ import annotations

import json

import pytest

FULL_PT_OVER_ZERO_SHOT = 0.15   # smallest observed 0.30: 2.5 standard errors of the difference (≈ 0.06) below it
POST_OVER_DIRECT = 0.12         # smallest observed 0.27


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """One seeded smoke-learn run for this module (its own cache and ledger: module-scoped fixtures
    run before conftest's per-test isolation)."""
    from engine import pipeline
    from engine.presets import load_config
    root = tmp_path_factory.mktemp("smoke-learn")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POST_CACHE", str(root / "cache"))
        mp.setenv("POST_LEDGER", str(root / "ledger"))
        config = load_config("smoke-learn", overrides=["runtime.seed=0"])
        results = pipeline.run(config, out=root / "run")
    return root / "run", results


def test_full_pt_beats_zero_shot_and_post_beats_direct(learned):
    _, results = learned
    acc = results["accuracy"]
    assert acc["full_pt"] - acc["full_zs"] >= FULL_PT_OVER_ZERO_SHOT, acc
    assert acc["post"] - acc["direct"] >= POST_OVER_DIRECT, acc
    assert acc["post"] > acc["full_zs"], acc  # the transfer adds to the large model, not only to direct


def test_diagnostics_pass_on_the_learnable_task(learned):
    from engine.events import Diagnostics, read_events
    run, _ = learned
    record = json.loads((run / "diagnostics.json").read_text())
    assert [c["status"] for c in record["checks"]] == ["ok", "ok", "ok"], record["checks"]
    assert record["values"]["public"]["examples"] == 400
    shown = [e for e in read_events(run / "events.jsonl") if isinstance(e, Diagnostics)]
    assert len(shown) == 1 and shown[0].values == record["values"]


def _measure(run, student=None, prompt=None):
    """Diagnostics of the run's public set with another student or small prompt."""
    from engine import diagnostics, loading
    from engine.config import read_toml, validate
    from engine.context import RunContext
    from engine.prompt import SoftPrompt
    from engine.transfer import fixed_targets
    ctx = RunContext(config=validate(read_toml(run / "config.toml")), run_dir=run)
    large, small, tokenizer = loading.both(ctx)
    prompt = prompt if prompt is not None else SoftPrompt.load(loading.prompt_path(ctx, "tune"))
    targets = fixed_targets(ctx, large, student if student is not None else small, tokenizer, prompt,
                            loading.public(ctx, tokenizer))
    values = diagnostics.measure(targets["large_plain"], targets["small_plain"], targets["small_prompted"],
                                 loading.verbalizer(ctx, tokenizer))
    return {c["name"]: c["status"] for c in diagnostics.checks(values)}


def test_diagnostics_warn_for_an_empty_prompt_and_an_untrained_student(learned, monkeypatch):
    from engine.prompt import SoftPrompt
    from engine.tiny import build_model, build_tokenizer
    run, _ = learned
    monkeypatch.setenv("POST_CACHE", str(run.parent / "cache"))  # the run's cached student
    assert _measure(run, prompt=SoftPrompt(0, 64))["prompt"] == "warning"  # a prompt that changes nothing
    untrained = build_model("gpt2", len(build_tokenizer()), layers=2, seed=123, init_std=0.2).eval()
    assert _measure(run, student=untrained)["fidelity"] == "warning"  # random weights: follows nothing
