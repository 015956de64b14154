"""A few engine steps on a real fetched model (SmolLM2-135M) and real data (movie reviews)."""
import json
import os

import pytest
from typer.testing import CliRunner

from post_tui.cli import app

pytestmark = [pytest.mark.registry,
              pytest.mark.skipif(os.environ.get("POST_SKIP_REGISTRY") == "1", reason="POST_SKIP_REGISTRY=1")]


def test_demo_pipeline_runs_a_few_steps_on_smollm2(tmp_path):
    sets = ["distill.steps=2", "distill.batch_size=2", "distill.seq_len=32", "distill.max_texts=200",
            "tune.steps=3", "tune.batch_size=4", "tune.eval_every=0", "tune.eval_size=8", "tune.prompt_length=4",
            "task.max_eval=16", "task.max_train=64", "public.size=8", "transfer.steps=2", "eval.full_pt=true", "eval.full_pt_steps=2",
            "eval.batch_size=16", "runtime.threads=2"]
    args = ["run", "--preset", "demo", "--out", str(tmp_path / "run")]
    for s in sets:
        args += ["--set", s]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["large"] == "smollm2-135m" and results["test_examples"] == 16
    assert {"full_zs", "full_pt", "cpt", "direct", "post"} <= results["accuracy"].keys()
