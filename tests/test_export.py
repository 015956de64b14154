"""`post export`: a run's large-model prompt as a PEFT prompt-tuning adapter that PEFT runs as post does."""
import json
import os
import shutil

import pytest
import torch
from typer.testing import CliRunner

from engine import export as exporting
from engine.prompt import SoftPrompt, bos_id, prompted_logits
from post_tui.cli import app
from tests.helpers import FAST, run_with_sets, sentencepiece_style_tokenizer

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    os.environ["POST_CACHE"] = str(root / "cache")
    result = run_with_sets(root / "run", FAST + ["eval.full_pt=true", "eval.full_pt_steps=5"])
    assert result.exit_code == 0, result.output
    return root / "run"


def test_the_adapter_loads_with_peft_and_gives_posts_logits(run, tmp_path):
    """Loaded by PEFT itself (not by post), the adapter's next-token logits are post's for the same prompt."""
    from peft import PeftModel
    from engine import models
    result = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "adapter")])
    assert result.exit_code == 0, result.output
    assert "PEFT adapter" in result.output and "8 virtual tokens" in result.output
    adapter = tmp_path / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "PROMPT_TUNING" and config["num_virtual_tokens"] == 8
    info = json.loads((adapter / "post_export.json").read_text())
    assert info["method"] == "post" and info["prompt"] == "transfer/post.safetensors"
    assert info["check"]["max_abs_logit_difference"] < exporting.TOLERANCE
    assert info["privacy"] == {"private": False, "from": "tune"}

    model, tokenizer = models.load("tiny:gpt2", 0)  # the run's large model: the same seed builds the same weights
    prompt = SoftPrompt.load(run / "transfer" / "post.safetensors").weight.detach()
    ids = torch.tensor([tokenizer("a film we liked a lot It was", add_special_tokens=False).input_ids])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        ours = prompted_logits(model, ids, mask, prompt, bos_id(tokenizer))
        theirs = PeftModel.from_pretrained(model, str(adapter))(input_ids=ids, attention_mask=mask).logits[:, -1]
        plain = model(input_ids=ids, attention_mask=mask).logits[:, -1]
    assert torch.allclose(ours, theirs, atol=1e-4)  # float32, same weights: only the order of operations differs
    assert not torch.allclose(ours, plain, atol=1e-3)  # and the prompt does something: the check is not vacuous
    # what post_export.json says about reading an answer gives post's class scores from PEFT's logits
    from engine.verbalizer import Verbalizer
    words = info["label_words"]
    assert info["label_token_ids"] == Verbalizer.build(tokenizer, words).token_ids
    assert info["max_length"] > 0 and "last max_length tokens" in info["cut"] and "mean" in info["scoring"]
    described = torch.stack([theirs[0, ids].mean() for ids in info["label_token_ids"]])
    assert torch.allclose(described, Verbalizer.build(tokenizer, words).class_scores(ours)[0], atol=1e-4)


@pytest.mark.parametrize("method, stored", [("direct", "tune/prompt.safetensors"), ("full_pt", "full_pt/prompt.safetensors"),
                                            ("shift", "transfer/shift.safetensors")])
def test_every_large_model_prompt_exports(run, tmp_path, method, stored):
    result = runner.invoke(app, ["export", str(run), "--method", method, "--out", str(tmp_path / method)])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / method / "post_export.json").read_text())["prompt"] == stored


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_bos_tokenizer_puts_the_bos_embedding_first_and_the_check_sees_the_difference(tmp_path, family):
    """post runs [BOS][prompt][text]; PEFT puts its virtual tokens before whatever it is given. With the BOS
    embedding as the first virtual token and text tokenized without BOS, the two agree; the naive export
    (the prompt alone, PEFT then running [prompt][text] with no BOS) does not, and the check says so."""
    from engine.tiny import build_model
    tokenizer = sentencepiece_style_tokenizer()
    assert bos_id(tokenizer) is not None
    model = build_model(family, len(tokenizer), layers=2, seed=0).eval()
    prompt = torch.randn(5, model.config.hidden_size, generator=torch.Generator().manual_seed(1)) * 0.1
    virtual, bos = exporting.virtual_tokens(model, tokenizer, prompt)
    assert virtual.shape[0] == 6 and torch.equal(virtual[1:], prompt)  # copied, not computed: exact is right
    exporting._save_adapter(model, virtual, tmp_path / "with-bos")
    good = exporting.equivalence(model, tokenizer, tmp_path / "with-bos", prompt, bos, "{text} It was", ["text"])
    assert good["max_abs_logit_difference"] < 1e-4

    naive = build_model(family, len(tokenizer), layers=2, seed=0).eval()
    exporting._save_adapter(naive, prompt, tmp_path / "naive")
    bad = exporting.equivalence(naive, tokenizer, tmp_path / "naive", prompt, bos, "{text} It was", ["text"])
    assert bad["max_abs_logit_difference"] > 10 * exporting.TOLERANCE


