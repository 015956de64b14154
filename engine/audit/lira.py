"""LiRA, online, with leave-one-out targets (Carlini et al., S&P 2022; shared/POST.md §7).

Every shadow prompt k was trained on a known half of the audit pool (`member[k, i]`). Each shadow
in turn plays the audited prompt; the others are its shadows. For example i the shadows that
trained on it give φ "in", the others φ "out"; the attack's score is the log-likelihood ratio of
the target's φ under a Gaussian fitted to each group. With a handful of shadows a per-example
variance is noise, so the variances are pooled over the pool (LiRA's "global variance", the paper's
choice below 64 shadows); the means are per example.

φ = log(p / (1 − p)), p the probability of the true class from the class scores: the logit-scaled
confidence, close to Gaussian across training runs (where p itself is not).
"""
from __future__ import annotations

import math

import torch

FPRS = (0.01, 0.001)  # the low false-positive rates an audit reports (LiRA's point: attacks matter there)


def confidence_logit(class_scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, C) class scores, (B,) labels → (B,) φ = log p_y − log(1 − p_y), in float64 without overflow:
    log(1 − p_y) is the log-sum-exp of the other classes' log-probabilities."""
    logp = torch.log_softmax(class_scores.double(), dim=-1)
    true = logp.gather(1, labels.view(-1, 1)).squeeze(1)
    others = logp.scatter(1, labels.view(-1, 1), float("-inf"))
    return true - torch.logsumexp(others, dim=-1)


def _gaussian_logpdf(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    return -0.5 * (torch.log(2 * math.pi * var) + (x - mean) ** 2 / var)


def target_scores(phi: torch.Tensor, member: torch.Tensor, target: int, min_var: float = 1e-6) -> torch.Tensor:
    """LiRA scores of shadow `target` as the audited prompt, the others as its shadows.

    phi, member: (K, N); returns (N,) log N(φ; μ_in, σ_in²) − log N(φ; μ_out, σ_out²). An example
    with no "in" or no "out" shadow left gets NaN (the design avoids it: see design.membership)."""
    phi, member = phi.double(), member.bool()
    others = [k for k in range(phi.shape[0]) if k != target]
    p, m = phi[others], member[others]
    n_in, n_out = m.sum(0), (~m).sum(0)
    mu_in = torch.where(m, p, 0.0).sum(0) / n_in
    mu_out = torch.where(~m, p, 0.0).sum(0) / n_out
    var_in = _pooled_variance(p, m, mu_in, min_var)
    var_out = _pooled_variance(p, ~m, mu_out, min_var)
    x = phi[target]
    return _gaussian_logpdf(x, mu_in, var_in) - _gaussian_logpdf(x, mu_out, var_out)


def _pooled_variance(p, group, mean, min_var: float) -> torch.Tensor:
    """One variance for the whole pool: squared deviations from each example's own group mean, summed over
    every example, over the degrees of freedom left (count − 1 per example)."""
    dev = torch.where(group, p - mean, 0.0) ** 2
    dof = (group.sum(0) - 1).clamp(min=0).sum()
    return (dev.sum() / dof).clamp(min=min_var) if dof > 0 else torch.tensor(1.0, dtype=p.dtype)


def roc_auc(scores: torch.Tensor, truth: torch.Tensor) -> float:
    """Area under the ROC curve: the probability that a member outscores a non-member (ties count half)."""
    scores, truth = scores.double().flatten(), truth.bool().flatten()
    pos, neg = scores[truth], scores[~truth]
    if not len(pos) or not len(neg):
        raise ValueError("the AUC needs members and non-members")
    ranks = _average_ranks(torch.cat([pos, neg]))
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks, ties given their average rank (Mann–Whitney)."""
    sorted_x, order = torch.sort(x, stable=True)
    _, inverse, counts = torch.unique_consecutive(sorted_x, return_inverse=True, return_counts=True)
    last = torch.cumsum(counts, 0).double()          # the 1-based rank of each run of ties' last element
    average = last - (counts.double() - 1) / 2
    ranks = torch.empty_like(x, dtype=torch.float64)
    ranks[order] = average[inverse]
    return ranks


def tpr_at_fpr(scores: torch.Tensor, truth: torch.Tensor, fpr: float) -> float:
    """The largest true-positive rate of a threshold that flags at most `fpr` of the non-members."""
    scores, truth = scores.double().flatten(), truth.bool().flatten()
    neg = torch.sort(scores[~truth], descending=True).values
    allowed = int(math.floor(fpr * len(neg)))  # non-members a threshold may flag
    # flag everything strictly above the (allowed+1)-th highest non-member score
    threshold = neg[allowed] if allowed < len(neg) else float("-inf")
    return float((scores[truth] > threshold).double().mean())


def audit(phi: torch.Tensor, member: torch.Tensor) -> dict:
    """Every shadow as the target in turn; the scores pooled over targets (the leave-one-out evaluation)."""
    member = member.bool()
    scores = torch.stack([target_scores(phi, member, k) for k in range(phi.shape[0])])
    per_target = [roc_auc(scores[k], member[k]) for k in range(phi.shape[0])]
    return {"auc": roc_auc(scores, member),
            # how many (shadow, example) scores are in each group: TPR at an FPR below 1 / non_members is
            # that of the strictest threshold (no non-member flagged), not a measurement at that rate
            "members": int(member.sum()), "non_members": int((~member).sum()),
            "tpr_at_fpr": {f"{f:g}": tpr_at_fpr(scores, member, f) for f in FPRS},
            "per_target_auc": per_target,
            # the simplest attack for scale: a member has a higher confidence (no shadows)
            "confidence_auc": roc_auc(phi, member)}
