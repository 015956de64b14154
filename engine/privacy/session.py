"""DPSession: Poisson batches, the DP aggregator and the budget, for one training stage.

The update of one step (PromptDPSGD, shared/POST.md §2):

    g = ( Σ_{i∈batch} clip_C(g_i) + N(0, σ²C²·I) ) / (q·N)

with the batch drawn by Poisson sampling (each example independently with probability q;
an empty batch is still a step: noise only), g_i exact per-example gradients of the prompt
(`SoftPrompt.per_example`), clip_C(g) = g·min(1, C/(‖g‖+1e-6)), and q·N the expected
batch size. The optimizer (tune.optimizer) only ever sees g, so SGD and Adam are equally
private — Adam's moments are post-processing of the privatized gradients. The official
PromptDPSGD code used SGD; the presets keep their tune.optimizer (smoke: Adam, lr 0.03),
because Adam converges in far fewer steps, and fewer steps means less noise for the same ε.

Randomness. By default the Poisson draws and the noise come from a generator seeded with
fresh OS entropy: runtime.seed is written in config.toml, and anyone who knows the noise
seed can subtract the noise (and knowing the batches voids amplification by subsampling).
`reproducible=True` (tests, benchmarks) seeds both from the given seeds instead.

The journal. With a `journal` path, every step is written to it (atomically, fsynced) *before*
it is taken: a crash after that point can only over-count. A resumed stage continues the
journal's history, so steps taken after the last checkpoint — whose noise a crash would
otherwise let anyone redraw — are in the certificate too.

Resuming. The accountant's history ([σ, q, steps] entries, as Opacus records them) is in
privacy.json. `DPSession.create(..., history=load_history(path, cfg, n))` continues it:
`steps` stays the total planned for the whole run, the steps already in the history count
toward it, σ is re-planned for that total (the same σ when nothing changed), and ε is
always that of the full history — so the certificate covers every step ever taken.
"""
from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Iterator

import torch

from engine import distributed
from engine.errors import PostError
from engine.events import PrivacySpent
from engine.privacy import accounting

CERTIFICATE = "privacy.json"
PRV_OVERHEAD = 0.05  # PRV ε is recomputed only when that keeps accounting under ~5% of training time


def resolve_delta(privacy_cfg, n_examples: int) -> float:
    """δ: privacy.delta, or 1/N by default (the paper's); an explicit δ must be at most 1/N, so the
    default itself, written out, is accepted (a smaller δ is the stronger promise)."""
    if n_examples < 1:
        raise PostError("differential privacy needs a non-empty training set")
    if privacy_cfg.delta is None:
        return 1.0 / n_examples
    if privacy_cfg.delta > (1.0 / n_examples) * (1 + 1e-12):  # 1e-12: "0.00625" typed for 1/160
        raise PostError(f"privacy.delta={privacy_cfg.delta:g} must be at most 1/N = {1.0 / n_examples:g} "
                        f"(N = {n_examples} training examples): a larger δ allows leaking a whole example")
    return float(privacy_cfg.delta)


def resolve_sample_rate(privacy_cfg, n_examples: int, batch_size: int) -> float:
    q = privacy_cfg.sample_rate if privacy_cfg.sample_rate is not None else min(1.0, batch_size / n_examples)
    if not 0 < q <= 1:
        raise PostError(f"privacy.sample_rate={q:g} must be in (0, 1]")
    return float(q)


def check_config(privacy_cfg, n_examples: int, batch_size: int, steps: int | None = None) -> None:
    """Everything that can be checked before training (the pipeline's preflight calls this)."""
    if privacy_cfg.epsilon is not None and privacy_cfg.noise_multiplier is not None:
        raise PostError("privacy: give epsilon (σ is planned) or noise_multiplier, not both")
    if not privacy_cfg.clip > 0:
        raise PostError(f"privacy.clip={privacy_cfg.clip:g} must be > 0")
    delta = resolve_delta(privacy_cfg, n_examples)
    q = resolve_sample_rate(privacy_cfg, n_examples, batch_size)
    if steps and privacy_cfg.epsilon is not None:
        accounting.plan_noise(float(privacy_cfg.epsilon), delta, q, int(steps), privacy_cfg.accountant)


