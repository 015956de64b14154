"""The checks before the transfer (engine.diagnostics): what they measure, when they warn, and how
the CLI and the TUI show them. The pipeline's own diagnostics on a learnable task are checked in
test_smoke_learn.py, on the run made there."""
from __future__ import annotations

import io
import json

import pytest
import torch

from engine import diagnostics
from engine import events as ev
from engine.verbalizer import Verbalizer
from post_tui.render import ConsoleRenderer, make_console
from post_tui.widgets.state import RunState


class TwoWords:
    """A verbalizer stand-in over a 4-token vocabulary: token 0 is class 0's word, token 1 class 1's."""
    flat_token_ids = [0, 1]

    @staticmethod
    def class_scores(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, :2].float()


def logits(margin: torch.Tensor) -> torch.Tensor:
    """(N,) class-1 margins → (N, 4) logits with that margin between the two label tokens."""
    out = torch.zeros(len(margin), 4)
    out[:, 1] = margin
    return out


def inputs(n: int = 64, seed: int = 0) -> torch.Tensor:
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed))
    return x - x.mean()  # centred: a shift proportional to x has no constant part


def statuses(values) -> dict[str, str]:
    return {c["name"]: c["status"] for c in diagnostics.checks(values)}


def test_a_prompt_that_varies_with_the_input_and_a_faithful_student_pass():
    x = inputs()
    teacher, student = logits(x), logits(0.9 * x + 0.1)
    prompted = logits(0.9 * x + 0.1 + 1.5 * x)  # the prompt sharpens the input's own signal
    values = diagnostics.measure(teacher, student, prompted, TwoWords)
    assert values["fidelity"]["agreement"] > 0.9 and values["fidelity"]["margin_correlation"] > 0.99
    assert values["prompt"]["shift_ratio"] == pytest.approx(1.5, rel=1e-4)
    assert values["public"]["shift_input_share"] == pytest.approx(1.0, abs=1e-4)  # no constant part
    assert statuses(values) == {"prompt": "ok", "fidelity": "ok", "public": "ok"}


def test_a_prompt_that_only_moves_the_bias_warns_and_says_what_to_change():
    x = inputs()
    teacher, student = logits(x), logits(x)
    prompted = logits(x + 2.0)  # the same shift for every input: a bias, nothing to rank by
    values = diagnostics.measure(teacher, student, prompted, TwoWords)
    assert values["prompt"]["shift_mean_abs"] == pytest.approx(2.0, rel=1e-4)
    assert values["prompt"]["shift_ratio"] < 1e-5 and values["public"]["shift_input_share"] < 1e-5
    check = next(c for c in diagnostics.checks(values) if c["name"] == "prompt")
    assert check["status"] == "warning"
    assert "distill.steps" in check["message"] and "distill.blocks" in check["message"]
    assert "task.label_words" in check["message"]


def test_a_student_that_follows_nothing_warns_even_when_the_argmax_agrees():
    x = inputs()
    teacher = logits(x + 3.0)                 # a biased large model: class 1 almost everywhere
    student = logits(inputs(seed=1) * 0.1 + 3.0)  # the same bias, unrelated to the input
    values = diagnostics.measure(teacher, student, logits(x), TwoWords)
    assert values["fidelity"]["agreement"] > 0.95
    assert abs(values["fidelity"]["margin_correlation"]) < diagnostics.FIDELITY_CORRELATION_MIN
    assert statuses(values)["fidelity"] == "warning"


def test_a_prompt_that_puts_every_public_input_in_one_class_warns_about_the_public_set():
    x = inputs()
    values = diagnostics.measure(logits(x), logits(x), logits(x + 10.0 + 0.5 * x), TwoWords)
    assert values["public"]["prompted_majority"] == 1.0
    assert statuses(values)["public"] == "warning"
    said = next(c for c in diagnostics.checks(values) if c["name"] == "public")["message"]
    assert "public.source" in said and 'public.pick = "balanced"' in said  # both remedies named
    picked = next(c for c in diagnostics.checks(values, picked=True) if c["name"] == "public")["message"]
    assert "public.pool" in picked and "public.pick" not in picked  # a pick already on: a larger pool instead
    few = diagnostics.measure(logits(x[:8]), logits(x[:8]), logits(2 * x[:8]), TwoWords)
    assert "public.size" in next(c for c in diagnostics.checks(few) if c["name"] == "public")["message"]


def test_several_classes_and_the_label_mass_use_the_verbalizer():
    from tests.helpers import tiny_pair
    _, tokenizer = tiny_pair("gpt2")
    verbalizer = Verbalizer.build(tokenizer, [["bad"], ["good", "great"], ["dull"]])
    g = torch.Generator().manual_seed(0)
    z = torch.randn(32, len(tokenizer), generator=g)
    values = diagnostics.measure(z, z, z, verbalizer)
    assert values["fidelity"]["agreement"] == 1.0 and values["fidelity"]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert values["prompt"]["shift_mean_abs"] == 0.0 and values["prompt"]["shift_ratio"] == 0.0
    expected = torch.softmax(z, -1)[:, verbalizer.flat_token_ids].sum(-1).mean()
    assert values["public"]["label_mass"] == pytest.approx(float(expected), rel=1e-5)
    assert values["public"]["label_mass_uniform"] == pytest.approx(4 / len(tokenizer))
    assert 0.0 < values["public"]["large_class_entropy"] <= 1.0


def sample_event() -> ev.Diagnostics:
    x = inputs()
    values = diagnostics.measure(logits(x), logits(x), logits(x + 0.5), TwoWords)  # a bias only: one warning
    return ev.Diagnostics(values=values, checks=diagnostics.checks(values), path="/runs/r/diagnostics.json", time=1000.0)


def test_the_event_survives_the_event_log():
    event = sample_event()
    again = ev.event_from_json(json.loads(json.dumps(event.to_json())))
    assert again == event and again.warnings == event.warnings and len(event.warnings) == 1


def test_the_cli_prints_one_block_with_the_warning():
    out = io.StringIO()
    renderer = ConsoleRenderer(make_console(file=out, width=80))
    renderer(sample_event())
    lines = out.getvalue().splitlines()
    assert "diagnostics on 64 public inputs, before the transfer: 1 warning" in lines[0]
    assert any("]   warning prompt: the small prompt barely moves" in l for l in lines)
    assert any("]   ok      fidelity:" in l for l in lines) and len(lines) == 4


def test_the_tui_state_logs_the_warnings():
    state = RunState()
    state.apply(sample_event())
    assert state.diagnostics is not None
    assert any(level == "warning" and m.startswith("diagnostics: the small prompt") for _, level, m in state.logs)


@pytest.mark.anyio
async def test_the_tui_line_shows_the_checks():
    from textual.app import App

    from post_tui.widgets.diagnostics import DiagnosticsView

    class One(App):
        def compose(self):
            yield DiagnosticsView()

    app = One()
    async with app.run_test(size=(100, 20)) as pilot:
        view = app.query_one(DiagnosticsView)
        state = RunState()
        view.show(state)
        assert "before the transfer" in view.plain and view.warnings == 0
        state.apply(sample_event())
        view.show(state)
        await pilot.pause()
        assert "1 warning" in view.plain and "prompt: the small prompt barely moves" in view.plain
        assert "(ok: fidelity, public)" in view.plain
        assert view.has_class("-warning")


@pytest.fixture
def anyio_backend():
    return "asyncio"
