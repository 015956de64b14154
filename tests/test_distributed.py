"""Several processes (engine.distributed): 2 ranks on the CPU over gloo, spawned from pytest.

Each spawned rank joins through a file store (no ports) with a one-minute collective timeout, and
the test itself gives up after a deadline, so a desynchronised rank fails the test instead of
hanging it. World size 1 is the same code in this process without a process group.
"""
from __future__ import annotations

import datetime
import itertools
import json
import os
import time
from pathlib import Path

import pytest
import torch

WORLD = 2
DEADLINE_S = 240  # whole spawn: 2 fresh interpreters importing torch + transformers on a busy 2-core box


# ---------------------------------------------------------------- harness

def _rank_main(rank: int, world: int, init_file: str, out: str, scenario: str) -> None:
    import torch.distributed as dist
    torch.set_num_threads(1)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["POST_LEDGER"] = str(Path(out) / f"ledger{rank}")
    os.environ["POST_CACHE"] = str(Path(out) / f"cache{rank}")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        result = SCENARIOS[scenario](Path(out), rank, world)
        torch.save(result, Path(out) / f"{scenario}.rank{rank}.pt")
    finally:
        dist.destroy_process_group()
    from engine.distributed import leave
    leave(0)  # as `post run` ends a rank: a plain exit aborts about one time in three (see leave)


def spawn(tmp_path: Path, scenario: str, world: int = WORLD, must_succeed: bool = True) -> list:
    """Run `scenario` on `world` ranks (torch.multiprocessing, spawn); each rank's result (None for
    a rank that exited without one). Fails the test if a rank is still running at the deadline."""
    import torch.multiprocessing as mp
    init_file = tmp_path / f"store-{scenario}"
    spawn_ctx = mp.get_context("spawn")
    procs = [spawn_ctx.Process(target=_rank_main, args=(r, world, str(init_file), str(tmp_path), scenario))
             for r in range(world)]
    for proc in procs:
        proc.start()
    deadline = time.monotonic() + DEADLINE_S
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
    hung = [r for r, proc in enumerate(procs) if proc.is_alive()]
    for proc in procs:
        if proc.is_alive():
            proc.kill()
    if hung:
        pytest.fail(f"{scenario}: rank(s) {hung} did not finish within {DEADLINE_S} s (a hang)")
    if must_succeed:
        assert [proc.exitcode for proc in procs] == [0] * world, f"{scenario}: a rank failed"
    files = [tmp_path / f"{scenario}.rank{r}.pt" for r in range(world)]
    return [torch.load(f, weights_only=False) if f.is_file() else None for f in files]


def single(tmp_path: Path, scenario: str):
    """The same scenario as one process, no process group (world size 1)."""
    return SCENARIOS[scenario](tmp_path, 0, 1)


def _ctx(out: Path, rank: int, overrides=()):
    from engine.context import RunContext
    from engine.presets import load_config
    return RunContext(load_config("smoke", overrides=list(overrides)), out / f"run-w-rank{rank}-{time.monotonic_ns()}")


# ---------------------------------------------------------------- scenarios (run on every rank)

N, BATCH, SHAPE = 64, 8, (4, 8)  # q = 1/8: with 2 ranks a rank's share is often empty


def _targets() -> torch.Tensor:
    """Per-example gradient of example i: a fixed random (m, d) tensor of norm ≫ C."""
    return torch.randn(N, *SHAPE, generator=torch.Generator().manual_seed(7)) * 5


