"""DCOD's token- and step-level readings and the ess_floor tempering rule (docs/method.md, steps 2 and 4):
hand-derived cases, the limits (β = 0 is SFT), and token-level weighting with reference none at β = 1 is
DFT's weighting up to normalisation."""

import pytest
import torch

from dcod.config import parse_experiment
from dcod.methods import resolve
from dcod.objectives import (
    choose_beta,
    dcod_exact_tempering,
    dcod_log_ratios,
    dcod_scores,
    dcod_step_ids,
    dcod_weights,
    dft_loss,
    ess_fraction,
    nll_loss,
    target_logprobs,
)

from test_dcod_weights import B, T, make_batch, sft_loss

SEPARATOR = 0  # the id that ends a step in these hand-made batches


def test_step_ids_number_steps_from_zero_and_include_the_separator():
    targets = torch.tensor([[5, 3, 0, 4, 0, 7, 9], [0, 2, 2, 2, 1, 1, 1]])
    mask = torch.tensor([[0, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    steps = dcod_step_ids(targets, mask, torch.tensor([SEPARATOR]))
    # row 0: tokens 1-2 (ending with the separator) are step 0, 3-4 step 1, 5 (no separator after) step 2
    assert steps.tolist() == [[-1, 0, 0, 1, 1, 2, -1], [0, 1, 1, 1, -1, -1, -1]]


def test_step_scores_and_weights_by_hand():
    ratios = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [0.5, -0.5, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    steps = torch.tensor([[0, 0, 0, 1, 1], [0, 0, -1, -1, -1]])
    scores = dcod_scores(ratios, mask, "step", step_ids=steps)
    assert scores.tolist() == [[6.0, 6.0, 6.0, 9.0, 9.0], [0.0, 0.0, 0.0, 0.0, 0.0]]
    weights, diagnostics = dcod_weights(scores, mask, "step", beta=1.0, units=steps)
    # three steps (units) of 3, 2 and 2 tokens: w ∝ (e^6, e^9, e^0), normalised to token-mean 1 over 7 tokens
    raw = torch.tensor([6.0, 9.0, 0.0], dtype=torch.float64).exp()
    unit = raw * 7 / (raw * torch.tensor([3.0, 2.0, 2.0], dtype=torch.float64)).sum()
    expected = torch.tensor([[unit[0]] * 3 + [unit[1]] * 2, [unit[2]] * 2 + [0.0] * 3], dtype=torch.float64)
    torch.testing.assert_close(weights, expected.float())
    # the ESS counts the three steps, not the seven tokens
    assert diagnostics["ess_fraction"] == pytest.approx(ess_fraction(unit))


def test_token_scores_are_the_ratios_and_units_are_tokens():
    _, _, mask, teacher = make_batch(3)
    ratios = torch.where(mask, torch.randn(B, T), torch.zeros(B, T))
    scores = dcod_scores(ratios, mask, "token")
    assert torch.equal(scores, ratios)
    weights, diagnostics = dcod_weights(scores, mask, "token", beta=2.0)
    unit = torch.exp(2.0 * ratios[mask].double())
    unit = unit / unit.mean()
    torch.testing.assert_close(weights[mask], unit.float())
    assert diagnostics["ess_fraction"] == pytest.approx(ess_fraction(unit))


@pytest.mark.parametrize("granularity", ["token", "step"])
@pytest.mark.parametrize("beta", [0.0, "ess_floor_at_ess_1"])
def test_beta_zero_is_exactly_sft(granularity, beta):
    logits, targets, mask, teacher = make_batch(0)
    ratios = dcod_log_ratios(target_logprobs(logits, targets), teacher, mask, "teacher")
    steps = dcod_step_ids(targets, mask, torch.tensor([SEPARATOR, 1]))
    scores = dcod_scores(ratios, mask, granularity, step_ids=steps)
    if beta == 0.0:
        weights, _ = dcod_weights(scores, mask, granularity, beta=0.0, units=steps)
    else:  # an ESS target of 1 admits only β = 0
        weights, diagnostics = dcod_weights(scores, mask, granularity, ess_target=1.0, beta_max=1.0, units=steps)
        assert diagnostics["beta"] < 1e-6  # the bisection's resolution
    torch.testing.assert_close(weights, mask.float(), rtol=0, atol=1e-6)
    torch.testing.assert_close(sft_loss(logits, targets, mask, weights), sft_loss(logits, targets, mask))


def test_token_level_reference_none_at_beta_one_is_dft_up_to_normalisation():
    """w_t = p_θ(y_t) / mean p: DCOD's loss is DFT's (NLL × sg(p)) divided by the batch's mean p."""
    logits, targets, mask, _ = make_batch(4)
    student = target_logprobs(logits, targets)
    ratios = dcod_log_ratios(student, None, mask, "none")
    weights, _ = dcod_weights(dcod_scores(ratios, mask, "token"), mask, "token", beta=1.0)
    probs = student.detach().exp()
    mean_prob = probs[mask].double().mean()
    torch.testing.assert_close(weights[mask].double() * mean_prob, probs[mask].double(), rtol=1e-6, atol=1e-7)
    dcod_loss = (weights * nll_loss(logits, targets) * mask).sum()
    dft = (dft_loss(logits, targets) * mask).sum()
    torch.testing.assert_close(dcod_loss * mean_prob.float(), dft, rtol=1e-5, atol=1e-6)


def test_ess_floor_keeps_beta_one_when_the_untempered_ess_meets_the_target():
    scores = torch.tensor([0.0, 0.1, -0.1, 0.05], dtype=torch.float64)  # mild ratios: ESS(1) ≈ 1
    assert ess_fraction(torch.exp(scores)) >= 0.5
    assert choose_beta(scores, 0.5, 1.0) == 1.0


def test_ess_floor_tempers_below_one_to_meet_the_target():
    scores = torch.tensor([0.0, 8.0, -3.0, 1.0, 2.0], dtype=torch.float64)  # ESS(1) far below 0.5
    assert ess_fraction(torch.exp(scores - scores.max())) < 0.5
    beta = choose_beta(scores, 0.5, 1.0)
    assert 0.0 < beta < 1.0
    assert ess_fraction(torch.exp(beta * (scores - scores.max()))) == pytest.approx(0.5, abs=1e-6)


def _dcod(params):
    experiment = parse_experiment("x", {"method": "dcod", "params": params}, "experiments/x/config.yaml")
    return resolve(experiment)[1]


def test_ess_floor_tempers_the_summed_sequence_log_ratio():
    """beta: ess_floor reads the whole sequence's log-ratio (the sum), and bisects β in [0, 1]."""
    params = _dcod({"granularity": "sequence", "beta": "ess_floor", "ess_target": 0.5})
    assert params.tempering == (None, 1.0)
    ratios = torch.tensor([[0.1, 0.1, 0.1, 0.1], [0.5, 0.5, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    assert dcod_scores(ratios, mask, "sequence", sequence_reduction="sum")[:, 0].tolist() == pytest.approx([0.4, 1.0])
    assert dcod_scores(ratios, mask, "sequence")[:, 0].tolist() == pytest.approx([0.1, 0.5])
    beta, _ = dcod_exact_tempering(dcod_scores(ratios * 20, mask, "sequence", sequence_reduction="sum"), mask,
                                   "sequence", beta=None, ess_target=0.9, beta_max=1.0)
    assert 0.0 < beta < 1.0


def test_the_dcod_method_wires_step_units_through_scores():
    """unit_scores returns the step of every token as Scores.units, from the tokenizer's separator ids."""
    from types import SimpleNamespace

    from dcod.methods.base import Cost
    from dcod.methods.dcod import DCOD

    class CharTokenizer:
        vocab = ["a", ";", "b", "\n", "c"]

        def __len__(self):
            return len(self.vocab)

        def decode(self, ids):
            return "".join(self.vocab[i] for i in ids)

    ctx = SimpleNamespace(tokenizer=CharTokenizer(), traces=[], batch_size=1, seed=0)
    method = DCOD(_dcod({"granularity": "step", "beta": 1.0, "clip": None}), ctx, Cost())
    targets = torch.tensor([[0, 2, 1, 4, 3, 0]])
    mask = torch.ones(1, 6, dtype=torch.bool)
    logits = torch.zeros(1, 6, 5)
    batch = {"targets": targets, "loss_mask": mask, "reference_logprobs": torch.full((1, 6), -1.0)}
    scores = method.unit_scores(logits, batch)
    assert scores.units.tolist() == [[0, 0, 0, 1, 1, 2]]
    weights, diagnostics = method.weights(scores.values, mask, units=scores.units)
    assert weights.shape == (1, 6) and torch.isfinite(weights).all()


def test_no_separator_in_the_vocabulary_is_refused():
    from types import SimpleNamespace

    from dcod.methods.base import Cost
    from dcod.methods.dcod import DCOD

    class Letters:
        def __len__(self):
            return 3

        def decode(self, ids):
            return "".join("abc"[i] for i in ids)

    method = DCOD(_dcod({"granularity": "step", "step_separators": ["|"]}),
                  SimpleNamespace(tokenizer=Letters(), traces=[]), Cost())
    with pytest.raises(ValueError, match=r"step_separators \['\|'\]: no token"):
        method._separator_ids()
