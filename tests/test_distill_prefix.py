"""Prompt-aware distillation (distill.prefix_share): rows that begin with a soft prefix."""
import json

import pytest
import torch
from typer.testing import CliRunner

from engine import distill_prefix
from engine.distill import student_key, teacher_identity
from engine.presets import load_config
from post_tui.cli import app
from tests.helpers import seeded, tiny_pair
from tests.test_distill import distill as _distill  # the distill command on the smoke preset, hidden loss

runner = CliRunner()


def _rows(n=12, width=9, vocab=200, bos=1):
    body = torch.randint(5, vocab, (n, width - 1), generator=seeded(3))
    return torch.cat([torch.full((n, 1), bos), body], dim=1)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_plain_rows_prefix_is_the_text_before_it_so_its_states_are_the_longer_texts(family):
    model, _ = tiny_pair(family)
    model.eval()
    rows = _rows()
    prefixes = distill_prefix.make(rows, model.get_input_embeddings(), 1, share=0.0, length=4, noise=0.35, seed=0)
    assert not prefixes.synthetic.any() and prefixes.vectors.shape == (12, 4, model.config.hidden_size)
    i = 5  # row 5's prefix: the last 4 text tokens of row 4 (the packed stream, BOS slots left out)
    longer = torch.cat([rows[i, :1], rows[i - 1, -4:], rows[i, 1:]]).unsqueeze(0)
    with torch.no_grad():
        whole = model.base_model(input_ids=longer, use_cache=False).last_hidden_state
        got = distill_prefix.final_hidden(model, rows[i:i + 1], prefixes.vectors[i:i + 1], 1)
    assert got.shape == (1, rows.shape[1], model.config.hidden_size)  # the row's own positions only
    want = torch.cat([whole[:, :1], whole[:, 5:]], dim=1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)  # one float32 graph each: summation order only


def test_synthetic_prefixes_are_jittered_text_in_the_share_asked_and_fixed_by_the_seed():
    model, _ = tiny_pair("llama")
    rows = _rows(n=400)
    embed = model.get_input_embeddings()
    a = distill_prefix.make(rows, embed, 1, share=0.5, length=4, noise=0.35, seed=0)
    b = distill_prefix.make(rows, embed, 1, share=0.5, length=4, noise=0.35, seed=0)
    c = distill_prefix.make(rows, embed, 1, share=0.5, length=4, noise=0.35, seed=1)
    # same seed, same process, one computation twice: bit-equal on any machine (no cross-run comparison)
    assert torch.equal(a.vectors, b.vectors) and torch.equal(a.synthetic, b.synthetic)
    assert not torch.equal(a.vectors, c.vectors)
    assert 160 < int(a.synthetic.sum()) < 240  # 400 rows at 0.5: ±4 binomial SDs
    # a synthetic prefix is no token's embedding: its distance to the nearest one is about the jitter asked
    table = embed.weight.detach()
    synthetic = a.vectors[a.synthetic].reshape(-1, table.shape[1])
    nearest = torch.cdist(synthetic, table).min(1).values
    per_coordinate = nearest / table.shape[1] ** 0.5 / a.vectors[a.synthetic].std()
    assert 0.25 < per_coordinate.median() < 0.45
    plain = a.vectors[~a.synthetic].reshape(-1, table.shape[1])
    # plain rows: token embeddings as they are (cdist's matmul form rounds to ~1e-4; a jittered vector is ~0.2 away)
    assert torch.cdist(plain, table).min(1).values.max() < 1e-3
    none = distill_prefix.make(rows, embed, 1, share=0.5, length=4, noise=0.0, seed=0)
    assert torch.cdist(none.vectors.reshape(-1, table.shape[1]), table).min(1).values.max() < 1e-3


def test_the_student_key_ignores_prefix_settings_unless_prefixes_are_on(tmp_path):
    from engine import loading
    from engine.context import RunContext
    base = load_config("smoke", overrides=['distill.loss="hidden"'])
    teacher, tokenizer = loading.large(RunContext(base, tmp_path / "ctx"))
    identity = teacher_identity(base, teacher, tokenizer)

    def key(*sets):
        return student_key(load_config("smoke", overrides=['distill.loss="hidden"', *sets]), identity, [0, 3])
    assert key() == key("distill.prefix_noise=0.9", "distill.prefix_length=7")  # off: earlier students stay valid
    on = key("distill.prefix_share=0.5")
    assert on != key()
    # the tuned pool is tuned at tune.lr: another rate, another student; text prefixes do not read it
    tuned = ["distill.prefix_share=0.5", 'distill.prefix_source="tuned"']
    assert key(*tuned) != key(*tuned, "tune.lr=0.01")
    assert on == key("distill.prefix_share=0.5", "tune.lr=0.01")
    assert on != key("distill.prefix_share=0.5", "distill.prefix_noise=0.9")
    # length 0 is the prompt's length: said or left to default, the same student
    assert key("distill.prefix_share=0.5", "tune.prompt_length=6") == key("distill.prefix_share=0.5",
                                                                          "tune.prompt_length=6",
                                                                          "distill.prefix_length=6")