def _dp_loop(out: Path, rank: int, world: int, *, sigma: float, clip: float, steps: int, seed, batch=BATCH):
    """The DP loop (engine.training.train_prompt) on a linear loss: loss_i = <p, t_i>, so g_i = t_i.
    Returns the prompt after each step, the local batch sizes and the global batches seen."""
    from engine import distributed
    from engine.config import PrivacyConfig
    from engine.privacy import DPSession
    from engine.prompt import SoftPrompt
    from engine.training import make_optimizer, train_prompt
    ctx = _ctx(out, rank)
    targets = _targets()
    dp = DPSession.create(ctx, "tune", PrivacyConfig(noise_multiplier=sigma, clip=clip), n_examples=N,
                          batch_size=batch, steps=steps, shape=SHAPE, reproducible=seed is not None, seed=seed)
    prompt = SoftPrompt(*SHAPE)
    weights, local_sizes, global_batches = [], [], []

    def loss_fn(copy, indices):
        return (copy * targets[indices]).flatten(1).sum(1)

    def logged(batches):
        for batch in batches:
            global_batches.append(list(batch))
            yield batch

    batches, aggregate = distributed.spread(logged(dp.batches(0)), dp.aggregate, dp)

    def sizes(batches):
        for batch in batches:
            local_sizes.append(len(batch))
            yield batch

    def after(step):
        weights.append(prompt.weight.detach().clone())
        return dp.after_step(step)

    train_prompt(ctx, "tune", prompt, loss_fn, sizes(batches), steps, make_optimizer("sgd", [prompt.weight], 1.0),
                 aggregate, after_step=after, before_step=dp.before_step)
    return {"weights": torch.stack(weights), "final": prompt.weight.detach().clone(),
            "local_sizes": local_sizes, "global_batches": global_batches,
            "epsilon": dp.certificate()["epsilon"], "sigma": dp.noise_multiplier, "q": dp.sample_rate}


def scenario_dp_noise(out, rank, world):
    """Secure default (noise seed from OS entropy, broadcast from rank 0): large σ, tiny C."""
    return _dp_loop(out, rank, world, sigma=50.0, clip=1e-3, steps=150, seed=None)


def scenario_dp_same_seed(out, rank, world):
    """Reproducible seeds, σ and C where clipping and noise both matter."""
    return _dp_loop(out, rank, world, sigma=0.7, clip=2.0, steps=40, seed=3, batch=2)  # q·N = 2: shares often empty


def scenario_tune(out, rank, world):
    """The tune stage's own code (engine.tune.tune_prompt) on the tiny model, without DP."""
    from engine.tiny import tiny
    from engine.tune import tune_prompt
    ctx = _ctx(out, rank, ["tune.steps=20", "tune.eval_every=0", "tune.batch_size=6"])
    model, tok = tiny("tiny:gpt2")
    prompt, result, _ = tune_prompt(ctx, "tune", model, tok, "tiny:gpt2")
    return {"prompt": prompt.weight.detach().clone(), "losses": result.losses, "steps": result.steps,
            "tokens": result.tokens}


def scenario_tune_dp(out, rank, world):
    """The tune stage with DP at a target ε (secure seeds): the certificate's ε and plan."""
    from engine.tiny import tiny
    from engine.tune import tune_prompt
    ctx = _ctx(out, rank, ["tune.steps=12", "tune.eval_every=0", "privacy.epsilon=4"])
    model, tok = tiny("tiny:gpt2")
    prompt, result, dp = tune_prompt(ctx, "tune", model, tok, "tiny:gpt2")
    cert = dp.certificate()
    return {k: cert[k] for k in ("epsilon", "noise_multiplier", "sample_rate", "steps", "n_examples")}


def scenario_rank_dies(out, rank, world):
    """Rank 1 dies at step 3 (kill -9 alike); rank 0 must stop with a one-line error, not hang."""
    from engine.errors import PostError

    def loss_fn(copy, indices):
        if rank == 1 and len(steps) == 3:
            os._exit(3)
        return (copy ** 2).flatten(1).sum(1)

    from engine import distributed
    from engine.prompt import SoftPrompt
    from engine.training import make_optimizer, mean_gradient, train_prompt
    ctx, prompt, steps = _ctx(out, rank), SoftPrompt(*SHAPE), []
    batches, aggregate = distributed.spread(itertools.repeat(list(range(4))), mean_gradient)
    start = time.monotonic()
    try:
        train_prompt(ctx, "tune", prompt, loss_fn, batches, 20, make_optimizer("sgd", [prompt.weight], 0.1),
                     aggregate, after_step=lambda step: steps.append(step))
    except PostError as err:
        return {"error": str(err), "seconds": time.monotonic() - start, "steps": len(steps)}
    return {"error": None, "steps": len(steps)}


