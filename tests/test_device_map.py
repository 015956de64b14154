"""A large model split over devices by accelerate (`models.device_map = "auto"`, issue 15 item 4).

No GPU here, so the split is forced with `models.max_memory`: a few hundred kB for the CPU puts the
rest of a tiny model on disk, where accelerate's hooks load each block's weights for its forward and
put them back after — the same hooks that move activations between GPUs. What must hold: the
student's kept blocks are read back from the offloaded teacher byte for byte, a prompt's gradient
reaches it through the hooks, and a whole run gives what the unsplit model gives.
"""
import json

import pytest
import torch
from typer.testing import CliRunner

from engine.models import load_dispatched, make_student
from engine.prompt import prompted_logits
from post_tui.cli import app
from tests.helpers import FAST, saved_tiny

runner = CliRunner()
SPLIT = ['models.device_map="auto"', "models.max_memory={cpu=300000}"]  # ≈ embeddings and head in memory


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_the_student_is_read_back_from_an_offloaded_teacher(tmp_path, family):
    whole, folder = saved_tiny(family, tmp_path / family)
    split, _ = load_dispatched(folder, torch.float32, {"cpu": 300_000})
    assert "disk" in split.hf_device_map.values()  # the split really happened
    assert any(p.device.type == "meta" for p in split.parameters())
    a, b = make_student(whole, [0, -1]).state_dict(), make_student(split, [0, -1]).state_dict()
    assert a.keys() == b.keys()
    for key in a:  # weights copied from disk, not computed: the same bytes
        assert torch.equal(a[key], b[key]), key


def test_a_prompt_gradient_reaches_through_the_hooks(tmp_path):
    whole, folder = saved_tiny("llama", tmp_path / "llama")
    split, _ = load_dispatched(folder, torch.float32, {"cpu": 300_000})
    split.requires_grad_(False)
    whole.requires_grad_(False)
    ids = torch.randint(5, 300, (3, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # a left-padded row
    start = torch.randn(4, 64, generator=torch.Generator().manual_seed(1)) * 0.1
    out = []
    for model in (whole, split):
        prompt = torch.nn.Parameter(start.clone())
        logits = prompted_logits(model, ids, mask, prompt, bos=1)
        logits.logsumexp(-1).sum().backward()
        out.append((logits.detach(), prompt.grad))
    # Same CPU kernels on the same weights; only where the weights wait between forwards differs.
    # 1e-5 leaves room for a kernel choosing another summation order for a differently-owned tensor.
    torch.testing.assert_close(out[0][0], out[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[0][1], out[1][1], rtol=1e-5, atol=1e-5)
    assert out[1][1].abs().sum() > 0


def run(folder, out, *extra):
    args = ["run", "--preset", "smoke", "--out", str(out), "--set", f'models.large="{folder}"']
    for s in (*FAST, *extra):
        args += ["--set", s]
    return runner.invoke(app, args)


def test_a_run_on_a_split_large_model_matches_the_whole_one(tmp_path):
    _, folder = saved_tiny("gpt2", tmp_path / "gpt2")
    whole = run(folder, tmp_path / "whole")
    assert whole.exit_code == 0, whole.output
    split = run(folder, tmp_path / "split", *SPLIT)
    assert split.exit_code == 0, split.output
    assert "large model split by accelerate" in split.output and "disk" in split.output
    a = json.loads((tmp_path / "whole" / "results.json").read_text())["accuracy"]
    b = json.loads((tmp_path / "split" / "results.json").read_text())["accuracy"]
    # Trained prompts agree to float rounding (test above); an accuracy may move where a score sits
    # on the decision boundary: 0.02 is 2 of the smoke task's 128 test examples.
    assert a.keys() == b.keys()
    for method in a:
        assert abs(a[method] - b[method]) <= 0.02, (method, a[method], b[method])


@pytest.mark.parametrize("sets, message", [
    (["models.max_memory={cpu=1000}"], "only applies with device_map"),
    (['models.device_map="auto"'], "tiny:… models are built in memory"),
    (['models.device_map="balanced"'], "device_map"),
    (['models.large="x"', 'models.device_map="auto"', 'models.max_memory={cpu="lots"}'], "give bytes or a size"),
    (['models.large="x"', 'models.device_map="auto"', "models.max_memory={gpu0=5}"], "use a GPU index"),
])
def test_split_settings_that_cannot_work_are_refused_in_one_line(tmp_path, sets, message):
    from tests.helpers import run_with_sets
    result = run_with_sets(tmp_path / "r", sets)
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "r").exists()


def test_a_split_model_is_refused_under_several_processes(tmp_path, monkeypatch):
    from engine import distributed, loading
    from engine.context import RunContext
    from engine.errors import PostError
    from engine.presets import load_config
    _, folder = saved_tiny("gpt2", tmp_path / "gpt2")
    config = load_config("smoke", overrides=[f'models.large="{folder}"', *SPLIT])
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(PostError, match="splits the model within one process"):
        loading.large(RunContext(config=config, run_dir=tmp_path / "run"))
