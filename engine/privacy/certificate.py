"""Checking a privacy certificate (privacy.json) against Opacus' accountant.

`verify_certificate` recomputes ε from the recorded history with the recorded accountant and δ;
`verify_run` does that for tune/privacy.json and full_pt/privacy.json of a run folder.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from engine.errors import PostError
from engine.privacy import accounting

REQUIRED = ("accountant", "delta", "epsilon", "target_epsilon", "clip", "n_examples", "sample_rate",
            "noise_multiplier", "sampling", "steps", "history", "versions")
RELATIVE_TOLERANCE = 1e-6  # same library: identical; this only absorbs float printing / numpy differences


def verify_certificate(path: Path) -> dict:
    """Recompute ε of `path`; returns {"epsilon", "recomputed", "steps", ...} or raises PostError."""
    path = Path(path)
    try:
        cert = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # ValueError: bad JSON or not UTF-8
        raise PostError(f"{path}: not a readable privacy certificate ({err})") from None
    if not isinstance(cert, dict):
        raise PostError(f"{path}: not a privacy certificate (a JSON {type(cert).__name__}, not an object)")
    missing = [k for k in REQUIRED if k not in cert]
    if missing:
        raise PostError(f"{path}: not a privacy certificate, missing {', '.join(missing)}")
    _check_types(path, cert)
    history = accounting.normalize_history(cert["history"])
    if cert["sampling"] != "poisson":
        raise PostError(f"{path}: sampling {cert['sampling']!r} — the accountants assume Poisson sampling")
    steps = sum(s for _, _, s in history)
    if steps != cert["steps"]:
        raise PostError(f"{path}: history holds {steps} steps but the certificate says {cert['steps']}")
    n = cert["n_examples"]
    if not 0 < cert["delta"] <= 1.0 / n:
        raise PostError(f"{path}: δ={cert['delta']:g} is not in (0, 1/N = {1.0 / n:g}]")
    if history and (history[-1][0] != cert["noise_multiplier"] or history[-1][1] != cert["sample_rate"]):
        raise PostError(f"{path}: the history's last (σ, q) = {history[-1][:2]} differs from the recorded "
                        f"noise_multiplier {cert['noise_multiplier']} / sample_rate {cert['sample_rate']}")
    eps = accounting.reference_epsilon(history, cert["delta"], cert["accountant"])
    recorded = cert["epsilon"]
    if not isinstance(recorded, (int, float)) or not math.isclose(eps, recorded, rel_tol=RELATIVE_TOLERANCE, abs_tol=1e-12):
        raise PostError(f"{path}: recorded ε={recorded} but the {cert['accountant']} accountant gives "
                        f"ε={eps:.6g} for the recorded history")
    target = cert["target_epsilon"]
    if target is not None and eps > target:
        raise PostError(f"{path}: ε={eps:.6g} exceeds the target ε={target:g}")
    return {"path": str(path), "epsilon": eps, "recorded": recorded, "delta": cert["delta"],
            "target_epsilon": target, "steps": steps, "accountant": cert["accountant"],
            "recorded_versions": cert["versions"]}


def _check_types(path: Path, cert: dict) -> None:
    """A tampered field of the wrong type is a one-line error, not a TypeError deep in the accountant."""
    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    wrong = [k for k in ("delta", "epsilon", "noise_multiplier", "sample_rate", "clip") if not number(cert[k])]
    if cert["target_epsilon"] is not None and not number(cert["target_epsilon"]):
        wrong.append("target_epsilon")
    for key in ("n_examples", "steps"):
        if not (isinstance(cert[key], int) and not isinstance(cert[key], bool) and cert[key] >= (1 if key == "n_examples" else 0)):
            wrong.append(key)
    if not isinstance(cert["accountant"], str) or cert["accountant"] not in ("rdp", "prv"):
        wrong.append("accountant")
    if not isinstance(cert["history"], list) or not all(isinstance(h, list) and all(number(x) for x in h)
                                                        for h in cert["history"]):
        wrong.append("history")
    if not isinstance(cert["versions"], dict):
        wrong.append("versions")
    if wrong:
        raise PostError(f"{path}: not a valid privacy certificate: {', '.join(wrong)} "
                        f"{'has' if len(wrong) == 1 else 'have'} the wrong type or value")


def verify_run(run_dir: Path) -> list[dict]:
    """Verify every certificate of a run folder (tune, full_pt), or a single privacy.json."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        return [verify_certificate(run_dir)]
    if not run_dir.is_dir():
        raise PostError(f"run folder {run_dir} does not exist")
    paths = [run_dir / stage / "privacy.json" for stage in ("tune", "full_pt")] + [run_dir / "privacy.json"]  # a package's
    found = [p for p in paths if p.is_file()]
    if not found:
        raise PostError(f"no privacy certificate in {run_dir} (tune/privacy.json, or privacy.json in a package): "
                        "was it run with [privacy] set?")
    return [verify_certificate(p) for p in found]
