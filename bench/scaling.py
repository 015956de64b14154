"""How POST's cost and prompt tuning the large model (full PT) grow with the large model.

(b) `--part size` (default): one student recipe (blocks [0, 1, -2, -1]) against the SmolLM2 family —
135M with its real weights, and randomly initialised models with the configs of SmolLM2-360M and
SmolLM2-1.7B (weights do not change the cost of a step, so random ones measure it honestly). For each
size, side by side in one process, interleaved in each repetition (load on a shared machine hits all
alike), medians of `--repeats`:

    full PT step   prompted forward+backward of the large model (cloze loss, gradient to the prompt)
    tune step      the same on the student (POST's private training)
    transfer step  prompted forward+backward of the large model against cached student targets
    target pass    per public example: the large model's forward and the student's two (once per run)
    teacher cache  per corpus row: the teacher's final hidden states (once per large model, owner's cost)
    distill step   the student's forward+backward+AdamW on 8 rows of 32 tokens (owner's cost)

No separate warm-up call (a 1.7B step costs minutes on this shared box): the first, cold call is one of
the repeats and the median leaves it out.

Prompt steps are timed at `--batch` examples and converted per example (linear in the batch: checked
at 135M, where the full-PT step is also timed at the recipe's batch of 16; see `linearity`). Whole-run
costs use the step counts of presets/mr-smollm2.toml: one private epoch of tune steps (batch 16) for
both POST and full PT, 150 transfer steps of 8 per α (3 with transfer.alpha = "select"), the public
set's target pass; distillation (1200 steps, teacher cache over the corpus) is the model owner's one-time
cost and reported apart. Next to each measured ratio: the ratio a FLOP count predicts (forward ≈
2·params·tokens + attention + the LM head at one position; a prompt step's backward ≈ its forward, as
frozen weights need no weight gradients).

(a) `--part ranks`: the engine's own step times (medians of the Progress events) of distill / tune /
transfer for `post run` at 1 and 2 processes (torchrun, gloo) on the demo's models with few steps.

    nice -n 10 python bench/scaling.py --part size --repeats 3 --batch 2 --threads 2
    nice -n 10 python bench/scaling.py --part ranks

(c) `--part students`: SmolLM2-135M with each student of `--students` (block sets, default the recipe's 4 blocks
and 6: [0, 1, 2, -3, -2, -1]), the same operations in one process — what a bigger student costs POST
(bench/quality_cost.py prices each recipe with it).

    nice -n 10 python bench/scaling.py --part students --repeats 3 --batch 2 --threads 2

Writes bench/results/scaling.json (atomic; keys `size`, `ranks:<preset>` and `students`) and, with matplotlib,
bench/results/scaling.png.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/x.py` from the repo root works

from bench.common import models  # noqa: E402  (sets HF_HUB_OFFLINE)
from engine import artifacts  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "scaling.json"
PRESET = "mr-smollm2"
BLOCKS = [0, 1, -2, -1]
ROWS = 8  # distillation rows per timed step (the recipe's batch), and per timed teacher-cache call
# configs of the larger SmolLM2 members (HuggingFaceTB/SmolLM2-360M, -1.7B config.json); vocab 49152, head_dim 64
FAMILY = {
    "SmolLM2-135M": None,  # the real asset
    "SmolLM2-360M": dict(hidden_size=960, num_hidden_layers=32, num_attention_heads=15, num_key_value_heads=5,
                         intermediate_size=2560),
    "SmolLM2-1.7B": dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=32, num_key_value_heads=32,
                         intermediate_size=8192),
}


# ---------------------------------------------------------------- models

def family_member(name: str, base, seed: int = 0):
    """The real 135M model, or a random one with a larger member's config (same tokenizer, vocab)."""
    from transformers import AutoModelForCausalLM
    spec = FAMILY[name]
    if spec is None:
        return base
    config = base.config.__class__.from_dict({**base.config.to_dict(), **spec, "head_dim": 64})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    return model.eval().requires_grad_(False)


def parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- FLOPs

