"""Does a student answer to the large model's own tuned prompt as the large model does? (issue 12)

    python bench/prompt_response.py RUN PROMPT NAME=STUDENT... [--split validation] [--out FILE]

RUN: a run folder (its config.toml names the large model, the task and its template); PROMPT: a prompt
tuned on the large model itself (e.g. the oracle row's `tune/prompt.safetensors`, where the large model
was its own student, or a run's `full_pt/prompt.safetensors`); each NAME=STUDENT a student kit or model
folder (`<cache>/students/<key>`) of that large model.

With a faithful student a prompt that helps the large model helps the student the same way, example by
example; the transfer then has a shift to carry (the oracle rows: a perfect student's shift is carried
whole). Per model: accuracy without and with the prompt, the mean change of the correct class's log
probability it brings, and — for a student — how that change correlates with the large model's over the
split's examples. Prints one line per model and writes the JSON (--out). Task data is read: a
developer's measurement of students on a benchmark task, not a stage of the owner's.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench.common  # noqa: F401,E402 — HF_HUB_OFFLINE before transformers loads


def class_log_probs(model, tokenizer, prompt, examples, verbalizer, batch_size: int = 32):
    """(examples, classes) log-probabilities over the classes, and the labels, in the split's order."""
    import torch
    from engine.data.tasks import collate, eval_batches
    from engine.evaluate import prompt_logit_fn
    fn = prompt_logit_fn(model, tokenizer, prompt, "float32")
    scores, labels = [], []
    with torch.inference_mode():
        for indices in eval_batches(examples, batch_size):
            batch = collate(examples, indices, tokenizer.pad_token_id or 0, torch.device("cpu"))
            scores.append(torch.log_softmax(verbalizer.class_scores(fn(batch)).float(), -1))
            labels.append(batch["labels"])
    return torch.cat(scores), torch.cat(labels)


def response(model, tokenizer, prompt, examples, verbalizer) -> dict:
    """Accuracy without / with the prompt and the per-example change of the correct class's log probability."""
    plain, labels = class_log_probs(model, tokenizer, None, examples, verbalizer)
    prompted, _ = class_log_probs(model, tokenizer, prompt, examples, verbalizer)
    correct = labels.unsqueeze(1)
    change = (prompted.gather(1, correct) - plain.gather(1, correct)).squeeze(1)
    return {"zero_shot": round(100 * (plain.argmax(-1) == labels).float().mean().item(), 1),
            "prompted": round(100 * (prompted.argmax(-1) == labels).float().mean().item(), 1),
            "mean_change": round(change.mean().item(), 3), "change": change}


def correlation(a, b) -> float:
    import torch
    return round(torch.corrcoef(torch.stack([a, b]))[0, 1].item(), 3)


def measure(run: Path, prompt_path: Path, students: dict[str, Path], split: str) -> dict:
    from engine import loading, models
    from engine.context import RunContext
    from engine.presets import load_config
    from engine.prompt import SoftPrompt
    import tempfile
    cfg = load_config(config_file=run / "config.toml")
    scratch = tempfile.TemporaryDirectory()  # the run folder is only read
    ctx = RunContext(cfg, Path(scratch.name) / "ctx")
    large, tokenizer = loading.large(ctx)
    examples = loading.task(ctx, tokenizer)[split]
    verbalizer = loading.verbalizer(ctx, tokenizer)
    prompt = SoftPrompt.load(prompt_path)
    if prompt.weight.shape[1] != large.config.hidden_size:
        raise SystemExit(f"{prompt_path}: a prompt of width {prompt.weight.shape[1]}, not the large model's "
                         f"{large.config.hidden_size}: give a prompt tuned on {cfg.models.large}")
    from engine.prompt import bos_id, context_length
    limit = context_length(large)
    longest = max(len(ids) for ids in examples.input_ids) + int(bos_id(tokenizer) is not None)
    if limit is not None and prompt.length + longest > limit:
        raise SystemExit(f"{prompt_path}: {prompt.length} vectors before inputs of up to {longest} tokens pass "
                         f"{cfg.models.large}'s context of {limit}: give a prompt tuned for this task")
    reference = response(large, tokenizer, prompt, examples, verbalizer)
    out = {"run": str(run), "prompt": str(prompt_path), "split": split, "examples": len(examples),
           "large": {k: v for k, v in reference.items() if k != "change"}, "students": {}}
    for name, path in students.items():
        from engine import kit
        if kit.is_kit(path):  # the owner's kit says whose student it is: refuse one of another model
            _check_teacher(kit.verify(path), tokenizer, path, cfg.models.large)
        folder = kit.student_files(path)
        model, student_tokenizer = models.load(str(folder), cfg.runtime.seed, False)
        models.check_same_tokenizer(student_tokenizer, tokenizer)
        if model.config.hidden_size != prompt.weight.shape[1]:
            raise SystemExit(f"{name}={path}: a student of width {model.config.hidden_size}, and the prompt's is "
                             f"{prompt.weight.shape[1]}: give a student distilled from {cfg.models.large}")
        got = response(model.eval(), tokenizer, prompt, examples, verbalizer)
        out["students"][name] = {**{k: v for k, v in got.items() if k != "change"},
                                 "correlation": correlation(got["change"], reference["change"])}
    return out


def _check_teacher(manifest: dict, tokenizer, path: Path, large_name: str) -> None:
    """By the teacher's name and tokenizer (its weights' fingerprint depends on the dtype they were loaded in)."""
    from engine.models import tokenizer_fingerprint
    teacher = manifest.get("teacher_identity") or {}
    if teacher.get("teacher") != large_name or teacher.get("tokenizer") != tokenizer_fingerprint(tokenizer):
        raise SystemExit(f"{path}: a student kit distilled from {manifest.get('teacher', 'another model')!r}, not "
                         f"from this run's large model {large_name}: give a kit of {large_name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder: its config.toml gives the large model and the task")
    parser.add_argument("prompt", type=Path, help="a prompt tuned on the large model itself")
    parser.add_argument("students", nargs="+", help="NAME=PATH: a student kit or model folder")
    parser.add_argument("--split", default="validation", choices=["validation", "test"])
    parser.add_argument("--out", type=Path, help="where to write the JSON")
    args = parser.parse_args()
    if not (args.run / "config.toml").is_file():
        raise SystemExit(f"{args.run}: no config.toml: give a run folder (post run --out FOLDER)")
    students = {}
    for spec in args.students:
        name, _, path = spec.partition("=")
        if not name or not path or not Path(path).is_dir():
            raise SystemExit(f"{spec!r}: give NAME=FOLDER, a student kit or model folder that exists")
        if name in students:
            raise SystemExit(f"{name!r} names two students: give each its own name")
        students[name] = Path(path)
    if args.out is not None and args.out.is_dir():
        raise SystemExit(f"--out {args.out} is a folder: give the JSON file's path")
    out = measure(args.run, args.prompt, students, args.split)
    large = out["large"]
    print(f"large model: {large['zero_shot']} → {large['prompted']} % with the prompt, "
          f"correct-class log p {large['mean_change']:+.3f}")
    for name, s in out["students"].items():
        print(f"{name}: {s['zero_shot']} → {s['prompted']} %, log p {s['mean_change']:+.3f}, "
              f"correlation with the large model's change {s['correlation']:.2f}")
    if args.out:
        from engine.artifacts import write_json
        write_json(args.out, out)


if __name__ == "__main__":
    from bench.common import run_main
    run_main(main)