def clip_per_example(grads: torch.Tensor, clip: float) -> torch.Tensor:
    """Each g_i scaled to norm ≤ C: g_i · min(1, C / (‖g_i‖(1 + 1e-6) + 1e-6)).

    Opacus' factor is C / (‖g‖ + 1e-6); the norm here is taken in float64 and the extra relative
    margin of 1e-6 absorbs float32 rounding of the scaled gradient, so ‖clipped g_i‖ ≤ C holds
    exactly (the sensitivity the accountant assumes), not just up to an ulp.
    """
    norms = torch.linalg.vector_norm(grads.reshape(grads.shape[0], -1), dim=1, dtype=torch.float64)
    factor = (clip / (norms * (1 + 1e-6) + 1e-6)).clamp(max=1.0).to(grads.dtype)
    return grads * factor.view(-1, *([1] * (grads.dim() - 1)))


def load_history(path: Path, privacy_cfg, n_examples: int) -> list[list]:
    """The history of an earlier certificate, checked to belong to the same accounting."""
    cert = json.loads(Path(path).read_text())
    if cert.get("accountant") != privacy_cfg.accountant:
        raise PostError(f"{path}: recorded with the {cert.get('accountant')} accountant, config says {privacy_cfg.accountant}")
    if cert.get("n_examples") != n_examples:
        raise PostError(f"{path}: recorded for {cert.get('n_examples')} training examples, this run has {n_examples}")
    return cert["history"]


