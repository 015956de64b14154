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
- **POST above predicting the most common class** — the training split's most common class, said for every
  test example: what a classifier that reads nothing gets on imbalanced data. Otherwise POST's gain over
  zero-shot is the classes' balance, not a reading of the inputs. Measured: the spam rows (70 % of the test
  mails are ham) — the large model's zero-shot leans "spam" (31–39 %), and POST beat saying "ham" every time
  (69–73 %) in 1 of 9 runs; spam-gemma3's full PT (67–72 %) beat it in 1 of 4, so there the gap closed
  measures calibration, not transfer (BENCHMARKS.md, "The baseline the gap closed does not show").
- **POST's class balance** (where the eval kept its predictions) — the share of the test examples POST puts
  in each class against the labels' shares and the student's prompt's. The transfer matches the student's
  outputs on the public texts, so it can carry how the student's prompt leans *there* instead of how it
  reads the user's inputs. Measured: spam-smollm2 at seed 4 (BENCHMARKS.md, "A transfer that carried a
  lean") — the student's prompt says "spam" for 35 % of the test mails (the labels 27 %) but for 74 % of
  the 128 public texts, and POST says it for 85 %, at 34.3 % accuracy against the prompt's 83.0 %.

"Above" means by more than one example of the split: a tie is not a win. Differences this small are
within the split's sampling error anyway (±2.9 points at 300 examples); the verdict says what was
measured. Where the eval kept each example's prediction (eval/predictions.json, since 2026-12-05) the
two comparisons also carry a paired test on the same test examples: how many only POST gets right, how
many only the other method, and the exact two-sided McNemar p-value — so mr-gemma3's "POST 66.3 vs Direct
67.7" reads as "67 reviews against 71, p = 0.80" (measured 2026-12-05), not as a loss.
"""
from __future__ import annotations

import math

from engine.diagnostics import ADVICE_STUDENT  # the same advice the diagnostics give before the transfer


# POST against each method the checks compare it with, example by example (results.json's "paired")
PAIRED_WITH = ("direct", "full_zs")

# POST's class balance, as total variation distances between class shares (results.json's "class_shares").
# Over the 21 run folders with predictions on 2026-12-06 (BENCHMARKS.md, "A transfer that carried a lean")
# POST's distance from the labels' shares was 0.00–0.22 with one exception, 0.58 (spam-smollm2, seed 4);
# POST further from them than the student's prompt by at most 0.13, there by 0.50. The warning needs both:
LEAN_FROM_LABELS = 0.25   # POST this far from the labels' shares,
LEAN_BEYOND_STUDENT = 0.2  # and this much further than the student's prompt is
SHARED_METHODS = ("labels", "post", "cpt", "full_zs")


def mcnemar_p(only_first: int, only_second: int) -> float:
    """Exact two-sided McNemar p-value: under "the two are equally good" each discordant example goes
    either way with probability 1/2, so the smaller count is a Binomial(n, 1/2) tail, doubled."""
    n = only_first + only_second
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_first, only_second) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def discordant(ours: list[int], theirs: list[int], labels: list[int]) -> tuple[int, int]:
    """(examples only `ours` gets right, examples only `theirs` gets right): McNemar's two counts."""
    only_ours = sum(a == y != b for a, b, y in zip(ours, theirs, labels))
    only_theirs = sum(b == y != a for a, b, y in zip(ours, theirs, labels))
    return only_ours, only_theirs


def paired(predictions: dict[str, list[int]], method: str = "post") -> dict[str, dict]:
    """For each of PAIRED_WITH that was scored: the examples only `method` gets right, those only the other
    gets right, and mcnemar_p of the two. `predictions` maps a method to each example's predicted class and
    "labels" to the true classes, all in the split's order."""
    labels, ours = predictions.get("labels"), predictions.get(method)
    if labels is None or ours is None:
        return {}
    out = {}
    for other in PAIRED_WITH:
        theirs = predictions.get(other)
        if theirs is None or not len(theirs) == len(ours) == len(labels):
            continue
        only_ours, only_theirs = discordant(ours, theirs, labels)
        out[other] = {"only_" + method: only_ours, "only_" + other: only_theirs,
                      "p": float(f"{mcnemar_p(only_ours, only_theirs):.3g}")}  # 3 significant digits: tiny p stays > 0
    return out