def scenario_cancel(out, rank, world):
    """Rank 1 alone is asked to stop (its Ctrl-C / SIGTERM) during step 3: every rank stops after step 3."""
    from engine import distributed
    from engine.prompt import SoftPrompt
    from engine.training import make_optimizer, mean_gradient, train_prompt
    ctx, prompt = _ctx(out, rank), SoftPrompt(*SHAPE)
    steps = []

    def loss_fn(copy, indices):
        if rank == 1 and len(steps) == 2:
            ctx.cancel_event.set()
        return (copy ** 2).flatten(1).sum(1)

    batches, aggregate = distributed.spread(itertools.repeat(list(range(4))), mean_gradient, cancel=ctx.cancel_event)
    result = train_prompt(ctx, "tune", prompt, loss_fn, batches, 20, make_optimizer("sgd", [prompt.weight], 0.1),
                          aggregate, after_step=lambda step: steps.append(step))
    return {"steps": result.steps, "cancelled": result.cancelled, "ctx_cancelled": ctx.cancelled}


def scenario_accuracy(out, rank, world):
    """Accuracy on the smoke test split: each batch scored by one rank, the counts summed."""
    from engine import loading
    from engine.evaluate import prompt_logit_fn, score
    from engine.tiny import tiny
    ctx = _ctx(out, rank)
    model, tok = tiny("tiny:gpt2")
    test = loading.task(ctx, tok)["test"]
    batches, predicted = [], []
    acc, loss = score(prompt_logit_fn(model, tok, None, "float32"), test, loading.verbalizer(ctx, tok), 16,
                      tok.pad_token_id, ctx.device, on_batch=lambda: batches.append(1), predicted=predicted)
    return {"accuracy": acc, "loss": loss, "batches": len(batches), "examples": len(test), "predicted": predicted,
            "labels": list(test.labels)}


def _distill_once(out, rank, overrides):
    """The distill stage's own code (engine.distill.run_distill) on tiny:llama (no dropout: the ranks'
    random draws cannot differ); the global batch's loss per step, and the trained student's weights."""
    from engine.distill import run_distill
    from engine.events import Metric
    ctx = _ctx(out, rank, ['models.large="tiny:llama"', *overrides])
    losses = []
    ctx.bus.subscribe(lambda e: losses.append(e.value) if isinstance(e, Metric) and e.name == "loss" else None)
    run_distill(ctx)
    student = ctx.cache["small"][0]
    summary = json.loads((ctx.run_dir / "distill" / "summary.json").read_text())
    return {"losses": losses, "weights": torch.cat([p.detach().flatten() for p in student.parameters()]),
            "summary": summary}