def test_a_prefixed_distillation_trains_on_its_own_teacher_states(tmp_path):
    from engine.assets import cache_root
    plain, _ = _distill(tmp_path, "plain")
    summary, events = _distill(tmp_path, "prefixed", "distill.prefix_share=0.5")
    mse = [e["value"] for e in events if e["event"] == "Metric" and e["name"] == "mse"]
    assert len(mse) == 40 and sum(mse[-8:]) < sum(mse[:8])
    assert summary["key"] != plain["key"] and 0 < summary["prefixed_rows"] < summary["corpus_rows"]
    # the prefixed rows' teacher states are cached apart from the plain rows': two entries
    assert len(list((cache_root() / "teacher_hidden").glob("*.safetensors"))) == 2


@pytest.mark.parametrize("sets, says", [
    (['distill.loss="kd"', "distill.prefix_share=0.5"], "distill.loss"),
    (["distill.prefix_share=1.5"], "prefix_share"),
    (['models.small="tiny:gpt2"', 'distill.loss="hidden"', "distill.prefix_share=0.5"], "models.small"),
])
def test_bad_prefix_settings_are_one_line_errors(tmp_path, sets, says):
    args = ["run", "--preset", "smoke", "--out", str(tmp_path / "r")]
    for s in sets:
        args += ["--set", s]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and says in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_made_up_tasks_split_at_the_median_of_a_random_direction_with_two_likely_words():
    from engine import prefix_tasks
    states = torch.randn(40, 6, generator=seeded(0))
    logps = torch.log_softmax(torch.randn(40, 30, generator=seeded(1)), -1)
    tasks = prefix_tasks.make_tasks(states, logps, 5, 4, seeded(2))
    likely = set(logps.exp().mean(0).topk(4).indices.tolist())
    for labels, words in tasks:
        assert sum(labels) == 20  # balanced: half above the median
        assert len(set(words)) == 2 and set(words) <= likely
    first = torch.tensor(tasks[0][0], dtype=torch.bool)
    # the split is linear in the states: the two classes' means differ along some direction, not by chance
    assert (states[first].mean(0) - states[~first].mean(0)).norm() > 0.5
    assert tasks != prefix_tasks.make_tasks(states, logps, 5, 4, seeded(3))


def test_a_synthetic_row_takes_one_of_the_pools_prompts():
    model, _ = tiny_pair("llama")
    rows = _rows(n=50)
    pool = torch.randn(3, 4, model.config.hidden_size, generator=seeded(5))
    p = distill_prefix.make(rows, model.get_input_embeddings(), 1, share=0.5, length=4, noise=0.0, seed=0, pool=pool)
    for vectors, synthetic in zip(p.vectors, p.synthetic):
        is_pool = any(torch.equal(vectors, q) for q in pool)  # no jitter: the pool's bytes copied as they are
        assert is_pool == bool(synthetic)  # synthetic rows: a pool prompt exactly (no jitter asked); plain: text
    jittered = distill_prefix.make(rows, model.get_input_embeddings(), 1, 0.5, 4, 0.35, 0, pool=pool)
    assert torch.equal(jittered.vectors[~jittered.synthetic], p.vectors[~p.synthetic])
    assert not torch.equal(jittered.vectors[jittered.synthetic], p.vectors[p.synthetic])


