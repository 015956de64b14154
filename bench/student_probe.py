"""Why is the student's tuned prompt at chance? Measurements on one run folder (no training of the
student, validation and train splits only — never test).

For the teacher and the student, with and without the run's tuned prompt (`<run>/tune/prompt.safetensors`):
accuracy, mean cloze loss, the fraction predicted as class 1 and the AUC of the class-score margin
(how well the scores *rank* the classes, whatever their bias) on a slice of train and on
validation (the same head tune validates on). Plus a linear probe on each model's final hidden
state at the prediction position, trained on train and scored on validation: whether the
information is in the model at all, independently of the label words.

    python bench/student_probe.py RUN_DIR [--ntrain 600] [--threads 1] [--out probe.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import bench.common  # noqa: E402,F401  (offline hub)
from engine import loading  # noqa: E402
from engine.context import RunContext  # noqa: E402
from engine.data.tasks import collate, eval_batches  # noqa: E402
from engine.losses import cloze_loss  # noqa: E402
from engine.presets import load_config  # noqa: E402
from engine.prompt import SoftPrompt, _layout, bos_id, prompted_logits  # noqa: E402


def auc(margin: torch.Tensor, labels: torch.Tensor) -> float:
    """P(margin of a class-1 example > margin of a class-0 example), ties half."""
    pos, neg = margin[labels == 1], margin[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    diff = pos.unsqueeze(1) - neg.unsqueeze(0)
    return ((diff > 0).float().mean() + 0.5 * (diff == 0).float().mean()).item()


@torch.inference_mode()
def scores_and_states(model, tok, prompt, examples, verbalizer, bos):
    """(class scores (N, C), final hidden state at the prediction position (N, d)), in example order."""
    n = len(examples)
    scores, states = [None] * n, [None] * n
    weight = None if prompt is None else prompt.weight
    for idx in eval_batches(examples, 32):
        batch = collate(examples, idx, tok.pad_token_id, "cpu")
        s = verbalizer.class_scores(prompted_logits(model, batch["input_ids"], batch["attention_mask"], weight, bos))
        # the hidden state: same layout as prompted_logits, read from the base model
        embed = model.get_input_embeddings()
        tokens = embed(batch["input_ids"])
        B, d = tokens.shape[0], tokens.shape[-1]
        p = tokens.new_zeros(B, 0, d) if weight is None else weight.unsqueeze(0).expand(B, -1, -1)
        parts, nb = [p, tokens], 0
        if bos is not None:
            parts.insert(0, embed(torch.full((B, 1), bos, dtype=torch.long)))
            nb = 1
        source = torch.cat(parts, 1)
        index, mask, pos = _layout(batch["attention_mask"], p.shape[1], nb)
        embeds = source.gather(1, index.unsqueeze(-1).expand(-1, -1, d))
        h = model.base_model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=False).last_hidden_state[:, -1]
        for k, i in enumerate(idx):
            scores[i], states[i] = s[k], h[k]
    return torch.stack(scores), torch.stack(states).float()


def summary(scores, labels) -> dict:
    pred = scores.argmax(-1)
    out = {"accuracy": (pred == labels).float().mean().item(),
           "loss": cloze_loss(scores, labels).mean().item(),
           "frac_pred_1": (pred == 1).float().mean().item()}
    if scores.shape[1] == 2:
        margin = scores[:, 1] - scores[:, 0]
        out["auc"] = auc(margin, labels)
        out["margin_mean"], out["margin_std"] = margin.mean().item(), margin.std().item()
        # the best accuracy a constant shift of the margin could give (calibration, chosen on this set)
        best = max(((margin + c > 0).long() == labels).float().mean().item()
                   for c in torch.cat([-margin, torch.tensor([float("inf"), float("-inf")])]).tolist())
        out["best_shift_accuracy"] = best
    return {k: round(v, 4) for k, v in out.items()}


def probe(train_x, train_y, val_x, val_y, steps: int = 300) -> float:
    """Logistic regression (L2, standardised features) on train states → validation accuracy."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    tx, vx = (train_x - mu) / sd, (val_x - mu) / sd
    with torch.enable_grad():
        w = torch.zeros(tx.shape[1], int(train_y.max()) + 1, requires_grad=True)
        b = torch.zeros(int(train_y.max()) + 1, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(tx @ w + b, train_y) + 1e-2 * (w ** 2).sum()
            loss.backward()
            return loss
        opt.step(closure)
    return ((vx @ w + b).argmax(-1) == val_y).float().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--ntrain", type=int, default=600)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompt", default="", help="a prompt file other than <run>/tune/prompt.safetensors")
    ap.add_argument("--student-only", action="store_true", help="skip the teacher (its rows take most of the time)")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    cfg = load_config(config_file=run / "config.toml") if (run / "config.toml").is_file() else None
    if cfg is None:
        raise SystemExit(f"{run} has no config.toml")
    ctx = RunContext(cfg, run)
    student, tok = loading.small(ctx)
    teacher = None if args.student_only else loading.large(ctx)[0]
    splits = loading.task(ctx, tok)
    train = splits["train"].head(args.ntrain)
    val = splits["validation"].head(cfg.tune.eval_size)
    verbalizer, bos = loading.verbalizer(ctx, tok), bos_id(tok)
    prompt_file = Path(args.prompt) if args.prompt else run / "tune" / "prompt.safetensors"
    prompt = SoftPrompt.load(prompt_file) if prompt_file.is_file() else None
    ty, vy = torch.tensor(train.labels), torch.tensor(val.labels)
    res = {"run": str(run), "prompt": str(prompt_file) if prompt else None,
           "class_balance": {"train_head": ty.float().mean().item(), "validation_head": vy.float().mean().item(),
                             "n_train_head": len(train), "n_validation_head": len(val)}}
    for name, model in (("student", student), ("teacher", teacher)):
        if model is None:
            continue
        for pname, p in (("plain", None), ("prompt", prompt)):
            if pname == "prompt" and p is None:
                continue
            trs, trh = scores_and_states(model, tok, p, train, verbalizer, bos)
            vs, vh = scores_and_states(model, tok, p, val, verbalizer, bos)
            row = {"train": summary(trs, ty), "validation": summary(vs, vy)}
            if pname == "plain":
                row["linear_probe_val_accuracy"] = round(probe(trh, ty, vh, vy), 4)
            res[f"{name}_{pname}"] = row
            print(name, pname, json.dumps(row), flush=True)
    text = json.dumps(res, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