def scenario_distill(out, rank, world):
    """Hidden loss with the teacher cache (40 × 8 rows > the corpus) and cue weights (a weighted mean: a
    rank's share of the loss mass is not its share of the rows), then the paper's KD loss (teacher beside)."""
    from engine.assets import cache_root
    hidden = _distill_once(out, rank, ['distill.loss="hidden"', "distill.steps=40", "distill.cue_weight=3.0",
                                       'distill.template="{text} It was"'])
    cache = sorted(str(p.relative_to(cache_root() / "teacher_hidden")) for p in (cache_root() / "teacher_hidden").rglob("*")
                   if p.is_file())
    manifest = next(((cache_root() / "teacher_hidden").rglob("manifest.json")), None)
    kd = _distill_once(out, rank, ['distill.loss="kd"', "distill.steps=12"])
    # soft-prefixed rows (engine.distill_prefix): each rank's prefixes are its own rows', in the cache and the steps;
    # the owner's tuned prompts (engine.prefix_tasks) are rank 0's on every rank
    prefixed = _distill_once(out, rank, ['distill.loss="hidden"', "distill.steps=30", "distill.prefix_share=0.5",
                                         'distill.prefix_source="tuned"', "distill.prefix_tasks=2",
                                         "distill.prefix_steps=4"])
    # the bridge (the states entering each kept block, cached beside the final ones), weighted by the cues
    bridged = _distill_once(out, rank, ['distill.loss="hidden"', "distill.steps=30", "distill.bridge_weight=1.0",
                                        "distill.cue_weight=3.0", 'distill.template="{text} It was"'])
    return {"hidden": hidden, "kd": kd, "prefixed": prefixed, "bridged": bridged, "cache": cache,
            "manifest": json.loads(manifest.read_text()) if manifest else None,
            "student_saved": (Path(hidden["summary"]["path"]) / "manifest.json").is_file()}


def scenario_targets(out, rank, world):
    """The transfer's fixed targets (engine.transfer.fixed_targets): each rank its share of the public
    batches, all-gathered; with public.size=40 and eval batches of 16 the ranks hold 2 and 1 batches."""
    from engine import loading
    from engine.models import make_student
    from engine.prompt import SoftPrompt
    from engine.tiny import tiny
    from engine.transfer import fixed_targets
    ctx = _ctx(out, rank, ["public.size=40", "eval.batch_size=16"])
    large, tok = tiny("tiny:gpt2")
    small = make_student(large, [0, -1])
    prompt = SoftPrompt.from_text(small, tok, "Predict the sentiment.", 4)
    return fixed_targets(ctx, large, small, tok, prompt, loading.public(ctx, tok))


SCENARIOS = {"accuracy": scenario_accuracy, "distill": scenario_distill, "targets": scenario_targets, "cancel": scenario_cancel, "dp_noise": scenario_dp_noise, "dp_same_seed": scenario_dp_same_seed,
             "tune": scenario_tune, "tune_dp": scenario_tune_dp, "rank_dies": scenario_rank_dies}


# ---------------------------------------------------------------- tests

def _update_variance(weights: torch.Tensor) -> float:
    updates = torch.diff(torch.cat([torch.zeros(1, *SHAPE), weights]), dim=0)  # SGD lr 1: update = −g
    return updates.double().var().item()


def test_dp_noise_is_added_once_over_two_ranks(tmp_path):
    """Large σ, tiny C: the update is almost only noise, of variance σ²C²/(qN)² at W = 1 and at W = 2
    (noise on every rank would give W times that). 150 steps × 32 entries: the sample variance has a
    relative standard error of √(2/4800) ≈ 2 %; the tolerance is 12 % (6 standard errors), and W× is 100 %."""
    expected = (50.0 * 1e-3 / (BATCH / N * N)) ** 2
    one = single(tmp_path, "dp_noise")
    ranks = spawn(tmp_path, "dp_noise")
    assert _update_variance(one["weights"]) == pytest.approx(expected, rel=0.12)
    assert _update_variance(ranks[0]["weights"]) == pytest.approx(expected, rel=0.12)
    # every rank ends with rank 0's prompt: broadcast bytes, so equal exactly (not a recomputation)
    assert torch.equal(ranks[0]["final"], ranks[1]["final"])
    torch.testing.assert_close(ranks[0]["final"], ranks[0]["weights"][-1], rtol=0, atol=0)  # rank 0 kept its own
    # the same global Poisson batch on every rank (the seed broadcast from rank 0), each rank keeps its share
    assert ranks[0]["global_batches"] == ranks[1]["global_batches"]
    for step, batch in enumerate(ranks[0]["global_batches"]):
        assert ranks[0]["local_sizes"][step] + ranks[1]["local_sizes"][step] == len(batch)
    # ε does not depend on the world size
    assert ranks[0]["epsilon"] == one["epsilon"] and ranks[0]["q"] == one["q"]