def test_tuned_prefixes_distil_and_a_stop_while_tuning_caches_nothing(tmp_path, monkeypatch):
    from engine import prefix_tasks
    from engine.assets import cache_root
    text, _ = _distill(tmp_path, "text", "distill.prefix_share=0.5")
    tuned, events = _distill(tmp_path, "tuned", "distill.prefix_share=0.5", 'distill.prefix_source="tuned"',
                             "distill.prefix_tasks=2", "distill.prefix_steps=5")
    said = [e["message"] for e in events if e["event"] == "Log" and "made-up task" in e.get("message", "")]
    assert sum("fits its made-up task" in m for m in said) == 2
    assert tuned["key"] != text["key"] and tuned["prefixed_rows"] > 0
    # a stop while the owner's prompts are tuned: a cancelled record, no student, no teacher states
    real = prefix_tasks.tune_prompt
    stopped = {}

    def stop_after_first(*args, cancelled=None, **kw):
        if stopped:
            return real(*args, cancelled=lambda: True, **kw)
        stopped["once"] = True
        return real(*args, cancelled=cancelled, **kw)
    monkeypatch.setattr(prefix_tasks, "tune_prompt", stop_after_first)
    students = set((cache_root() / "students").iterdir())
    states = set((cache_root() / "teacher_hidden").iterdir())
    result = runner.invoke(app, ["distill", "--preset", "smoke", "--out", str(tmp_path / "stop"), "--set",
                                 'distill.loss="hidden"', "--set", "distill.prefix_share=0.5", "--set",
                                 'distill.prefix_source="tuned"', "--set", "distill.prefix_steps=6"])
    record = json.loads((tmp_path / "stop" / "distill" / "done.json").read_text())
    assert record["status"] == "cancelled", result.output
    assert set((cache_root() / "students").iterdir()) == students
    assert set((cache_root() / "teacher_hidden").iterdir()) == states


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_cue_states_are_the_last_positions_of_one_plain_forward(family):
    """The made-up tasks read the teacher at each input's last token: rows of different lengths (right-padded
    in the batch) give what each row alone gives (one float32 graph each: summation order only)."""
    from engine import prefix_tasks
    from engine.data.tasks import Examples
    model, tokenizer = tiny_pair(family)
    model.eval()
    rows = [[7, 8, 9, 10, 11], [12, 13], [14, 15, 16]]
    states, logps = prefix_tasks.cue_states(model, tokenizer, Examples(rows), batch_size=3)
    from engine.prompt import bos_id
    head = [] if bos_id(tokenizer) is None else [bos_id(tokenizer)]
    for i, row in enumerate(rows):
        with torch.no_grad():
            out = model(input_ids=torch.tensor([head + row]), output_hidden_states=True, use_cache=False)
        torch.testing.assert_close(states[i], out.hidden_states[-1][0, -1], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(logps[i], torch.log_softmax(out.logits[0, -1], -1), rtol=1e-5, atol=1e-5)


def test_a_prefix_longer_than_the_context_is_a_one_line_error(tmp_path):
    result = runner.invoke(app, ["distill", "--preset", "smoke", "--out", str(tmp_path / "r"), "--set",
                                 'distill.loss="hidden"', "--set", "distill.prefix_share=0.5", "--set",
                                 "distill.prefix_length=5000"])
    assert result.exit_code == 2 and "distill.prefix_length" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()  # nothing half-written


def test_tuned_prompts_fit_the_context_with_bos_before_them(tmp_path):
    """A made-up task's input is BOS + prompt + text: with a prefix that fills the context up to distill.seq_len,
    the text is cut so the whole fits (a GPT-2 of 64 positions and a tokenizer that starts with BOS)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from engine.prompt import bos_id
    from tests.helpers import sentencepiece_style_tokenizer
    tokenizer = sentencepiece_style_tokenizer()
    assert bos_id(tokenizer) is not None
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=4, n_head=4,
                                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    model.save_pretrained(tmp_path / "bos64")
    tokenizer.save_pretrained(tmp_path / "bos64")
    summary, _ = _distill(tmp_path, "edge", f'models.large="{tmp_path / "bos64"}"', "distill.steps=3",
                          "distill.seq_len=32", "distill.prefix_share=0.5", "distill.prefix_length=32",
                          'distill.prefix_source="tuned"', "distill.prefix_tasks=1", "distill.prefix_steps=1",
                          'distill.template="{text} {text} {text} {text} {text} {text} It was"')
    assert summary["prefixed_rows"] > 0


@pytest.mark.parametrize("sets, says", [
    (["distill.prefix_share=0.5", "distill.prefix_noise=1e300"], "prefix_noise"),
    (["distill.prefix_share=0.5", 'distill.prefix_source="tuned"', "distill.prefix_tasks=20",
      "distill.prefix_inputs=16"], "lower prefix_tasks"),
    (["distill.prefix_share=1e-9", 'distill.prefix_source="tuned"'], "prefixes none of the"),
])
def test_prefix_settings_that_would_overflow_wrap_or_prefix_nothing_are_refused(tmp_path, sets, says):
    result = runner.invoke(app, ["distill", "--preset", "smoke", "--out", str(tmp_path / "r"), "--set",
                                 'distill.loss="hidden"'] + [a for s in sets for a in ("--set", s)])
    assert result.exit_code == 2 and says in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "r").exists()


def test_prefix_settings_without_a_share_are_said_to_do_nothing(tmp_path):
    """Not refused: a run's config.toml holds every field, and --set distill.prefix_share=0 alone must turn the
    prefixes off; the log says which settings go unread."""
    summary, events = _distill(tmp_path, "idle", "distill.steps=3", 'distill.prefix_source="tuned"',
                               "distill.prefix_noise=0.1")
    said = [e["message"] for e in events if e["event"] == "Log"]
    assert any("distill.prefix_noise, distill.prefix_source do nothing here" in m for m in said)
    assert summary.get("prefixed_rows") is None