class DPSession:
    def __init__(self, ctx, stage: str, *, accountant: str, delta: float, target_epsilon: float | None,
                 noise_multiplier: float, sample_rate: float, clip: float, n_examples: int,
                 steps: int, planned_total: int, shape: tuple[int, ...], history: list,
                 limit: int, seed: int | None, journal: Path | None = None, journal_extra: dict | None = None):
        self.ctx, self.stage = ctx, stage
        self.journal, self.journal_extra = journal, dict(journal_extra or {})
        self.on_step = None  # called with the history after each step is journaled (the privacy ledger)
        self.accountant, self.delta, self.target_epsilon = accountant, delta, target_epsilon
        self.noise_multiplier, self.sample_rate, self.clip = noise_multiplier, sample_rate, clip
        self.n_examples, self.steps, self.planned_total = n_examples, steps, planned_total
        self.shape = tuple(shape)
        self.history = accounting.normalize_history(history)
        self.resumed_steps = sum(s for _, _, s in self.history)
        self.limit = limit                       # steps this session may take within the budget
        self.session_steps = 0
        self.epsilon_spent = accounting.epsilon(self.history, delta, accountant)
        self.stopped = ""
        self.secure = seed is None
        # several processes (engine.distributed): rank 0's seed on every rank, so all draw the same
        # Poisson mask; only rank 0 draws noise from it
        self._seed = distributed.same_on_every_rank(secrets.randbits(63) if seed is None else int(seed))
        self._noise_gen: dict[torch.device, torch.Generator] = {}
        self._epsilon_steps = self.total_steps   # ε_spent is that of this many steps
        self._epsilon_cost = 0.0
        self._epsilon_done_at = time.perf_counter()

    # ------------------------------------------------------------ creation

    @classmethod
    def create(cls, ctx, stage: str, privacy_cfg, *, n_examples: int, batch_size: int, steps: int,
               shape: tuple[int, ...], history: list | None = None, reproducible: bool = False,
               seed: int | None = None, journal: Path | None = None,
               journal_extra: dict | None = None) -> "DPSession":
        """Plan σ (for a target ε) and set up the session. `steps` is the total for the whole run;
        steps already in `history` (a resumed run) count toward it."""
        check_config(privacy_cfg, n_examples, batch_size)
        delta = resolve_delta(privacy_cfg, n_examples)
        q = resolve_sample_rate(privacy_cfg, n_examples, batch_size)
        acc = privacy_cfg.accountant
        history = accounting.normalize_history(history or [])
        done = sum(s for _, _, s in history)
        remaining = max(0, int(steps) - done)
        target = float(privacy_cfg.epsilon) if privacy_cfg.epsilon is not None else None
        if target is not None:
            sigma = accounting.plan_noise(target, delta, q, max(1, int(steps)), acc)
            spent = accounting.epsilon(history, delta, acc)
            limit = 0 if spent > target else accounting.max_steps_within(history, sigma, q, remaining, target, delta, acc)
            if spent > target or (remaining and limit == 0):
                raise PostError(f"privacy budget ε={target:g} is too small for even one more step "
                                f"({done} steps already spent ε={spent:.3f} on this data by this run folder's tunes): "
                                "raise privacy.epsilon (in a run folder it is the total of every tune there; "
                                "privacy.budget caps the total over every run on the data)")
        else:
            sigma, limit = float(privacy_cfg.noise_multiplier), remaining
        session = cls(ctx, stage, accountant=acc, delta=delta, target_epsilon=target, noise_multiplier=sigma,
                      sample_rate=q, clip=float(privacy_cfg.clip), n_examples=n_examples, steps=remaining,
                      planned_total=int(steps), shape=shape, history=history, limit=limit,
                      seed=(seed if seed is not None else ctx.config.runtime.seed) if reproducible else None,
                      journal=journal, journal_extra=journal_extra)
        final = accounting.epsilon(accounting.add_steps(history, sigma, q, limit), delta, acc)
        ctx.log(f"{stage}: DP-SGD σ={sigma:.4f} C={privacy_cfg.clip:g} q={q:.4g} (expected batch {q * n_examples:.1f}) "
                f"δ={delta:.3g}, {acc} accountant: ε={final:.3f} after {done + limit} steps"
                + (f" (target {target:g})" if target is not None else "")
                + (f"; continuing a history of {done} steps" if done else ""))
        return session

    # ------------------------------------------------------------ the mechanism

    def batches(self, seed: int) -> Iterator[list[int]]:
        """Poisson sampling: every example joins each batch independently with probability q.
        (With the default secure session the seed is mixed with the session's OS entropy.)"""
        gen = torch.Generator().manual_seed((self._seed ^ (int(seed) * 0x9E3779B97F4A7C15)) % (2 ** 63)
                                            + self.resumed_steps)
        while True:
            take = torch.rand(self.n_examples, generator=gen) < self.sample_rate
            yield take.nonzero().flatten().tolist()

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._noise_gen:
            self._noise_gen[device] = torch.Generator(device=device).manual_seed(
                (self._seed + 0x5DEECE66D + self.resumed_steps) % (2 ** 63))
        return self._noise_gen[device]

    def noise(self, like: torch.Tensor) -> torch.Tensor:
        """N(0, σ²C²) of the prompt's shape."""
        std = self.noise_multiplier * self.clip
        return torch.randn(self.shape, generator=self._generator(like.device), device=like.device,
                           dtype=like.dtype) * std

    def clipped_sum(self, per_example_grads: torch.Tensor) -> torch.Tensor:
        """(B, m, d) per-example gradients → (m, d): each clipped to C, summed (zeros when B = 0)."""
        grads = per_example_grads
        if tuple(grads.shape[1:]) != self.shape:
            raise ValueError(f"per-example gradients of shape {tuple(grads.shape)} for a prompt of shape {self.shape}")
        return clip_per_example(grads, self.clip).sum(0) if grads.shape[0] else grads.new_zeros(self.shape)

    def aggregate(self, per_example_grads: torch.Tensor) -> torch.Tensor:
        """(B, m, d) per-example gradients → (m, d): clip each to C, sum, add noise, divide by q·N.
        (Over several processes engine.distributed.ShardedAggregator does the same in one all-reduce.)"""
        total = self.clipped_sum(per_example_grads)
        return (total + self.noise(total)) / (self.sample_rate * self.n_examples)

    # ------------------------------------------------------------ the budget

    def before_step(self, step: int) -> None:
        """Count the step as spent — in the journal on disk first — before its noise is drawn."""
        self.history = accounting.add_steps(self.history, self.noise_multiplier, self.sample_rate)
        if self.journal is not None:
            from engine import artifacts
            artifacts.write_json(self.journal, self.journal_record())
        if self.on_step is not None:
            self.on_step(self.history)

    def journal_record(self) -> dict:
        return {**self.journal_extra, "accountant": self.accountant, "n_examples": self.n_examples,
                "delta": self.delta, "planned_steps": self.planned_total, "steps": self.total_steps,
                "history": [list(h) for h in self.history]}

    def after_step(self, step: int) -> str | None:
        """Emit ε spent; a reason to stop when one more step would exceed the target."""
        self.session_steps += 1
        last = self.session_steps >= min(self.steps, self.limit)
        if self._due(last):
            self._update_epsilon()
            composed = self._ledger_now()
            self.ctx.emit(PrivacySpent(epsilon=self.epsilon_spent, target_epsilon=self.target_epsilon,
                                       delta=self.delta, noise_multiplier=self.noise_multiplier,
                                       sample_rate=self.sample_rate, steps=self.total_steps,
                                       accountant=self.accountant, stage=self.stage,
                                       ledger_epsilon=composed.get("epsilon"),
                                       ledger_releases=composed.get("releases")))
        if self.target_epsilon is not None and self.session_steps >= self.limit and self.limit < self.steps:
            self._update_epsilon()
            self.stopped = (f"privacy budget reached: ε={self.epsilon_spent:.3f} after {self.total_steps} steps; "
                            f"one more step would exceed the target ε={self.target_epsilon:g}")
            self.ctx.log(f"{self.stage}: stopped early, {self.stopped}", "warning")
            return self.stopped
        return None

    def _ledger_now(self) -> dict:
        """The ledger's composed ε for this data with this release as far as it went (its entry is
        rewritten before every step); {} when this session has no ledger entry (a bare test session)."""
        release = getattr(self, "release", None)
        if release is None:
            return {}
        from engine.privacy import ledger
        return ledger.composed(release.key)

    def _due(self, last: bool) -> bool:
        """RDP (≈0.1 ms): every step. PRV (≈0.3 s per ε): the first and last step, and otherwise
        only when the time trained since the last ε is ≥ 1/PRV_OVERHEAD times one ε computation."""
        if self.accountant == "rdp" or last or self.session_steps == 1:
            return True
        return (time.perf_counter() - self._epsilon_done_at) * PRV_OVERHEAD >= self._epsilon_cost

    def _update_epsilon(self) -> None:
        if self._epsilon_steps == self.total_steps:
            return
        start = time.perf_counter()
        self.epsilon_spent = accounting.epsilon(self.history, self.delta, self.accountant)
        self._epsilon_done_at = time.perf_counter()
        self._epsilon_cost = self._epsilon_done_at - start
        self._epsilon_steps = self.total_steps

    @property
    def total_steps(self) -> int:
        return sum(s for _, _, s in self.history)

    # ------------------------------------------------------------ the certificate

    def certificate(self) -> dict:
        import opacus
        eps = accounting.reference_epsilon(self.history, self.delta, self.accountant)
        return {"accountant": self.accountant, "delta": self.delta, "epsilon": eps,
                "target_epsilon": self.target_epsilon, "clip": self.clip, "n_examples": self.n_examples,
                "sample_rate": self.sample_rate, "noise_multiplier": self.noise_multiplier,
                "sampling": "poisson", "steps": self.total_steps,
                "history": [list(h) for h in self.history],
                "expected_batch_size": self.sample_rate * self.n_examples,
                "planned_steps": self.planned_total, "resumed_steps": self.resumed_steps,
                "stopped": self.stopped, "stage": self.stage, "secure_rng": self.secure,
                "versions": {"opacus": opacus.__version__, "torch": torch.__version__}}

    def save_certificate(self, folder: Path, **extra) -> dict:
        cert = {**self.certificate(), **extra}
        path = Path(folder) / CERTIFICATE
        from engine import artifacts
        artifacts.write_json(path, cert)
        self.ctx.saved(self.stage, path, "privacy certificate")
        return cert