def test_dp_update_with_the_same_seed_matches_one_process(tmp_path):
    """Reproducible seeds: the same Poisson batches and the same noise (drawn once, on rank 0) as one
    process, so the DP-trained prompt matches W = 1 up to float summation order (clipped sums added
    per rank, then across ranks): atol 1e-5 on entries of size ~1 after 40 SGD steps.
    A rank with an empty share of the batch still takes part (q·N = 2 split over 2 ranks)."""
    one = single(tmp_path, "dp_same_seed")
    ranks = spawn(tmp_path, "dp_same_seed")
    assert ranks[0]["global_batches"] == one["global_batches"]
    torch.testing.assert_close(ranks[0]["weights"], one["weights"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ranks[1]["weights"], one["weights"], atol=1e-5, rtol=1e-5)
    sizes = list(zip(ranks[0]["local_sizes"], ranks[1]["local_sizes"]))
    assert any(a == 0 or b == 0 for a, b in sizes), "no step with an empty local batch: the test lost its point"
    assert ranks[0]["epsilon"] == one["epsilon"]


def test_tune_without_dp_matches_one_process(tmp_path):
    """The tune stage over 2 ranks: each rank's half of each batch, gradients averaged over the global
    batch in one all-reduce. Per-example losses do not depend on the other examples of the batch except
    through padding length, and the sum is split differently, so the prompts agree up to float32
    rounding amplified by 20 Adam steps (lr 0.03): atol 1e-4 on prompt entries of size ~1."""
    one = single(tmp_path, "tune")
    ranks = spawn(tmp_path, "tune")
    assert ranks[0]["steps"] == one["steps"] == 20
    torch.testing.assert_close(ranks[0]["prompt"], one["prompt"], atol=1e-4, rtol=1e-4)
    assert torch.equal(ranks[0]["prompt"], ranks[1]["prompt"])  # rank 1 holds rank 0's broadcast copy: same bytes
    assert ranks[0]["losses"] == pytest.approx(one["losses"], rel=1e-4, abs=1e-5)  # the global batch's loss
    assert ranks[0]["tokens"] == ranks[1]["tokens"] == one["tokens"]  # tokens of the whole step, not a share


def test_dp_tune_epsilon_does_not_depend_on_world_size(tmp_path):
    one = single(tmp_path, "tune_dp")
    ranks = spawn(tmp_path, "tune_dp")
    assert ranks[0] == one and ranks[1] == one


def test_a_rank_that_dies_stops_the_others_with_one_line(tmp_path):
    survivor, dead = spawn(tmp_path, "rank_dies", must_succeed=False)
    assert dead is None and survivor is not None
    assert survivor["steps"] == 3 and survivor["error"].startswith("rank 0: another process of this run stopped")
    assert "\n" not in survivor["error"] and survivor["seconds"] < 60  # the peer's exit is seen, not waited out


def test_a_stop_request_on_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    ranks = spawn(tmp_path, "cancel")
    assert ranks[0] == ranks[1] == {"steps": 3, "cancelled": True, "ctx_cancelled": True}


def test_eval_is_sharded_and_gathered_without_duplicates(tmp_path):
    """Every batch is scored by exactly one rank (the batch counts add up to W = 1's) and the counts are
    summed exactly. The batches are the same as with one process, so the accuracy should be equal; a
    prediction at a near-tie could still flip across processes, so one example of slack is allowed."""
    one = single(tmp_path, "accuracy")
    ranks = spawn(tmp_path, "accuracy")
    assert ranks[0]["batches"] + ranks[1]["batches"] == one["batches"] and ranks[1]["batches"] > 0
    assert ranks[0]["accuracy"] == ranks[1]["accuracy"]
    assert abs(ranks[0]["accuracy"] - one["accuracy"]) <= 1 / one["examples"] + 1e-12
    # each example's prediction, gathered in the split's order on every rank: the same list on both, the
    # accuracy's own count, and one process's predictions but for at most that one near-tie
    assert ranks[0]["predicted"] == ranks[1]["predicted"] and len(ranks[0]["predicted"]) == one["examples"]
    for found in (one, ranks[0]):
        hits = sum(p == y for p, y in zip(found["predicted"], found["labels"]))
        assert hits == round(found["accuracy"] * found["examples"]) and min(found["predicted"]) >= 0
    assert sum(a != b for a, b in zip(one["predicted"], ranks[0]["predicted"])) <= 1
    # the loss is one all-reduce: the same bits on every rank (alpha select compares it), and the sum of
    # the same per-example losses as one process in another order (float32 logits: ~1e-6 relative)
    assert ranks[0]["loss"] == ranks[1]["loss"]
    assert abs(ranks[0]["loss"] - one["loss"]) <= 1e-5 * one["loss"]


def test_distillation_over_two_ranks_reaches_the_loss_of_one(tmp_path):
    """Data-parallel distillation: the same global batches as one process, each rank training on the rows
    it owns, DDP averaging the gradients. The losses agree up to float summation order (each rank's
    partial sums, then DDP's average of two gradients instead of one sum; each rank caches its shard's
    teacher states in other batches of rows, so a bf16 state may round the other way), amplified by 40 AdamW steps: rtol 1e-3 on losses of order 1-10, atol 1e-3 on weights
    of size ~0.2 (a desynchronised batch or a wrong loss weight moves them by far more)."""
    one = single(tmp_path, "distill")
    ranks = spawn(tmp_path, "distill")
    for loss in ("hidden", "kd", "prefixed", "bridged"):
        assert len(ranks[0][loss]["losses"]) == len(one[loss]["losses"]) == one[loss]["summary"]["steps"]
        assert ranks[0][loss]["losses"] == pytest.approx(one[loss]["losses"], rel=1e-3, abs=1e-4), loss
        assert ranks[1][loss]["losses"] == ranks[0][loss]["losses"]  # the global batch's loss, on every rank
        torch.testing.assert_close(ranks[0][loss]["weights"], one[loss]["weights"], atol=1e-3, rtol=1e-3)
        # DDP, one run: every rank applies the same all-reduced gradient bytes, so the replicas stay bit-equal
        assert torch.equal(ranks[0][loss]["weights"], ranks[1][loss]["weights"])
        assert ranks[0][loss]["summary"]["processes"] == 2
    # the teacher-state cache: each rank its shard (every other row), rank 0 the manifest of both
    assert one["cache"] == [f"{ranks[0]['manifest']['key']}.safetensors"] and ranks[0]["manifest"]["world"] == 2
    assert [c.split("/")[-1] for c in ranks[1]["cache"]] == ["shard-1.safetensors"] and ranks[1]["manifest"] is None
    assert sorted(c.split("/")[-1] for c in ranks[0]["cache"]) == ["manifest.json", "shard-0.safetensors"]
    shards = ranks[0]["manifest"]["shards"]
    assert [s["rank"] for s in shards] == [0, 1] and sum(s["rows"] for s in shards) == ranks[0]["manifest"]["rows"]
    assert ranks[0]["student_saved"] and not ranks[1]["student_saved"]  # the student from rank 0 only


def test_transfer_targets_are_computed_sharded_and_gathered(tmp_path):
    """Each public batch is computed by one rank (the same batch as one process: the same operations) and
    the rows are all-gathered into public order: equal to one process up to 1e-6 (same inputs, same
    kernels; only the process differs), and the same bytes on both ranks."""
    one = single(tmp_path, "targets")
    ranks = spawn(tmp_path, "targets")
    assert one.keys() == ranks[0].keys() == {"small_prompted", "small_plain", "large_plain"}
    for key, value in one.items():
        assert value.shape[0] == 40
        torch.testing.assert_close(ranks[0][key], value, atol=1e-6, rtol=1e-6)
        assert torch.equal(ranks[0][key], ranks[1][key])


# ---------------------------------------------------------------- launch

def _cli(tmp_path: Path, out: str, world: int, extra=()) -> dict:
    import subprocess
    import sys
    root = Path(__file__).resolve().parents[1]
    launcher = [str(Path(sys.executable).with_name("torchrun")), "--standalone", f"--nproc_per_node={world}"] \
        if world > 1 else [sys.executable]
    sets = ["distill.steps=20", "tune.steps=20", "transfer.steps=20", "eval.full_pt=false", *extra]
    cmd = [*launcher, "-m", "post_tui.cli", "run", "--preset", "smoke", "--out", str(tmp_path / out)]
    for s in sets:
        cmd += ["--set", s]
    path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)  # keep the caller's too
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=DEADLINE_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp_path / out / "results.json").read_text())


