"""Privacy accounting with Opacus' accountants (RDP or PRV): planning σ, ε of a history.

A *history* is exactly what an Opacus accountant records: a list of
(noise_multiplier, sample_rate, steps) entries, one per run of equal (σ, q). ε of a history
is always what `opacus.accountants.create_accountant(name)` with that history returns.

RDP: ε after every step is cheap here because the per-step RDP curve of each (σ, q) is cached
and scaled by the step count — the same arithmetic Opacus' `compute_rdp` does (`rdp₁ · steps`),
so the value is bit-for-bit Opacus'. PRV has no such shortcut (≈0.2–0.4 s per ε on one core).
"""
from __future__ import annotations

import functools
import math
import warnings
from typing import Iterable, Sequence

from engine.errors import PostError

ACCOUNTANTS = ("rdp", "prv")
PLAN_TOLERANCE = 0.01  # get_noise_multiplier's default: the planned run ends with ε in (target − 0.01, target]

Entry = tuple[float, float, int]


def normalize_history(history: Iterable[Sequence]) -> list[Entry]:
    """JSON lists → Opacus' (σ, q, steps) tuples, checked."""
    out = []
    for entry in history or []:
        if len(entry) != 3:
            raise PostError(f"privacy history entry {list(entry)!r} is not [noise_multiplier, sample_rate, steps]")
        sigma, q, steps = float(entry[0]), float(entry[1]), int(entry[2])
        if not (sigma > 0 and 0 < q <= 1 and steps >= 0 and steps == entry[2]):
            raise PostError(f"privacy history entry {list(entry)!r} is invalid: need σ > 0, 0 < q ≤ 1, whole steps ≥ 0")
        out.append((sigma, q, steps))
    return out


def add_steps(history: list[Entry], sigma: float, q: float, steps: int = 1) -> list[Entry]:
    """The history after `steps` more steps at (σ, q), merged like Opacus' `accountant.step`."""
    history = list(history)
    if steps <= 0:
        return history
    if history and history[-1][0] == sigma and history[-1][1] == q:
        history[-1] = (sigma, q, history[-1][2] + steps)
    else:
        history.append((sigma, q, steps))
    return history


def drop_steps(history: list[Entry], steps: int) -> list[Entry]:
    """The history without its first `steps` steps (what a run inherited from earlier releases)."""
    out, left = [], int(steps)
    for sigma, q, n in normalize_history(history):
        taken = min(left, n)
        left -= taken
        if n - taken:
            out.append((sigma, q, n - taken))
    return out


def opacus_accountant(name: str, history: Iterable[Sequence] = ()):
    """A fresh Opacus accountant of kind `name` holding `history`."""
    from opacus.accountants import create_accountant
    if name not in ACCOUNTANTS:
        raise PostError(f"privacy.accountant={name!r}: use rdp or prv")
    acc = create_accountant(mechanism=name)
    acc.history = normalize_history(history)
    return acc


@functools.lru_cache(maxsize=64)
def _rdp_one_step(sigma: float, q: float):
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis.rdp import compute_rdp
    return compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=RDPAccountant.DEFAULT_ALPHAS)


def epsilon(history: Iterable[Sequence], delta: float, accountant: str) -> float:
    """ε spent by `history` at δ — Opacus' value (RDP through the cached per-step curves)."""
    history = normalize_history(history)
    if not any(steps for _, _, steps in history):
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "optimal order is the largest alpha": ε is still a valid bound
        if accountant == "rdp":
            from opacus.accountants import RDPAccountant
            from opacus.accountants.analysis.rdp import get_privacy_spent
            rdp = sum([_rdp_one_step(sigma, q) * steps for sigma, q, steps in history])  # as Opacus sums
            eps, _ = get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=delta)
            return float(eps)
        return float(opacus_accountant(accountant, [h for h in history if h[2]]).get_epsilon(delta=delta))


def reference_epsilon(history: Iterable[Sequence], delta: float, accountant: str) -> float:
    """ε straight from Opacus' accountant object (no shortcut) — what `post privacy verify` uses."""
    history = [h for h in normalize_history(history) if h[2]]
    if not history:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(opacus_accountant(accountant, history).get_epsilon(delta=delta))


@functools.lru_cache(maxsize=32)
def plan_noise(target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str) -> float:
    """σ for `steps` Poisson-sampled steps at rate q to spend at most `target_epsilon` (Opacus' planner)."""
    from opacus.accountants.utils import get_noise_multiplier
    check_budget(target_epsilon, delta, sample_rate, steps, accountant)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta,
                                              sample_rate=sample_rate, steps=steps, accountant=accountant,
                                              epsilon_tolerance=PLAN_TOLERANCE))
    except (ValueError, OverflowError, FloatingPointError) as err:
        raise PostError(f"privacy budget ε={target_epsilon:g} (δ={delta:g}) is too small for even one step at "
                        f"sample rate {sample_rate:g} with the {accountant} accountant ({err}): raise privacy.epsilon") from None


def check_budget(target_epsilon, delta, sample_rate, steps, accountant) -> None:
    if accountant not in ACCOUNTANTS:
        raise PostError(f"accountant {accountant!r}: use rdp or prv")
    if target_epsilon is not None and not (target_epsilon > 0 and math.isfinite(target_epsilon)):
        raise PostError(f"epsilon must be a finite number > 0, got {target_epsilon:g}")
    if not 0 < delta < 1:
        raise PostError(f"delta must be in (0, 1), got {delta:g}")
    if not 0 < sample_rate <= 1:
        raise PostError(f"sample rate must be in (0, 1], got {sample_rate:g}")
    if steps < 1:
        raise PostError(f"steps must be ≥ 1, got {steps}")


def max_steps_within(history: list[Entry], sigma: float, q: float, limit: int, target: float,
                     delta: float, accountant: str) -> int:
    """Largest k ≤ limit with ε(history + k steps at (σ, q)) ≤ target (ε grows with k: bisection)."""
    def fits(k: int) -> bool:
        return epsilon(add_steps(history, sigma, q, k), delta, accountant) <= target
    if fits(limit):
        return limit
    lo, hi = 0, limit  # fits(lo) assumed (ε of the history so far is checked by the caller), not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo
