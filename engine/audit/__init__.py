"""Empirical privacy: membership inference (LiRA) against the user's tuning recipe (`post audit RUN`).

    design     which shadow trains on which pool example (balanced, seeded)
    shadows    one shadow prompt: the released tune's recipe on its half of the pool, φ on the whole pool
    lira       the attack and its metrics (AUC, TPR at low FPR), pure functions
    stage      the stage: resumable shadows, the report, the record

ε bounds what any attack can do; the audit measures what one strong attack does (the paper's Table 3:
AUC 0.561 at ε = ∞ and 0.526 at ε = 8 on sst2). It runs on the user's machine only.
"""