def test_torchrun_two_processes_give_the_single_process_results(tmp_path):
    """`torchrun --nproc_per_node=2 -m post_tui.cli run`: rank 0 writes the one run folder, and its
    accuracies are those of one process. The prompts agree to ~1e-5 (float summation order), so an
    accuracy may differ by at most one test example whose margin is that small (1/128)."""
    one = _cli(tmp_path, "w1", 1)
    two = _cli(tmp_path, "w2", 2)
    assert one["accuracy"].keys() == two["accuracy"].keys()
    for method, acc in one["accuracy"].items():
        assert abs(two["accuracy"][method] - acc) <= 1 / 128 + 1e-9, method
    events = [json.loads(line) for line in (tmp_path / "w2" / "events.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "RunStarted" for e in events) == 1  # rank 1 wrote nothing here
    # every rank's memory: its peak in results.json, its figures at each stage's end in rank 0's events
    assert [r["rank"] for r in two["memory"]["ranks"]] == [0, 1] and [r["rank"] for r in one["memory"]["ranks"]] == [0]
    assert all(r["peak_rss_mib"] > 0 and r["device"] == "cpu" for r in two["memory"]["ranks"])
    ends = [e for e in events if e["event"] == "RanksSample" and e["final"]]
    assert [e["stage"] for e in ends] == ["distill", "tune", "transfer", "eval"]
    assert all([r["rank"] for r in e["ranks"]] == [0, 1] for e in ends)
    assert all(r["tokens_per_s"] for r in ends[1]["ranks"])  # each rank's own share of tune's steps
    releases = [json.loads(f.read_text()) for f in Path(os.environ["POST_LEDGER"]).rglob("*.json")]
    assert sorted(Path(r["run_dir"]).name for r in releases) == ["w1", "w2"]  # the ledger: once per run, from rank 0


def test_a_generated_public_set_over_two_processes(tmp_path):
    """Rank 0 samples the public set and hands it to rank 1 (a rank on another machine has no cache):
    the transfer's targets come from one set of texts, kept once in the run folder."""
    gen = ['public.source="generated"', 'public.prefix="A review that is {label}:"', "public.size=8"]
    two = _cli(tmp_path, "gen2", 2, gen)
    kept = json.loads((tmp_path / "gen2" / "transfer" / "public_generated.json").read_text())
    assert len(kept["texts"]) == 8 and two["accuracy"]["post"] is not None
    cached = list(Path(os.environ["POST_CACHE"]).glob("public/*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["texts"] == kept["texts"]


def test_a_balanced_public_pick_over_two_processes_is_one_pick(tmp_path):
    """Each rank scores half the pool and the classes are gathered: both ranks pick the same texts, and the
    pick is that of one process (the same classes: the student's scores differ by float order at most)."""
    pick = ['public.pick="balanced"', "public.pool=0", "public.size=16"]
    two = _cli(tmp_path, "pick2", 2, pick)
    one = _cli(tmp_path, "pick1", 1, pick)
    kept = {n: json.loads((tmp_path / n / "transfer" / "public_pick.json").read_text()) for n in ("pick1", "pick2")}
    assert kept["pick2"]["classes"] == kept["pick1"]["classes"] and kept["pick2"]["chosen"] == kept["pick1"]["chosen"]
    assert len(kept["pick2"]["chosen"]) == 16 and two["accuracy"]["post"] is not None and one["accuracy"]["post"] is not None


def test_world_size_must_match_what_the_launcher_asked(monkeypatch):
    from engine import distributed
    from engine.errors import PostError
    monkeypatch.setenv("WORLD_SIZE", "2")
    for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(PostError, match="torchrun"):
        distributed.init_from_env()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.init_from_env() is False and distributed.world_size() == 1


def test_under_a_launcher_only_post_run_is_accepted(monkeypatch):
    from engine.errors import PostError
    from post_tui.cli import _only_run_under_a_launcher
    monkeypatch.setenv("WORLD_SIZE", "2")
    _only_run_under_a_launcher(["run", "--preset", "smoke"])
    with pytest.raises(PostError, match="post bench runs with one process"):
        _only_run_under_a_launcher(["bench", "--preset", "smoke"])
    monkeypatch.setenv("WORLD_SIZE", "1")
    _only_run_under_a_launcher(["bench", "--preset", "smoke"])


def test_the_backend_follows_runtime_device_and_nccl_gets_one_gpu_per_process(monkeypatch):
    from engine import distributed
    from engine.errors import PostError
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert distributed.backend_for("cpu") == "gloo"  # CPU processes on a GPU machine: gloo, not nccl
    assert distributed.backend_for("auto") == distributed.backend_for("cuda") == "nccl"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(PostError, match="2 processes on this machine but 1 GPU"):
        distributed.backend_for("auto")
    with pytest.raises(PostError, match="takes the GPU of its local rank"):
        distributed.backend_for("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.backend_for("auto") == "gloo"


def test_post_run_refuses_more_processes_than_gpus_before_torchrun_starts(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    from typer.testing import CliRunner

    from post_tui import cli

    def must_not_start(nproc):
        raise AssertionError("torchrun was started")
    monkeypatch.setattr(cli, "_relaunch_under_torchrun", must_not_start)  # (it would replace this process)
    result = CliRunner().invoke(cli.app, ["run", "--preset", "smoke", "--out", str(tmp_path / "r"), "--nproc", "2",
                                          "--set", 'runtime.device="auto"'])
    assert result.exit_code == 2 and "2 processes on this machine but 1 GPU" in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "r").exists()


def test_leave_flushes_the_console_and_exits_with_the_code():
    """engine.distributed.leave skips the interpreter's teardown (os._exit), so it flushes first:
    an unflushed line to a pipe would otherwise be lost."""
    import subprocess
    import sys
    root = Path(__file__).resolve().parents[1]
    code = "import sys; from engine.distributed import leave; print('last line', end=''); print('err', end='', file=sys.stderr); leave(3)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "last line", "err")


@pytest.mark.parametrize("argv, code", [(["presets", "list"], 0), (["presets", "show", "no-such-preset"], 2),
                                        (["--no-such-option"], 2)])
def test_a_rank_of_several_processes_ends_through_leave_with_the_commands_status(monkeypatch, argv, code):
    """`post` under torchrun ends every rank through engine.distributed.leave (not the interpreter's
    teardown, where gloo's threads abort it about one time in three), with the status the command gave."""
    import sys
    from engine import distributed
    from post_tui import cli

    class Left(Exception):
        pass

    def leave(status):
        raise Left(status)

    monkeypatch.setattr(distributed, "active", lambda: True)
    monkeypatch.setattr(distributed, "leave", leave)
    monkeypatch.setattr(sys, "argv", ["post", *argv])
    with pytest.raises(Left) as left:
        cli.main()
    assert left.value.args == (code,)
    monkeypatch.setattr(distributed, "active", lambda: False)  # one process: a plain exit with the same status
    with pytest.raises(SystemExit) as plain:
        cli.main()
    assert plain.value.code == code
