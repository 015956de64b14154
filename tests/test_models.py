"""Students, prompts and the prompted forward pass on tiny GPT-2 and Llama models."""
import pytest
import torch

from engine.errors import PostError
from engine.models import block_list, check_same_tokenizer, make_student, resolve_blocks, tokenizer_fingerprint
from engine.prompt import SoftPrompt, prompted_logits
from engine.verbalizer import Verbalizer
from tests.helpers import LABEL_WORDS, TEXTS, batch, saved_tiny, tiny_pair

FAMILIES = ["gpt2", "llama"]


@pytest.mark.parametrize("family", FAMILIES)
def test_student_blocks_equal_teachers_chosen_blocks(family):
    teacher, _ = tiny_pair(family)
    student = make_student(teacher, [0, -1])
    _, t_blocks = block_list(teacher)
    _, s_blocks = block_list(student)
    assert len(s_blocks) == 2
    for s_block, t_index in zip(s_blocks, [0, 3]):
        for (name, p), (_, q) in zip(s_block.state_dict().items(), t_blocks[t_index].state_dict().items()):
            assert torch.equal(p, q), name
    assert torch.equal(student.get_input_embeddings().weight, teacher.get_input_embeddings().weight)
    assert torch.equal(student.get_output_embeddings().weight, teacher.get_output_embeddings().weight)
    assert student.config.hidden_size == teacher.config.hidden_size


@pytest.mark.parametrize("family", FAMILIES)
def test_student_with_all_blocks_gives_teachers_logits(family):
    teacher, tok = tiny_pair(family)
    student = make_student(teacher, [0, 1, 2, 3])
    ids, mask = batch(tok, TEXTS)
    with torch.no_grad():
        assert torch.allclose(teacher(ids, attention_mask=mask).logits, student(ids, attention_mask=mask).logits)


def test_block_index_out_of_range_is_a_user_error():
    with pytest.raises(PostError, match="out of range"):
        resolve_blocks([0, 7], 4)
    assert resolve_blocks([-1, 0], 4) == [0, 3]


