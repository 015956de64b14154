"""Differential privacy for prompt tuning (PromptDPSGD) — see session.py for the mechanism.

    DPSession         Poisson batches, clip + noise aggregator, per-step ε and the budget stop,
                      the privacy.json certificate
    plan_noise        σ for a target (ε, δ, q, steps) — Opacus' get_noise_multiplier
    epsilon           ε of an Opacus history [(σ, q, steps), ...]
    verify_run        recompute ε of a run folder's certificates (`post privacy verify`)
"""
from engine.privacy.accounting import ACCOUNTANTS, epsilon, plan_noise, reference_epsilon
from engine.privacy.certificate import verify_certificate, verify_run
from engine.privacy.session import (CERTIFICATE, DPSession, check_config, clip_per_example, load_history,
                                    resolve_delta, resolve_sample_rate)

__all__ = ["ACCOUNTANTS", "CERTIFICATE", "DPSession", "check_config", "clip_per_example", "epsilon",
           "load_history", "plan_noise", "reference_epsilon", "resolve_delta", "resolve_sample_rate",
           "verify_certificate", "verify_run"]
