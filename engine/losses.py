"""Every loss of the method, in one place (shared/POST.md §1–§3).

All return per-example values where the stage may need them (DP clips per example);
callers take the mean.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.config import SHIFT_LOSSES


def tempered_kl(target_logits: torch.Tensor, logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T²·KL(softmax(target/T) ‖ softmax(logits/T)) over the last axis → one value per row."""
    t = temperature
    target_logp = F.log_softmax(target_logits.float() / t, dim=-1)
    logp = F.log_softmax(logits.float() / t, dim=-1)
    return t * t * (target_logp.exp() * (target_logp - logp)).sum(-1)


# ---------------------------------------------------------------- distillation (§1)

def distillation_loss(student_logits, teacher_logits, student_hidden, teacher_hidden, input_ids, mask,
                      temperature: float = 2.0, w_kd: float = 5.0, w_lm: float = 2.0, w_cos: float = 1.0):
    """L = w_kd·T²·KL + w_lm·next-token CE + w_cos·(1 − cos(h_s, h_t)), over non-pad positions.

    Returns (total, {"kd", "lm", "cos"}) with batch means.
    """
    real = mask.bool()
    kd = tempered_kl(teacher_logits[real], student_logits[real], temperature).mean()
    # next-token prediction: position i predicts token i+1 where both are real
    next_real = real[:, :-1] & real[:, 1:]
    lm = F.cross_entropy(student_logits[:, :-1][next_real].float(), input_ids[:, 1:][next_real])
    cos = (1 - F.cosine_similarity(student_hidden[real].float(), teacher_hidden[real].float(), dim=-1)).mean() \
        if w_cos else student_logits.new_zeros((), dtype=torch.float32)  # off: the widths may differ
    total = w_kd * kd + w_lm * lm + w_cos * cos
    return total, {"kd": kd.detach(), "lm": lm.detach(), "cos": cos.detach()}


def hidden_state_loss(student_hidden, teacher_hidden, w_mse: float = 10.0, w_cos: float = 1.0,
                      weights: torch.Tensor | None = None):
    """L = w_mse·MSE(h_s, h_t) + w_cos·(1 − cos(h_s, h_t)) on the final normalised hidden states.

    Every position counts (distillation rows are packed, so there is no padding). Matching the
    states that feed the teacher's own LM head needs no head in the loop: on SmolLM2 the head is
    2/3 of a 4-block student's step (BENCHMARKS.md). `weights` (B, L): a weighted mean over
    positions instead (e.g. the task's cue positions counted more). Returns (total, {"mse", "cos"}).
    """
    s, t = student_hidden.float(), teacher_hidden.float()
    if weights is None:
        mse = F.mse_loss(s, t)
        cos = (1 - F.cosine_similarity(s, t, dim=-1)).mean()
    else:
        w = weights.float() / weights.float().sum()
        mse = (w * (s - t).pow(2).mean(-1)).sum()
        cos = (w * (1 - F.cosine_similarity(s, t, dim=-1))).sum()
    return w_mse * mse + w_cos * cos, {"mse": mse.detach(), "cos": cos.detach()}


def bridge_state_loss(student_states, teacher_states, weights: torch.Tensor | None = None):
    """Mean over the bridged blocks and positions of rel-MSE + (1 − cos) between the states entering
    each kept block in the student and in the teacher, (B, K, L, d) each.

    The residual stream mid-network is not normalised: its scale grows with depth and a few positions
    (BOS) carry norms tens of times the rest, so a plain MSE would weigh one block and one position
    only. The squared error is taken relative to the teacher state's own mean square, position by
    position. `weights` (B, L): a weighted mean over positions, as in hidden_state_loss."""
    s, t = student_states.float(), teacher_states.float()
    rel = (s - t).pow(2).mean(-1) / t.pow(2).mean(-1).clamp_min(1e-6)  # (B, K, L)
    per_position = rel + (1 - F.cosine_similarity(s, t, dim=-1))
    if weights is None:
        return per_position.mean()
    w = weights.float().unsqueeze(1).expand_as(per_position)
    return (w * per_position).sum() / w.sum()


# ---------------------------------------------------------------- prompt tuning (§2)

def cloze_loss(class_scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over class scores, one value per example."""
    return F.cross_entropy(class_scores.float(), labels, reduction="none")


# ---------------------------------------------------------------- transfer (§3)

def transfer_loss(z_t_prompted: torch.Tensor, z_s_prompted: torch.Tensor, z_s_plain: torch.Tensor,
                  z_t_plain: torch.Tensor, alpha: float, temperature: float = 2.0, shift: str = "paper") -> torch.Tensor:
    """POST's transfer loss, one value per public example.

    L1 matches the large prompted model's output to the small prompted model's output;
    L2 matches the change the prompt causes. L = (1 − α)·L1 + α·L2. Only z_t_prompted depends
    on the prompt being learned. `shift` says how L2 compares the change:
    - "paper": the two changes themselves, softmax(z_s(p_s+x) − z_s(x)) against
      softmax(z_t(p_t+x) − z_t(x));
    - "applied": the small change applied to the large model — the inference-time transfer's
      output z_t(x) + z_s(p_s+x) − z_s(x) — against the large prompted output z_t(p_t+x).
    Both vanish where z_t(p_t+x) − z_t(x) equals the small change (up to a constant); short of
    that, "applied" weighs errors by the large model's own distribution, i.e. where a prediction
    can flip, instead of by the shift's (BENCHMARKS.md, "The shift loss applied").
    """
    if shift not in SHIFT_LOSSES:
        raise ValueError(f"shift must be one of {SHIFT_LOSSES}, not {shift!r}")
    l1 = tempered_kl(z_s_prompted, z_t_prompted, temperature) if alpha < 1 else 0.0
    if alpha <= 0:
        l2 = 0.0
    elif shift == "paper":
        l2 = tempered_kl(z_s_prompted - z_s_plain, z_t_prompted - z_t_plain, temperature)
    else:
        l2 = tempered_kl(inference_time_logits(z_t_plain, z_s_prompted, z_s_plain), z_t_prompted, temperature)
    return (1 - alpha) * l1 + alpha * l2


def inference_time_logits(z_t_plain: torch.Tensor, z_s_prompted: torch.Tensor, z_s_plain: torch.Tensor) -> torch.Tensor:
    """Transfer without training: add the small prompt's logit shift to the large model's logits."""
    return z_t_plain + (z_s_prompted - z_s_plain)
