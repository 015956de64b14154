"""After eval: did POST deliver what it promises on this task, and if not, what to change.

The diagnostics (engine.diagnostics) warn before the transfer from public data alone; this reads the
eval's accuracies on the user's own split, where the answer is known. Three checks, each a dict
{name, status: "ok" | "warning", message} in results.json's "verdict" and one warning line each:

- **POST above the large model's zero-shot** — otherwise the user is better served by the large
  model as it is. When the student's own prompted accuracy (CPT) is itself below that zero-shot,
  the student knows less of the task than the large model, and the transfer has nothing to add
  (measured: the BBC-topics row, CPT 70.9 < zero-shot 79.8, POST 78.4; 3× the transfer steps: lower
  still — BENCHMARKS.md "Levers on the BBC row"): the lever is the student first.
- **POST above direct transfer** — otherwise the transfer training did nothing the student's prompt
  as it is would not do.
- **CPT clearly above chance** — otherwise the student's prompt has nothing to transfer.

"Above" means by more than one example of the split: a tie is not a win. Differences this small are
within the split's sampling error anyway (±2.9 points at 300 examples); the verdict says what was
measured, it is not a significance test.
"""
from __future__ import annotations

from engine.diagnostics import ADVICE_STUDENT  # the same advice the diagnostics give before the transfer


def checks(accuracy: dict[str, float], examples: int, num_classes: int) -> list[dict]:
    one = 1.0 / max(examples, 1)
    out = []
    post, zs, cpt, direct = (accuracy.get(k) for k in ("post", "full_zs", "cpt", "direct"))
    if post is not None and zs is not None:
        if post > zs + one:
            out.append(_ok("post_above_zero_shot", f"POST {post:.1%} > the large model's zero-shot {zs:.1%}"))
        elif cpt is not None and cpt <= zs:
            out.append(_warn("post_above_zero_shot",
                             f"POST {post:.1%} does not beat the large model's zero-shot {zs:.1%}, and the student's own "
                             f"prompt ({cpt:.1%}) is below that zero-shot too: the student knows less of this task than "
                             f"the large model, so the transfer has nothing to add — use the large model as it is, or "
                             f"a stronger student: {ADVICE_STUDENT}"))
        else:
            reach = f" although the student's prompt reaches {cpt:.1%}" if cpt is not None else ""
            out.append(_warn("post_above_zero_shot",
                             f"POST {post:.1%} does not beat the large model's zero-shot {zs:.1%}{reach}: the transfer "
                             "lost it — try transfer.alpha = \"select\", more transfer.steps, or a public set closer to "
                             "the task"))
    if post is not None and direct is not None:
        if post > direct + one:
            out.append(_ok("post_above_direct", f"POST {post:.1%} > direct transfer {direct:.1%}"))
        else:
            out.append(_warn("post_above_direct", f"POST {post:.1%} does not beat using the student's prompt as it is "
                             f"({direct:.1%}): the transfer training added nothing here"))
    if cpt is not None:
        chance = 1.0 / num_classes
        if cpt > chance + max(0.05, 2 * one):
            out.append(_ok("student_prompt_works", f"the student's prompt {cpt:.1%} vs chance {chance:.1%}"))
        else:
            out.append(_warn("student_prompt_works", f"the student's own prompt is at chance ({cpt:.1%}, chance "
                             f"{chance:.1%}): there is nothing to transfer — try {ADVICE_STUDENT}"))
    return out


def warnings(verdict: list[dict]) -> list[str]:
    return [c["message"] for c in verdict if c["status"] == "warning"]


def _ok(name: str, message: str) -> dict:
    return {"name": name, "status": "ok", "message": message}


def _warn(name: str, message: str) -> dict:
    return {"name": name, "status": "warning", "message": message}