@pytest.mark.parametrize("family", FAMILIES)
def test_empty_prompt_gives_plain_model_logits(family):
    model, tok = tiny_pair(family)
    ids, mask = batch(tok, TEXTS, "left")
    with torch.no_grad():
        plain = model(ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)).logits[:, -1]
        got = prompted_logits(model, ids, mask, torch.zeros(len(TEXTS), 0, model.config.hidden_size))
    assert torch.allclose(got, plain, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_left_and_right_padding_give_the_same_class_scores(family):
    model, tok = tiny_pair(family)
    prompt = SoftPrompt.from_text(model, tok, "predict if sentiment is positive or negative", 6)
    verbalizer = Verbalizer.build(tok, LABEL_WORDS)
    scores = []
    for side in ("left", "right"):
        ids, mask = batch(tok, TEXTS, side)
        with torch.no_grad():
            scores.append(verbalizer.class_scores(prompted_logits(model, ids, mask, prompt.weight)))
    assert torch.allclose(scores[0], scores[1], atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_padded_example_equals_the_example_alone(family):
    model, tok = tiny_pair(family)
    prompt = SoftPrompt.from_text(model, tok, "predict the sentiment", 5)
    ids, mask = batch(tok, TEXTS)
    with torch.no_grad():
        together = prompted_logits(model, ids, mask, prompt.weight)
        alone = prompted_logits(model, *batch(tok, TEXTS[1:2]), prompt.weight)
    assert torch.allclose(together[1], alone[0], atol=1e-5)


def test_prompt_init_repeats_the_sentence_embeddings_and_round_trips(tmp_path):
    model, tok = tiny_pair("gpt2")
    prompt = SoftPrompt.from_text(model, tok, "good bad", 7, task="smoke")
    ids = tok("good bad", add_special_tokens=False).input_ids
    expected = model.get_input_embeddings().weight[(ids * 7)[:7]]
    assert torch.equal(prompt.weight.data, expected)
    prompt.save(tmp_path / "p.safetensors", model_id="tiny:gpt2")
    back = SoftPrompt.load(tmp_path / "p.safetensors")
    assert torch.equal(back.weight, prompt.weight)
    assert back.metadata["task"] == "smoke" and back.metadata["model_id"] == "tiny:gpt2"
    assert back.metadata["length"] == "7"


def test_prompt_longer_than_context_is_a_user_error():
    model, tok = tiny_pair("gpt2")
    with pytest.raises(PostError, match="context"):
        SoftPrompt.from_text(model, tok, "good", 300)


def test_verbalizer_rejects_colliding_and_empty_words():
    _, tok = tiny_pair("gpt2")
    with pytest.raises(PostError, match="collide"):
        Verbalizer.build(tok, [["good"], ["good"]])
    with pytest.raises(PostError, match="nothing"):
        Verbalizer.build(tok, [["  "], ["good"]])


def test_verbalizer_class_score_is_mean_of_label_word_logits():
    _, tok = tiny_pair("gpt2")
    v = Verbalizer.build(tok, LABEL_WORDS)
    logits = torch.randn(2, len(tok))
    expected = torch.stack([logits[:, ids].mean(-1) for ids in v.token_ids], -1)
    assert torch.allclose(v.class_scores(logits), expected, atol=1e-6)


def test_different_tokenizers_are_refused():
    from engine.tiny import build_tokenizer
    a = build_tokenizer()
    b = build_tokenizer(["completely different words here"] * 3, vocab_size=300)
    assert tokenizer_fingerprint(a) == tokenizer_fingerprint(build_tokenizer())
    with pytest.raises(PostError, match="different tokenizers"):
        check_same_tokenizer(a, b)


def test_verbalizer_first_used_under_inference_mode_still_serves_training():
    # eval (inference_mode) may build the cached mixing tensors before a training step uses them
    _, tok = tiny_pair("gpt2")
    v = Verbalizer.build(tok, LABEL_WORDS)
    with torch.inference_mode():
        v.class_scores(torch.randn(2, len(tok)))
    logits = torch.randn(2, len(tok), requires_grad=True)
    v.class_scores(logits).sum().backward()
    assert logits.grad is not None


def test_verbalizer_scores_the_word_not_a_shared_boundary_marker():
    # Llama-2-style SentencePiece: " great" → ["▁", "▁great"]; the first token is shared by every word
    from tests.helpers import sentencepiece_style_tokenizer
    tok = sentencepiece_style_tokenizer()
    assert tok.convert_ids_to_tokens(tok(" great", add_special_tokens=False).input_ids)[0] == "▁"  # the trap
    v = Verbalizer.build(tok, LABEL_WORDS)
    tokens = [tok.convert_ids_to_tokens(ids) for ids in v.token_ids]
    assert tokens == [["▁terrible", "▁bad", "▁awful"], ["▁great", "▁good", "▁amazing"]]
    # the scored token is the one that follows the task's cue in an input
    for tokenizer in (tok, tiny_pair("gpt2")[1]):
        verbalizer = Verbalizer.build(tokenizer, LABEL_WORDS)
        for c, words in enumerate(LABEL_WORDS):
            for word, tid in zip(words, verbalizer.token_ids[c]):
                assert tokenizer("the movie It was " + word, add_special_tokens=False).input_ids[-1] == tid


def test_blocks_are_checked_from_the_config_before_any_model_loads(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import engine.models
    from engine.models import layer_count
    from post_tui.cli import app
    model, tok = tiny_pair("llama", layers=3)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    assert layer_count(str(tmp_path / "m")) == 3 and layer_count("tiny:gpt2") == 4
    assert layer_count(str(tmp_path / "nowhere")) is None

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the blocks were checked")
    monkeypatch.setattr(engine.models, "load", no_loading)
    result = CliRunner().invoke(app, ["run", "--preset", "smoke", "--out", str(tmp_path / "run"),
                                      "--set", f'models.large="{tmp_path / "m"}"', "--set", "distill.blocks=[0, 1, -5]"])
    assert result.exit_code == 2 and "out of range" in result.stderr and "3 blocks" in result.stderr, result.output


def test_models_load_with_the_librarys_own_layers_never_kernels_from_the_hub(tmp_path):
    # transformers kernelizes by default (use_kernels): offline that load failed on CUDA, online it
    # would run code downloaded from the hub beside private data (engine.hub.NO_HUB_KERNELS)
    from engine.models import load, load_dispatched
    _, folder = saved_tiny("llama", tmp_path / "m")
    whole, _ = load(folder)
    split, _ = load_dispatched(folder, torch.float32, {"cpu": 300_000})
    assert not whole.use_kernels and not split.use_kernels
