"""Every method post scores, declared once: its name, how reports call it, whether the transfer
stage trains it, its α, and how it scores an input. Transfer, α selection, eval, bench, the CLI and
the TUI read this table instead of keeping their own name sets.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    label: str                # how tables and the TUI name it
    trained: bool             # a large-model prompt the transfer stage trains on public data
    alpha: float | None       # the transfer loss's fixed α (None: transfer.alpha from the config)
    scores: str               # what is run to score an input
    transfer: bool = False    # selectable in transfer.methods
    same_width: bool = False  # runs the student's prompt on the large model: needs equal embedding widths
    prompt_stage: str = ""    # the stage whose prompt it runs on the large model (what `post export` writes); "": none

    @property
    def select_alpha(self) -> float | None:
        """α of this method as a candidate of transfer.alpha = "select" (post's mixed loss at 0.5)."""
        return SELECT_POST_ALPHA if self.name == "post" else self.alpha


SELECT_POST_ALPHA = 0.5

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("full_zs", "Full ZS", False, None, "the large model, no prompt"),
    Method("full_pt", "Full PT", False, None, "the large model with a prompt tuned on it on the private data",
           prompt_stage="full_pt"),
    Method("cpt", "CPT", False, None, "the student with the user's tuned prompt"),
    Method("direct", "Direct", False, None, "the large model with the student's prompt as it is", transfer=True,
           same_width=True, prompt_stage="tune"),
    Method("post", "POST", True, None, "the large model with the prompt transferred at transfer.alpha", transfer=True,
           prompt_stage="transfer"),
    Method("output", "output KD", True, 0.0, "the large model with the prompt transferred at α = 0 (outputs only)",
           transfer=True, prompt_stage="transfer"),
    Method("shift", "shift KD", True, 1.0, "the large model with the prompt transferred at α = 1 (the prompt's shift only)",
           transfer=True, prompt_stage="transfer"),
    Method("inference", "inference", False, None, "the large model's logits plus the student's prompt-induced shift "
           "z_s(p_s+x) − z_s(x), no training", transfer=True),
)}

ORDER = tuple(METHODS)                                            # table column order
TRANSFER = tuple(m for m in ORDER if METHODS[m].transfer)          # allowed in transfer.methods
TRAINED = tuple(m for m in ORDER if METHODS[m].trained)            # prompts the transfer stage trains
SELECT_CANDIDATES = {m: METHODS[m].select_alpha for m in TRAINED}  # α = "select" picks among these
EXPORTABLE = tuple(m for m in ORDER if METHODS[m].prompt_stage)    # a prompt for the large model: post export


def label(name: str) -> str:
    return METHODS[name].label if name in METHODS else name


def alpha_of(name: str, configured: float) -> float:
    """The α a trained method's transfer loss uses."""
    fixed = METHODS[name].alpha
    return configured if fixed is None else fixed