def class_shares(predictions: dict[str, list[int]], num_classes: int) -> dict[str, list[float]]:
    """The share of the examples each of SHARED_METHODS puts in each class ("labels": the true classes)."""
    out = {}
    for name in SHARED_METHODS:
        found = predictions.get(name)
        if found:
            out[name] = [round(sum(p == c for p in found) / len(found), 3) for c in range(num_classes)]
    return out


def majority(train_labels: list[int], test_labels: list[int]) -> dict | None:
    """The baseline that reads nothing: the training split's most common class, said for every test example
    (the lowest index among ties). `accuracy` is its share of the test split; None without labels."""
    if not train_labels or not test_labels:
        return None
    counts = [train_labels.count(c) for c in range(max(train_labels) + 1)]
    common = counts.index(max(counts))
    return {"class": common, "train_share": round(max(counts) / len(train_labels), 4),
            "accuracy": sum(y == common for y in test_labels) / len(test_labels)}


def _majority_check(accuracy: dict[str, float], baseline: dict | None, one: float,
                    class_names: list[str] | None) -> dict | None:
    post = accuracy.get("post")
    if post is None or not baseline or not isinstance(baseline.get("accuracy"), (int, float)):
        return None
    rate, c = baseline["accuracy"], baseline.get("class")
    name = repr(class_names[c]) if class_names and isinstance(c, int) and 0 <= c < len(class_names) else f"class {c}"
    said = f"saying the training split's most common class, {name}, for every example ({rate:.1%})"
    if post > rate + one:
        return _ok("post_above_majority", f"POST {post:.1%} > {said}")
    full_pt = accuracy.get("full_pt")
    reference_fails = full_pt is not None and full_pt <= rate + one
    also = (f"; full PT ({full_pt:.1%}) does not beat it either, so here the gap closed measures calibration, not "
            "transfer" if reference_fails else "")
    check = _warn("post_above_majority", f"POST {post:.1%} does not beat {said}: whatever it gains over zero-shot is "
                  f"the classes' balance, not a reading of the inputs{also}")
    check["full_pt_above"] = None if full_pt is None else not reference_fails  # for tables (engine.suite.summary)
    return check


def class_names(label_words: list[list[str]]) -> list[str]:
    """What a message calls each class: its first label word."""
    return [words[0].strip() for words in label_words]


def distance(shares: list[float], other: list[float]) -> float:
    """Total variation between two class distributions: the share of examples that would change class."""
    return 0.5 * sum(abs(a - b) for a, b in zip(shares, other))


def _balance_check(shares: dict[str, list[float]], class_names: list[str] | None) -> dict | None:
    post, cpt, labels = (shares.get(k) for k in ("post", "cpt", "labels"))
    if not (post and cpt and labels) or not len(post) == len(cpt) == len(labels):
        return None
    off, student_off = distance(post, labels), distance(cpt, labels)
    if off < LEAN_FROM_LABELS or off < student_off + LEAN_BEYOND_STUDENT:
        return _ok("post_class_balance", f"POST's classes are {off:.2f} from the labels' shares, the student's prompt's "
                   f"{student_off:.2f} (total variation)")
    c = max(range(len(post)), key=lambda i: post[i] - labels[i])  # the class POST over-predicts most
    name = repr(class_names[c]) if class_names and c < len(class_names) else f"class {c}"
    return _warn("post_class_balance",
                 f"POST puts {post[c]:.0%} of the test examples in {name}, where the student's prompt puts {cpt[c]:.0%} "
                 f"and the labels {labels[c]:.0%}: the transfer matches the student's outputs on the public texts, and "
                 f"carried how its prompt leans there rather than how it reads your inputs — a public set closer to "
                 f"the task's inputs is the lever (public.source; more transfer steps carry the same lean)")


def _paired_note(pair: dict | None, other: str) -> str:
    if not pair:
        return ""
    return (f" (paired on the same examples: {pair['only_post']} only POST gets right, {pair['only_' + other]} only "
            f"{'zero-shot' if other == 'full_zs' else other}; exact McNemar p = {pair['p']:.2g})")