def test_an_export_that_peft_would_run_differently_is_not_written(run, tmp_path, monkeypatch):
    monkeypatch.setattr(exporting, "TOLERANCE", -1.0)  # no difference can pass: the refusal path
    result = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "adapter")])
    assert result.exit_code == 2 and "PEFT runs this prompt differently" in result.output
    assert not (tmp_path / "adapter").exists() and not list(tmp_path.iterdir())


def _copy_run(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


@pytest.mark.parametrize("case, message", [
    ("cpt", "'cpt' has no prompt for the large model to export: choose one of"),
    ("unknown", "'nope' has no prompt for the large model to export"),
    ("not-a-run", "is not a run folder (no config.toml)"),
    ("not-empty", "already exists and is not an empty folder"),
    ("unfinished", "the transfer stage in"),
    ("changed", "is not the prompt its transfer stage recorded"),
    ("deleted", "is missing, though its transfer stage recorded it"),
    ("not-trained", "has no output prompt (transfer/output.safetensors)"),
    ("artifacts-not-a-dict", "has not run (or its record is damaged)"),  # records are checked field by field
    ("retuned", "were made from an earlier small prompt"),
    ("other-large-model", "was made for 'tiny:gpt2', and the run's large model is now 'tiny:llama'"),
    ("out-under-a-file", "cannot write"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(run, tmp_path, case, message):
    folder, method, out = run, "post", tmp_path / "adapter"
    if case == "cpt":
        method = "cpt"
    elif case == "unknown":
        method = "nope"
    elif case == "not-a-run":
        folder = tmp_path / "nothing"
    elif case == "not-empty":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    elif case == "unfinished":
        folder = _copy_run(run, tmp_path)
        (folder / "transfer" / "done.json").unlink()
    elif case == "deleted":
        folder = _copy_run(run, tmp_path)
        (folder / "transfer" / "post.safetensors").unlink()
    elif case == "changed":
        folder = _copy_run(run, tmp_path)
        SoftPrompt(8, 64).save(folder / "transfer" / "post.safetensors")
    elif case == "not-trained":
        folder = _copy_run(run, tmp_path)
        record = json.loads((folder / "transfer" / "done.json").read_text())
        del record["artifacts"]["output.safetensors"]
        (folder / "transfer" / "done.json").write_text(json.dumps(record))
        method = "output"
    elif case == "artifacts-not-a-dict":
        folder = _copy_run(run, tmp_path)
        record = json.loads((folder / "transfer" / "done.json").read_text())
        record["artifacts"] = list(record["artifacts"])
        (folder / "transfer" / "done.json").write_text(json.dumps(record))
    elif case == "retuned":  # a newer tune (e.g. resumed with DP) beside the transfer of the older prompt
        folder = _copy_run(run, tmp_path)
        SoftPrompt(8, 64).save(folder / "package" / "prompt.safetensors")
        SoftPrompt(8, 64).save(folder / "tune" / "prompt.safetensors")
    elif case == "other-large-model":
        folder = _copy_run(run, tmp_path)
        config = (folder / "config.toml").read_text()
        (folder / "config.toml").write_text(config.replace('large = "tiny:gpt2"', 'large = "tiny:llama"', 1))
    elif case == "out-under-a-file":
        (tmp_path / "a-file").write_text("x")
        out = tmp_path / "a-file" / "adapter"
    result = runner.invoke(app, ["export", str(folder), "--method", method, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.count("\n") == 1, result.output
    if case == "not-empty":
        assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    elif case == "out-under-a-file":
        assert (tmp_path / "a-file").read_text() == "x"
    else:
        assert not out.exists()


def test_under_select_post_is_the_candidate_the_users_eval_chose(run, tmp_path):
    """transfer.alpha = "select": POST is the candidate eval/alpha.json names (the user's validation choice)."""
    folder = _copy_run(run, tmp_path)
    config = (folder / "config.toml").read_text()
    (folder / "config.toml").write_text(config.replace("alpha = 0.5", 'alpha = "select"', 1))
    (folder / "eval" / "alpha.json").write_text(json.dumps({"method": "shift", "alpha": 1.0}))
    shutil.copyfile(folder / "transfer" / "shift.safetensors", folder / "eval" / "post.safetensors")  # as eval keeps it
    result = runner.invoke(app, ["export", str(folder), "--out", str(tmp_path / "adapter")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "adapter" / "post_export.json").read_text())["prompt"] == "transfer/shift.safetensors"
    # the transfer ran again after the eval chose: the choice was made among other prompts
    shutil.copyfile(folder / "transfer" / "output.safetensors", folder / "eval" / "post.safetensors")
    result = runner.invoke(app, ["export", str(folder), "--out", str(tmp_path / "stale")])
    assert result.exit_code == 2 and "chose among earlier transfer prompts" in result.output
    (folder / "eval" / "alpha.json").write_text(json.dumps({"method": ["shift"]}))
    result = runner.invoke(app, ["export", str(folder), "--out", str(tmp_path / "odd")])
    assert result.exit_code == 2 and "damaged α choice" in result.output
    (folder / "eval" / "alpha.json").unlink()
    result = runner.invoke(app, ["export", str(folder), "--out", str(tmp_path / "again")])
    assert result.exit_code == 2 and "its eval has not chosen yet" in result.output


def test_a_dp_prompt_says_its_epsilon(tmp_path):
    """The adapter's post_export.json carries ε of the private training its prompt comes from."""
    result = run_with_sets(tmp_path / "dp", FAST + ["privacy.epsilon=8"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export", str(tmp_path / "dp"), "--out", str(tmp_path / "adapter")])
    assert result.exit_code == 0, result.output
    found = json.loads((tmp_path / "adapter" / "post_export.json").read_text())["privacy"]
    certificate = json.loads((tmp_path / "dp" / "tune" / "privacy.json").read_text())
    assert found["private"] is True and found["certificate"] == "tune/privacy.json"
    assert found["epsilon"] == certificate["epsilon"] <= 8.0 and found["delta"] == certificate["delta"]
    # ε is this release's; the data's lifetime ε (every release on it, e.g. earlier tunes) is said beside it
    assert found["composed_epsilon"] == certificate["ledger"]["composed_epsilon"] >= found["epsilon"]


def test_a_local_model_folder_is_named_not_located(tmp_path):
    """The adapter may travel: no file of it holds an absolute path, even where the large model is a local folder
    (PEFT would write the folder's path into adapter_config.json and its model card)."""
    from tests.helpers import saved_tiny
    _, folder = saved_tiny("gpt2", tmp_path / "owners-model-folder")
    result = run_with_sets(tmp_path / "run", FAST + [f'models.large="{folder}"'])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export", str(tmp_path / "run"), "--out", str(tmp_path / "adapter")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        "owners-model-folder"
    for path in (tmp_path / "adapter").iterdir():
        assert str(tmp_path) not in path.read_bytes().decode("utf-8", errors="replace"), path


def test_a_dp_prompts_composed_epsilon_counts_the_releases_made_after_it(tmp_path):
    """The certificate's composed ε is the data's as of the tune; a release on the same data afterwards (here a
    non-DP tune: ε = ∞) raises the data's lifetime ε, and the adapter exported now must say so, not the older figure."""
    result = run_with_sets(tmp_path / "dp", FAST + ["privacy.epsilon=8"])
    assert result.exit_code == 0, result.output
    result = run_with_sets(tmp_path / "later", FAST)  # the same data, tuned again without DP
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export", str(tmp_path / "dp"), "--out", str(tmp_path / "adapter")])
    assert result.exit_code == 0, result.output
    found = json.loads((tmp_path / "adapter" / "post_export.json").read_text())["privacy"]
    certificate = json.loads((tmp_path / "dp" / "tune" / "privacy.json").read_text())
    assert found["epsilon"] == certificate["epsilon"] and found["composed_releases"] == 2
    assert found["composed_epsilon"] == float("inf")
    assert found["composed_at_release"]["epsilon"] == certificate["ledger"]["composed_epsilon"] < float("inf")
