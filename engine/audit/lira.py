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

    phi, member: (K, N); returns (N,) log N(φ; μ_in, σ_in²) − log N(φ; μ_out, σ_out²). Each example's two
    groups are cut to the same size (K/2 − 1 each, see _equal_groups): left unequal, the group the target
    itself belongs to is always the smaller one, its mean the noisier, and members would score lower than
    non-members with nothing to detect (AUC 0.47 on pure noise with 8 shadows)."""
    phi, member = phi.double(), member.bool()
    others = [k for k in range(phi.shape[0]) if k != target]
    p = phi[others]
    m_in, m_out = _equal_groups(member[others], target)
    mu_in = torch.where(m_in, p, 0.0).sum(0) / m_in.sum(0)
    mu_out = torch.where(m_out, p, 0.0).sum(0) / m_out.sum(0)
    var_in = _pooled_variance(p, m_in, mu_in, min_var)
    var_out = _pooled_variance(p, m_out, mu_out, min_var)
    x = phi[target]
    return _gaussian_logpdf(x, mu_in, var_in) - _gaussian_logpdf(x, mu_out, var_out)


def _equal_groups(member: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(in, out) masks of the shadows, each example's larger group cut to the smaller one's size by
    dropping randomly chosen shadows (seeded, independent of φ, so no score is favoured)."""
    gen = torch.Generator().manual_seed(int(seed))
    order = torch.argsort(torch.rand(member.shape, generator=gen), dim=0)  # a random rank per (shadow, example)
    rank_in = _rank_within(member, order)
    rank_out = _rank_within(~member, order)
    keep = torch.minimum(member.sum(0), (~member).sum(0))
    return member & (rank_in < keep), ~member & (rank_out < keep)


def _rank_within(group: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """For each example, the rank (0, 1, …) of each of its group's shadows in the random order `order`."""
    ranked = torch.where(group, order, order.shape[0] + order)  # the group's shadows first, in random order
    return torch.argsort(torch.argsort(ranked, dim=0), dim=0)


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
            # how many (shadow, example) scores are in each group
            "members": int(member.sum()), "non_members": int((~member).sum()),
            # None where fewer than 1 / fpr non-members were scored: no threshold can be placed at that rate
            "tpr_at_fpr": {f"{f:g}": (tpr_at_fpr(scores, member, f) if f * int((~member).sum()) >= 1 else None)
                           for f in FPRS},
            "per_target_auc": per_target,
            # the simplest attack for scale: a member has a higher confidence (no shadows)
            "confidence_auc": roc_auc(phi, member)}