def checks(accuracy: dict[str, float], examples: int, num_classes: int, pairs: dict[str, dict] | None = None,
           alpha_selected: bool = False, shares: dict[str, list[float]] | None = None,
           class_names: list[str] | None = None, baseline: dict | None = None) -> list[dict]:
    """`pairs`: paired() of the same split, where the eval kept its predictions; it adds the paired counts
    and p-value to the two comparisons' messages and dicts, and changes no status. `alpha_selected`: POST's
    α was already chosen on validation (transfer.alpha = "select"), so the advice does not suggest it.
    `shares`: class_shares() of the same split, for the class-balance check; `class_names` name the classes
    in its message. `baseline`: majority() of the same split, for the check against the most common class."""
    one = 1.0 / max(examples, 1)
    pairs = pairs or {}
    out = []
    post, zs, cpt, direct = (accuracy.get(k) for k in ("post", "full_zs", "cpt", "direct"))
    if post is not None and zs is not None:
        note = _paired_note(pairs.get("full_zs"), "full_zs")
        if post > zs + one:
            out.append(_ok("post_above_zero_shot", f"POST {post:.1%} > the large model's zero-shot {zs:.1%}{note}"))
        elif cpt is not None and cpt <= zs:
            out.append(_warn("post_above_zero_shot",
                             f"POST {post:.1%} does not beat the large model's zero-shot {zs:.1%}{note}, and the student's own "
                             f"prompt ({cpt:.1%}) is below that zero-shot too: the student knows less of this task than "
                             f"the large model, so the transfer has nothing to add — use the large model as it is, or "
                             f"a stronger student: {ADVICE_STUDENT}"))
        else:
            reach = f" although the student's prompt reaches {cpt:.1%}" if cpt is not None else ""
            tried = ("at each α tried on validation — try" if alpha_selected else
                     "— try transfer.alpha = \"select\",")
            out.append(_warn("post_above_zero_shot",
                             f"POST {post:.1%} does not beat the large model's zero-shot {zs:.1%}{note}{reach}: the transfer "
                             f"lost it {tried} more transfer.steps, or a public set closer to the task"))
    if post is not None and direct is not None:
        note = _paired_note(pairs.get("direct"), "direct")
        if post > direct + one:
            out.append(_ok("post_above_direct", f"POST {post:.1%} > direct transfer {direct:.1%}{note}"))
        else:
            out.append(_warn("post_above_direct", f"POST {post:.1%} does not beat using the student's prompt as it is "
                             f"({direct:.1%}){note}: the transfer training added nothing here"))
    for check in out:  # the paired counts themselves, for tables (engine.suite.summary)
        other = {"post_above_direct": "direct", "post_above_zero_shot": "full_zs"}.get(check["name"])
        if other in pairs:
            check["paired"] = pairs[other]
    if cpt is not None:
        chance = 1.0 / num_classes
        if cpt > chance + max(0.05, 2 * one):
            out.append(_ok("student_prompt_works", f"the student's prompt {cpt:.1%} vs chance {chance:.1%}"))
        else:
            out.append(_warn("student_prompt_works", f"the student's own prompt is at chance ({cpt:.1%}, chance "
                             f"{chance:.1%}): there is nothing to transfer — try {ADVICE_STUDENT}"))
    above_majority = _majority_check(accuracy, baseline, one, class_names)
    if above_majority is not None:
        out.append(above_majority)
    balance = _balance_check(shares or {}, class_names)
    if balance is not None:
        out.append(balance)
    return out


def judge(record: dict, class_names: list[str] | None) -> list[dict]:
    """checks() of a results.json or a suite row report: both carry accuracy, test_examples and, where the
    eval kept them, paired, class_shares, majority and alpha_rule under the same keys."""
    classes = len(class_names) if class_names else record["classes"]
    return checks(record["accuracy"], record["test_examples"], classes, record.get("paired"),
                  alpha_selected=record.get("alpha_rule") == "select", shares=record.get("class_shares"),
                  class_names=class_names, baseline=record.get("majority"))


def warnings(verdict: list[dict]) -> list[str]:
    return [c["message"] for c in verdict if c["status"] == "warning"]


def _ok(name: str, message: str) -> dict:
    return {"name": name, "status": "ok", "message": message}


def _warn(name: str, message: str) -> dict:
    return {"name": name, "status": "warning", "message": message}