def forward_flops(config, tokens: int, examples: int = 1, head_positions: int = 1) -> float:
    """Forward FLOPs: 2·(block weights)·tokens + attention (4·T²·d per layer) + LM head at `head_positions`."""
    d, L = config.hidden_size, config.num_hidden_layers
    hd = getattr(config, "head_dim", None) or d // config.num_attention_heads
    attn = d * hd * (2 * config.num_attention_heads + 2 * config.num_key_value_heads)
    mlp = 3 * d * config.intermediate_size
    per_example = 2 * (attn + mlp) * L * tokens + 4 * L * tokens * tokens * d + 2 * d * config.vocab_size * head_positions
    return per_example * examples


# ---------------------------------------------------------------- timing

def timed(fn, steps: int = 1, warmup: bool = True) -> float:
    """Seconds per call over `steps` calls (after one warm-up call)."""
    if warmup:
        fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def step_functions(large, student, tok, cfg, batch: int):
    """The timed operations for one (large, student) pair; per-example costs except distill (per step)."""
    from engine.data.tasks import collate, load_public, load_task
    from engine.distill import final_hidden
    from engine.losses import cloze_loss, hidden_state_loss, transfer_loss
    from engine.prompt import SoftPrompt, bos_id, prompted_logits
    from engine.verbalizer import Verbalizer
    bos, pad, m = bos_id(tok), tok.pad_token_id, cfg.tune.prompt_length
    train = load_task(cfg.task, tok, cfg.runtime.seed)["train"]
    public = load_public(cfg.public, tok, cfg.runtime.seed)
    verbalizer = Verbalizer.build(tok, cfg.task.label_words)
    by_len = sorted(range(len(train)), key=lambda i: len(train.input_ids[i]))
    middle = by_len[len(by_len) // 2:]  # median-length examples (length-grouped batches in the pipeline)

    def tune_step(model, b):
        data = collate(train, middle[:b], pad, "cpu")
        prompt = SoftPrompt.from_text(model, tok, cfg.task.prompt_init, m)

        def step():
            copy = prompt.per_example(b)
            logits = prompted_logits(model, data["input_ids"], data["attention_mask"], copy, bos)
            cloze_loss(verbalizer.class_scores(logits), data["labels"]).sum().backward()
        return step, data["input_ids"].shape[1] + m + 1

    pub = collate(public, list(range(batch)), pad, "cpu")
    p_t = SoftPrompt.from_text(large, tok, cfg.task.prompt_init, m)

    def target_pass():
        with torch.inference_mode():
            return [prompted_logits(model, pub["input_ids"], pub["attention_mask"], prompt, bos)
                    for model, prompt in ((student, p_t.weight), (student, None), (large, None))]
    fixed = target_pass()

    def transfer_step():
        copy = p_t.per_example(batch)
        z = prompted_logits(large, pub["input_ids"], pub["attention_mask"], copy, bos)
        transfer_loss(z, *fixed, alpha=0.5).sum().backward()

    rows = torch.randint(0, tok.vocab_size, (ROWS, cfg.distill.seq_len), generator=torch.Generator().manual_seed(0))

    def teacher_cache():
        with torch.no_grad():
            final_hidden(large, rows)

    trained = _trainable_copy(student)
    optimizer = torch.optim.AdamW([p for p in trained.parameters() if p.requires_grad], lr=1e-3)
    with torch.no_grad():
        target = final_hidden(large, rows)

    def distill_step():
        loss, _ = hidden_state_loss(final_hidden(trained, rows), target, 1.0, 1.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    full_pt, full_len = tune_step(large, batch)
    tune, tune_len = tune_step(student, batch)
    return {"full_pt": full_pt, "tune": tune, "transfer": transfer_step, "target_pass": target_pass,
            "teacher_cache": teacher_cache, "distill": distill_step}, {
        "prompt_tokens": full_len, "public_tokens": pub["input_ids"].shape[1] + m + 1,
        "public_examples": len(public), "train_examples": len(train), "student_trained": trained,
        "tune_step": tune_step}


def _trainable_copy(student):
    import copy
    trained = copy.deepcopy(student).float().train()
    trained.requires_grad_(True)
    trained.get_input_embeddings().requires_grad_(False)  # distill.freeze_embeddings (the demo's default)
    return trained


# per-example divisor of each timed operation (distill: per step of 8 rows; teacher cache: per row)
def _per_unit(batch: int) -> dict[str, int]:
    return {"full_pt": batch, "tune": batch, "transfer": batch, "target_pass": batch, "teacher_cache": ROWS, "distill": 1}


def measure_size(name: str, base, tok, cfg, batch: int, repeats: int, rows: int, check_linearity: bool,
                 blocks: list[int] = BLOCKS) -> dict:
    return measure_students(name, base, tok, cfg, batch, repeats, rows, check_linearity, [blocks])[0]


def measure_students(name: str, base, tok, cfg, batch: int, repeats: int, rows: int, check_linearity: bool,
                     students: list[list[int]]) -> list[dict]:
    """One large model with each student: every operation of every pair once per repetition (interleaved, so
    load on a shared machine hits all alike; the median drops a cold first call)."""
    large = family_member(name, base)
    pairs = []
    for blocks in students:
        student = _student(large, blocks)
        fns, shapes = step_functions(large, student, tok, cfg, batch)
        pairs.append((blocks, student, fns, shapes, {k: [] for k in fns}))
    units = _per_unit(batch)
    for repeat in range(repeats):
        for _, _, fns, _, samples in pairs:
            for key, fn in fns.items():
                samples[key].append(timed(fn, warmup=False) / units[key])
    entries = []
    for blocks, student, fns, shapes, samples in pairs:
        median = {k: statistics.median(v) for k, v in samples.items()}
        out = {"name": name, "random_weights": FAMILY[name] is not None, "parameters": parameters(large),
               "student_parameters": parameters(student), "layers": large.config.num_hidden_layers,
               "kept_blocks": len(blocks), "blocks": blocks, "seconds_per_unit": median, "samples": samples,
               "corpus_rows": rows,
               **{k: shapes[k] for k in ("prompt_tokens", "public_tokens", "public_examples", "train_examples")}}
        if check_linearity:
            full16, _ = shapes["tune_step"](large, cfg.tune.batch_size)
            at16 = timed(full16) / cfg.tune.batch_size  # one timed call: a check of the per-example conversion
            out["linearity"] = {"full_pt_per_example_at_batch": {str(batch): median["full_pt"],
                                                                str(cfg.tune.batch_size): at16}}
        out.update(whole_run(out, cfg, large.config, student.config))
        entries.append(out)
    del large, pairs
    return entries


def _student(large, blocks: list[int]):
    from engine.models import make_student
    return make_student(large, blocks).eval().requires_grad_(False)


def corpus_rows(cfg, tok) -> int:
    """Rows of the distillation corpus as the pipeline packs it (same tokenizer for the whole family)."""
    from engine.distill import corpus_texts, pack
    d = cfg.distill
    texts = corpus_texts(cfg)
    return len(pack(tok, [d.template.replace("{text}", t) for t in texts], d.seq_len))


def whole_run(size: dict, cfg, large_cfg, student_cfg) -> dict:
    """Seconds of a whole mr-smollm2 run from per-example costs, and the FLOP prediction of the ratios."""
    from engine.sampling import steps_for
    s = size["seconds_per_unit"]
    B, Bt = cfg.tune.batch_size, cfg.transfer.batch_size
    tune_steps = steps_for(size["train_examples"], B, cfg.tune.steps, cfg.tune.epochs)
    transfers = 3 if cfg.transfer.alpha == "select" else 1
    n_pub, rows = size["public_examples"], size["corpus_rows"]
    seconds = {"full_pt": tune_steps * B * s["full_pt"], "tune": tune_steps * B * s["tune"],
               "transfer_one": cfg.transfer.steps * Bt * s["transfer"], "target_pass": n_pub * s["target_pass"],
               "teacher_cache": rows * s["teacher_cache"], "distill": cfg.distill.steps * s["distill"]}
    one = seconds["tune"] + seconds["target_pass"] + seconds["transfer_one"]
    select = one + (transfers - 1) * seconds["transfer_one"]
    owner = seconds["teacher_cache"] + seconds["distill"]
    T, Tp = size["prompt_tokens"], size["public_tokens"]
    f_large = 2 * forward_flops(large_cfg, T)  # fwd + bwd to the prompt (frozen weights)
    f_student = 2 * forward_flops(student_cfg, T)
    f_transfer = cfg.transfer.steps * Bt * 2 * forward_flops(large_cfg, Tp)
    f_targets = n_pub * (forward_flops(large_cfg, Tp) + 2 * forward_flops(student_cfg, Tp))
    f_full = tune_steps * B * f_large
    f_one = tune_steps * B * f_student + f_targets + f_transfer
    f_select = f_one + (transfers - 1) * f_transfer
    return {"steps": {"tune": tune_steps, "transfer_per_alpha": cfg.transfer.steps, "transfers_select": transfers,
                      "distill": cfg.distill.steps, "corpus_rows": rows, "public_examples": n_pub},
            "run_seconds": {**seconds, "post_one_alpha": one, "post_select": select, "owner_one_time": owner},
            "ratio": {"one_alpha": seconds["full_pt"] / one, "select": seconds["full_pt"] / select,
                      "select_with_distillation": seconds["full_pt"] / (select + owner),
                      "tune_step_large_over_student": s["full_pt"] / s["tune"]},
            "flop_ratio": {"one_alpha": f_full / f_one, "select": f_full / f_select,
                           "tune_step_large_over_student": f_large / f_student}}


def part_size(args) -> dict:
    from engine.presets import load_config
    torch.set_num_threads(args.threads)
    cfg = load_config(PRESET)
    base, _, tok = models(cfg.models.large, BLOCKS)
    rows = corpus_rows(cfg, tok)
    sizes = []
    for name in args.sizes.split(","):
        started = time.time()
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
        entry = measure_size(name, base, tok, cfg, args.batch, args.repeats, rows, check_linearity=name == "SmolLM2-135M")
        entry["wall_seconds"] = time.time() - started
        sizes.append(entry)
        r = entry["ratio"]
        print(f"  params {entry['parameters'] / 1e6:.0f}M  full/POST {r['select']:.2f} (select) "
              f"{r['one_alpha']:.2f} (one α); FLOPs predict {entry['flop_ratio']['select']:.2f} / "
              f"{entry['flop_ratio']['one_alpha']:.2f}", flush=True)
        _save("size", _size_summary(args, sizes))  # after every size: a killed run keeps what it measured
    return _size_summary(args, sizes)


def _size_summary(args, sizes: list[dict]) -> dict:
    return {"command": "nice -n 10 python bench/scaling.py --part size " + " ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("part", "preset", "table")),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "preset": PRESET, "blocks": BLOCKS,
            "threads": args.threads, "batch_measured": args.batch, "repeats": args.repeats,
            "machine": f"{os.cpu_count()} CPU cores shared with other jobs, float32, no GPU",
            "sizes": [{k: v for k, v in s.items()} for s in sizes],
            "not_measured": ["GPU (none here)", "bf16 weights (runtime.dtype = auto is float32 on this CPU)",
                             "models beyond 1.7B (7B float32 needs 28 GB; this machine has 23 GB)",
                             "full PT's validation passes and early stop (both methods' eval excluded)"]}


def part_students(args) -> dict:
    """SmolLM2-135M with one student per block set, in one process: what a bigger student costs POST."""
    from engine.presets import load_config
    torch.set_num_threads(args.threads)
    cfg = load_config(PRESET)
    base, _, tok = models(cfg.models.large, BLOCKS)
    rows = corpus_rows(cfg, tok)
    command = ("nice -n 10 python bench/scaling.py --part students --students "
               + " ".join(",".join(map(str, b)) for b in args.students)
               + f" --repeats {args.repeats} --batch {args.batch} --threads {args.threads}")
    print(f"[{time.strftime('%H:%M:%S')}] students {args.students}, interleaved ...", flush=True)
    entries = measure_students("SmolLM2-135M", base, tok, cfg, args.batch, args.repeats, rows, False, args.students)
    summary = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "preset": PRESET,
               "threads": args.threads, "batch_measured": args.batch, "repeats": args.repeats,
               "machine": f"{os.cpu_count()} CPU cores shared with other jobs, float32, no GPU",
               "students": entries}
    _save("students", summary)
    for e in entries:
        r = e["ratio"]
        print(f"  student {e['blocks']} ({e['student_parameters'] / 1e6:.0f}M): step large/student "
              f"{r['tune_step_large_over_student']:.2f}, full PT / POST {r['one_alpha']:.2f} (one α)", flush=True)
    return summary


def block_list(text: str) -> list[int]:
    try:
        blocks = [int(b) for b in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give block indices separated by commas, e.g. 0,1,-2,-1") from None
    if not blocks:
        raise argparse.ArgumentTypeError("a student needs at least one block")
    return blocks


# ---------------------------------------------------------------- (a) ranks

def part_ranks(args) -> dict:
    """`post run` at 1 and 2 processes on the demo's models, few steps: median step seconds per stage."""
    sets = ["distill.steps=16", "tune.steps=16", "tune.eval_every=0", "tune.eval_size=16", "transfer.steps=16",
            'transfer.methods=["post"]', "task.max_eval=16", "eval.full_pt=false", "public.size=32"]
    out = {}
    with tempfile.TemporaryDirectory(prefix="post-scaling-") as tmp:
        for world in (1, 2):
            run_dir = Path(tmp) / f"w{world}"
            env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "POST_LEDGER": str(Path(tmp) / "ledger"),
                   "POST_CACHE": str(_fresh_cache(Path(tmp) / f"cache{world}"))}  # each world distils (no reused student)
            launcher = [str(Path(sys.executable).with_name("torchrun")), "--standalone", f"--nproc_per_node={world}"] \
                if world > 1 else [sys.executable]
            cmd = [*launcher, "-m", "post_tui.cli", "run", "--preset", args.preset, "--out", str(run_dir),
                   *[a for s in sets for a in ("--set", s)]]
            if world == 1:
                cmd += ["--set", "runtime.threads=1"]
            started = time.time()
            proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"world {world} failed:\n{proc.stderr[-3000:]}")
            out[str(world)] = {"wall_seconds": time.time() - started, **_stage_steps(run_dir / "events.jsonl"),
                               "memory": json.loads((run_dir / "results.json").read_text()).get("memory")}
            print(f"world {world}: {out[str(world)]}", flush=True)
    return {"command": f"nice -n 10 python bench/scaling.py --part ranks --preset {args.preset}", "preset": args.preset,
            "sets": sets, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{os.cpu_count()} CPU cores shared with other jobs: 2 processes share them, so this measures "
                       "the distributed code's overhead, not a speed-up", "worlds": out}


