"""Hand-computed checks of every loss."""
import math

import pytest
import torch

from engine.losses import cloze_loss, distillation_loss, inference_time_logits, tempered_kl, transfer_loss


def _kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def _softmax(x, t):
    e = [math.exp(v / t) for v in x]
    return [v / sum(e) for v in e]


def test_tempered_kl_by_hand():
    target, logits = [1.0, 2.0, 0.5], [0.0, 1.0, 3.0]
    expected = 4.0 * _kl(_softmax(target, 2.0), _softmax(logits, 2.0))
    got = tempered_kl(torch.tensor([target]), torch.tensor([logits]), 2.0)
    assert torch.allclose(got, torch.tensor([expected]), atol=1e-6)


def test_cloze_loss_by_hand():
    scores = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    got = cloze_loss(scores, torch.tensor([0, 0]))
    expected = [-math.log(math.exp(2) / (math.exp(2) + 1)), -math.log(1 / (1 + math.e))]
    assert torch.allclose(got, torch.tensor(expected), atol=1e-6)


def test_distillation_loss_by_hand():
    # one sequence of 3 tokens, vocab 2, hidden 2; last position padded
    s_logits = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]]])
    t_logits = torch.tensor([[[0.0, 1.0], [1.0, 1.0], [9.0, 0.0]]])
    s_h = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [3.0, 3.0]]])
    t_h = torch.tensor([[[0.0, 1.0], [1.0, 1.0], [1.0, 0.0]]])
    ids = torch.tensor([[0, 1, 1]])
    mask = torch.tensor([[1, 1, 0]])
    total, parts = distillation_loss(s_logits, t_logits, s_h, t_h, ids, mask, 2.0, 5.0, 2.0, 1.0)
    kd = 4 * (_kl(_softmax([0, 1], 2), _softmax([1, 0], 2)) + _kl(_softmax([1, 1], 2), _softmax([0, 2], 2))) / 2
    lm = -math.log(_softmax([1, 0], 1)[1])           # position 0 predicts token 1
    cos = (1 - 0.0 + 1 - 1.0) / 2                      # orthogonal, then identical
    assert math.isclose(parts["kd"].item(), kd, rel_tol=1e-5)
    assert math.isclose(parts["lm"].item(), lm, rel_tol=1e-5)
    assert math.isclose(parts["cos"].item(), cos, abs_tol=1e-6)
    assert math.isclose(total.item(), 5 * kd + 2 * lm + cos, rel_tol=1e-5)


def test_transfer_loss_mix_by_hand():
    z_t_p, z_s_p = torch.tensor([[1.0, 0.0, 2.0]]), torch.tensor([[0.0, 1.0, 1.0]])
    z_s, z_t = torch.tensor([[0.5, 0.5, 0.0]]), torch.tensor([[0.0, 0.0, 1.0]])
    l1 = 4 * _kl(_softmax([0, 1, 1], 2), _softmax([1, 0, 2], 2))
    l2 = 4 * _kl(_softmax([-0.5, 0.5, 1], 2), _softmax([1, 0, 1], 2))
    for alpha in (0.0, 0.3, 1.0):
        got = transfer_loss(z_t_p, z_s_p, z_s, z_t, alpha, 2.0)
        assert math.isclose(got.item(), (1 - alpha) * l1 + alpha * l2, rel_tol=1e-5)


def test_transfer_loss_zero_when_models_and_prompts_match():
    z_p, z = torch.randn(4, 10), torch.randn(4, 10)
    assert torch.allclose(transfer_loss(z_p, z_p, z, z, 0.5), torch.zeros(4), atol=1e-6)


def test_inference_time_logits():
    got = inference_time_logits(torch.tensor([1.0]), torch.tensor([3.0]), torch.tensor([2.0]))
    assert got.item() == 2.0


def test_hidden_state_loss_by_hand():
    from engine.losses import hidden_state_loss
    s = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    t = torch.tensor([[[1.0, 0.0], [2.0, 0.0]]])
    total, parts = hidden_state_loss(s, t, w_mse=10.0, w_cos=1.0)
    # MSE = (0 + 0 + 4 + 4) / 4 = 2; cosines 1 and 0 → mean(1 − cos) = 0.5
    assert parts["mse"].item() == pytest.approx(2.0) and parts["cos"].item() == pytest.approx(0.5)
    assert total.item() == pytest.approx(20.5)


def test_weighted_hidden_state_loss_is_the_weighted_mean_over_positions():
    from engine.losses import hidden_state_loss
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 8, generator=g), torch.randn(2, 5, 8, generator=g)
    plain, _ = hidden_state_loss(s, t)
    ones, _ = hidden_state_loss(s, t, weights=torch.ones(2, 5))
    assert torch.allclose(plain, ones, atol=1e-5)  # float sums in another order: equal up to rounding
    only = torch.zeros(2, 5)
    only[1, 3] = 1.0
    picked, _ = hidden_state_loss(s, t, weights=only)
    one, _ = hidden_state_loss(s[1:, 3:4], t[1:, 3:4])
    assert torch.allclose(picked, one, atol=1e-5)


def test_cue_positions_mark_where_the_label_word_comes_next():
    from engine.distill import cue_positions, pack
    from engine.tiny import build_tokenizer
    tok = build_tokenizer()
    rows = pack(tok, ["the movie was great It was", "a dull film It was"] * 4, 8)
    marks = cue_positions(tok, "{text} It was", rows)
    cue = tok(" It was", add_special_tokens=False).input_ids
    k = len(cue)
    expected = [[i >= k - 1 and row[i - k + 1:i + 1] == cue for i in range(len(row))] for row in rows.tolist()]
    assert marks.tolist() == expected and marks.any()  # within a row: each row is its own sequence
    assert not cue_positions(tok, "{text}", rows).any()