def _fresh_cache(folder: Path) -> Path:
    """A cache without students or teacher states, its offline assets linked from the user's cache."""
    from engine.assets import cache_root
    folder.mkdir(parents=True)
    for asset in cache_root().iterdir():
        if asset.name not in ("students", "teacher_hidden"):
            (folder / asset.name).symlink_to(asset)
    return folder


def _stage_steps(events: Path) -> dict:
    """Median seconds per step of each training stage (the engine's Progress events)."""
    steps: dict[str, list[float]] = {}
    for line in events.read_text().splitlines():
        e = json.loads(line)
        if e["event"] == "Progress" and e.get("step_seconds") and e["stage"] != "eval":
            steps.setdefault(e["stage"], []).append(e["step_seconds"])
    return {"step_seconds": {k: statistics.median(v[1:] or v) for k, v in steps.items()}}  # first step: warm-up


# ---------------------------------------------------------------- output

def _save(part: str, summary: dict) -> None:
    existing = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    existing[part] = summary
    artifacts.write_json(RESULTS, existing)


def plot(summary: dict) -> Path | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return None
    sizes = summary["sizes"]
    x = [s["parameters"] / 1e6 for s in sizes]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label, style in (("select", "α selected (3 transfers)", "o-"), ("one_alpha", "α known (1 transfer)", "s-")):
        ax.plot(x, [s["ratio"][key] for s in sizes], style, label=f"measured, {label}")
        ax.plot(x, [s["flop_ratio"][key] for s in sizes], style.replace("-", "--"), alpha=0.5, label=f"FLOPs, {label}")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.axhline(8.0, color="red", lw=0.8, ls=":", label="goal 8×")
    ax.set_xscale("log")
    ax.set_xlabel("large model parameters (millions)")
    ax.set_ylabel("cost full PT / POST (one private epoch)")
    ax.set_title("POST vs full PT as the large model grows (SmolLM2 family, CPU)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = RESULTS.with_suffix(".png")
    artifacts.write_with(path, lambda temp: fig.savefig(temp, dpi=120, format="png"))
    return path


def _repeat_ratios(size: dict, cfg) -> dict[str, list[float]]:
    """full PT / POST computed from each repetition's own step costs (the spread behind the medians)."""
    steps, out = size["steps"], {"one_alpha": [], "select": []}
    for i in range(len(size["samples"]["full_pt"])):
        s = {k: v[i] for k, v in size["samples"].items()}
        full = steps["tune"] * cfg.tune.batch_size * s["full_pt"]
        transfer = steps["transfer_per_alpha"] * cfg.transfer.batch_size * s["transfer"]
        one = steps["tune"] * cfg.tune.batch_size * s["tune"] + steps["public_examples"] * s["target_pass"] + transfer
        out["one_alpha"].append(full / one)
        out["select"].append(full / (one + (steps["transfers_select"] - 1) * transfer))
    return out


def epochs_for(size: dict, cfg, ratio: float, transfers: int) -> float | None:
    """Private epochs at which full PT / POST reaches `ratio` (both tune for the same epochs; POST adds its
    fixed transfer and target costs), from the measured per-example costs; None: never (the ratio's limit,
    the per-example step ratio large / student, is below it)."""
    c = size["seconds_per_unit"]
    per_epoch = size["train_examples"]
    fixed = transfers * size["steps"]["transfer_per_alpha"] * cfg.transfer.batch_size * c["transfer"] \
        + size["steps"]["public_examples"] * c["target_pass"]
    gain = per_epoch * (c["full_pt"] - ratio * c["tune"])
    return ratio * fixed / gain if gain > 0 else None


def _epochs(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}"


def crossover_table(summary: dict) -> str:
    from engine.presets import load_config
    cfg = load_config(summary["preset"])
    head = ("| large model | private epochs from which POST is cheaper than full PT (α known; selected) "
            "| private epochs from which full PT / POST ≥ 8× (α known; selected) |\n"
            "|---|---|---|\n")
    rows = [f"| {s['name']} | {_epochs(epochs_for(s, cfg, 1.0, 1))}; {_epochs(epochs_for(s, cfg, 1.0, 3))} "
            f"| {_epochs(epochs_for(s, cfg, 8.0, 1))}; {_epochs(epochs_for(s, cfg, 8.0, 3))} |"
            for s in summary["sizes"]]
    return head + "\n".join(rows)


def table(summary: dict) -> str:
    """The BENCHMARKS.md table of `--part size`, from scaling.json."""
    from engine.presets import load_config
    cfg = load_config(summary["preset"])
    head = ("| large model | params (layers; student keeps 4) | per-example step, large / student: measured (FLOPs) "
            "| **full PT / POST, α known**: measured [spread] (FLOPs) | **α selected (3 transfers)** | "
            "α selected, with the owner's distillation |\n|---|---|---|---|---|---|\n")
    rows = []
    for s in summary["sizes"]:
        r, f, spread = s["ratio"], s["flop_ratio"], _repeat_ratios(s, cfg)
        kind = "random init" if s["random_weights"] else "real"
        span = {k: f"[{min(v):.2f}–{max(v):.2f}]" for k, v in spread.items()}
        rows.append(f"| {s['name']} ({kind}) | {s['parameters'] / 1e6:.0f}M ({s['layers']}) "
                    f"| {r['tune_step_large_over_student']:.2f}× ({f['tune_step_large_over_student']:.2f}×) "
                    f"| **{r['one_alpha']:.2f}×** {span['one_alpha']} ({f['one_alpha']:.2f}×) "
                    f"| **{r['select']:.2f}×** {span['select']} ({f['select']:.2f}×) "
                    f"| {r['select_with_distillation']:.2f}× |")
    return head + "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["size", "ranks", "students"], default="size")
    ap.add_argument("--sizes", default=",".join(FAMILY))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=2, help="examples per timed prompt step (converted per example)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--students", nargs="+", type=block_list, default=[BLOCKS, [0, 1, 2, -3, -2, -1]],
                    help="--part students: the block sets kept, each as 0,1,-2,-1")
    ap.add_argument("--preset", default="demo", help="--part ranks: the preset run at 1 and 2 processes")
    ap.add_argument("--table", action="store_true", help="print the markdown table of scaling.json and stop")
    args = ap.parse_args()
    if args.table:
        summary = json.loads(RESULTS.read_text())["size"]
        print(table(summary), crossover_table(summary), sep="\n\n")
        return
    if args.part == "size":
        summary = part_size(args)
        _save("size", summary)
        print("plot:", plot(summary))
    elif args.part == "students":
        part_students(args)
    else:
        _save(f"ranks:{args.preset}", part_ranks(args))


if __name__ == "__main__":
    main()