def test_score_is_accuracy_and_mean_cloze_loss_by_hand():
    from engine.data.tasks import Examples
    from engine.evaluate import score
    from engine.verbalizer import Verbalizer
    # vocabulary of 4; class 0 reads token 1, class 1 reads token 2; the logits depend on the first input id
    verbalizer = Verbalizer(words=[["a"], ["b"]], token_ids=[[1], [2]])
    table = {5: [0.0, 2.0, 0.0, 9.0], 6: [0.0, 0.0, 1.0, 9.0], 7: [0.0, 3.0, 0.0, 9.0]}
    examples = Examples(input_ids=[[5], [6, 3], [7]], labels=[0, 1, 1])
    fn = lambda batch: torch.tensor([table[int(row[0])] for row in batch["input_ids"]])  # noqa: E731
    acc, loss = score(fn, examples, verbalizer, batch_size=2, pad_id=0, device="cpu")
    by_hand = [-math.log(_softmax([2.0, 0.0], 1)[0]), -math.log(_softmax([0.0, 1.0], 1)[1]),
               -math.log(_softmax([3.0, 0.0], 1)[1])]
    assert acc == pytest.approx(2 / 3)
    assert loss == pytest.approx(sum(by_hand) / 3, rel=1e-6)  # float32 logits: agrees to ~7 digits


def test_scores_that_are_not_finite_are_refused_not_counted():
    """nan scores still have an argmax (class 0 here, right for the first example): an accuracy from them
    would mean nothing. A -inf logit for a token that is no label word does not reach the scores."""
    from engine.data.tasks import Examples
    from engine.errors import PostError
    from engine.evaluate import score
    from engine.verbalizer import Verbalizer
    verbalizer = Verbalizer(words=[["a"], ["b"]], token_ids=[[1], [2]])
    examples = Examples(input_ids=[[5], [6]], labels=[0, 0])
    masked = lambda batch: torch.tensor([[0.0, 1.0, 1.0, -math.inf]] * len(batch["input_ids"]))  # noqa: E731
    scored = score(masked, examples, verbalizer, batch_size=2, pad_id=0, device="cpu")
    assert scored == (1.0, pytest.approx(math.log(2)))  # a tie: argmax is class 0
    for bad in (math.nan, math.inf):
        blown = lambda batch, bad=bad: torch.full((len(batch["input_ids"]), 4), bad)  # noqa: E731
        with pytest.raises(PostError, match="inf or nan, so no accuracy is reported"):
            score(blown, examples, verbalizer, batch_size=2, pad_id=0, device="cpu")


def test_alpha_select_breaks_accuracy_ties_by_validation_loss():
    from engine.alpha import best
    assert best({"output": (0.70, 0.40), "post": (0.75, 0.60), "shift": (0.75, 0.55)}) == "shift"
    assert best({"output": (0.80, 0.90), "post": (0.75, 0.10), "shift": (0.75, 0.55)}) == "output"  # accuracy first
    assert best({"output": (0.75, 0.50), "post": (0.75, 0.50), "shift": (0.70, 0.10)}) == "post"  # a full tie
    assert best({"post": (0.75, float("nan")), "shift": (0.75, 0.90)}) == "shift"  # a NaN loss never wins a tie
    assert best({"shift": (0.75, 0.90), "post": (0.75, float("nan"))}) == "shift"


def test_applied_shift_loss_by_hand():
    # "applied": KL from the inference-time output z_t + (z_s_p − z_s) to the large prompted output
    z_t_p, z_s_p = torch.tensor([[1.0, 0.0, 2.0]]), torch.tensor([[0.0, 1.0, 1.0]])
    z_s, z_t = torch.tensor([[0.5, 0.5, 0.0]]), torch.tensor([[0.0, 0.0, 1.0]])
    l1 = 4 * _kl(_softmax([0, 1, 1], 2), _softmax([1, 0, 2], 2))
    l2 = 4 * _kl(_softmax([-0.5, 0.5, 2], 2), _softmax([1, 0, 2], 2))
    for alpha in (0.0, 0.3, 1.0):
        got = transfer_loss(z_t_p, z_s_p, z_s, z_t, alpha, 2.0, shift="applied")
        assert math.isclose(got.item(), (1 - alpha) * l1 + alpha * l2, rel_tol=1e-5)
    paper = transfer_loss(z_t_p, z_s_p, z_s, z_t, 1.0, 2.0, shift="paper")
    assert not math.isclose(paper.item(), l2, rel_tol=1e-3)  # the two weigh the same error differently


def test_both_shift_losses_vanish_where_the_large_change_is_the_small_one():
    g = torch.Generator().manual_seed(0)
    z_s, z_t, change = (torch.randn(4, 10, generator=g) for _ in range(3))
    z_t_p = z_t + change + 3.0  # a constant offset per row changes no softmax
    for shift in ("paper", "applied"):
        got = transfer_loss(z_t_p, z_s + change, z_s, z_t, 1.0, 2.0, shift=shift)
        assert torch.allclose(got, torch.zeros(4), atol=1e-5)
    with pytest.raises(ValueError):
        transfer_loss(z_t_p, z_s, z_s, z_t, 1.0, 2.0, shift="other")
