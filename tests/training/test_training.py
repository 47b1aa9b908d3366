"""The training loop: masking, global normalisation, resume, non-finite losses."""

import json

import pytest
import torch

from dcod.config import TrainConfig
from dcod.data import collate
from dcod.methods import Cost, StepContext, build_method
from dcod.methods.dcod import DCODParams
from dcod.models import build_tiny_llama
from dcod.training import NonFiniteLossError, Trainer

from conftest import EPS32, assert_gradients_close, assert_same_adam_step
from tiny_training import TINY, _parameters, _recording, traces  # noqa: F401  (traces: a fixture)


def _trainer(tmp_path, tokenizer, traces, method="sft", params=None, steps=4, stop_after=None, **train):
    cfg = TrainConfig(steps=steps, batch_size=8, lr=3e-3, warmup_steps=1, checkpoint_every=2, **train)
    model = build_tiny_llama(TINY, tokenizer, seed=0)
    cost = Cost()
    ctx = StepContext(tokenizer=tokenizer, traces=traces, batch_size=cfg.batch_size, seed=0, total_steps=steps)
    return Trainer(model, tokenizer, build_method(method, params, ctx, cost), cfg, tmp_path, cost=cost,
                   seed=0, progress=False, stop_after=stop_after)


def test_prompt_tokens_are_never_trained(toy_tokenizer, traces):
    batch = collate(traces[:4], toy_tokenizer.pad_token_id)
    for row, example in enumerate(traces[:4]):
        mask = batch["loss_mask"][row]
        supervised = batch["targets"][row][mask].tolist()
        assert supervised == list(example["completion_ids"])  # exactly the completion (eos included)
        assert not mask[: len(example["prompt_ids"]) - 1].any()
        teacher = batch["teacher_logprobs"][row][mask]
        # exact: collate copies the stored values into a float32 tensor, no arithmetic
        assert torch.equal(teacher, torch.tensor(example["teacher_logprobs"], dtype=torch.float32))


def test_loss_gradient_ignores_prompt_tokens(toy_tokenizer, traces, tmp_path):
    trainer = _trainer(tmp_path, toy_tokenizer, traces)
    batch = collate(traces[:2], toy_tokenizer.pad_token_id)
    embeddings = trainer.model.get_input_embeddings()
    logits = trainer.model(inputs_embeds=embeddings(batch["input_ids"])).logits[:, :-1]
    per_token = trainer.method.token_losses(logits, batch)
    loss = (per_token * batch["loss_mask"]).sum()
    logits.retain_grad()
    loss.backward()
    assert torch.all(logits.grad[~batch["loss_mask"]] == 0)


def _final_weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_resume_after_interruption_gives_identical_weights(toy_tokenizer, traces, tmp_path):
    full = _trainer(tmp_path / "full", toy_tokenizer, traces, steps=6)
    full.run()
    interrupted = _trainer(tmp_path / "cut", toy_tokenizer, traces, steps=6, stop_after=3)
    with pytest.raises(KeyboardInterrupt):
        interrupted.run()
    resumed = _trainer(tmp_path / "cut", toy_tokenizer, traces, steps=6)
    resumed.run()
    assert resumed.start_step == 2  # last checkpoint before the interruption
    a, b = _final_weights(full.model), _final_weights(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)  # exact: the same ops on the same inputs and kernels
    steps = [json.loads(line)["step"] for line in open(tmp_path / "cut" / "train_log.jsonl")]
    assert steps == [1, 2, 3, 4, 5, 6]  # the log was rewound to the checkpoint, no step twice


@pytest.mark.parametrize("method,params", [("sft", None), ("dcod", DCODParams(beta=None, ess_target=0.5)),
                                           ("dcod", DCODParams(granularity="prefix", discount=0.9, beta=2.0))])
def test_gradient_accumulation_leaves_the_step_unchanged(toy_tokenizer, traces, tmp_path, method, params):
    """DCOD weights are normalised over the whole optimiser batch, not per micro-batch.

    The two trainers compute the same step in a different order (4 micro-batches of 2 sequences, a
    separate scoring pass, vs one batch of 8), so float32 rounding differs and the comparison has a
    tolerance, derived here from the size of the step rather than measured on one CPU.
    """
    one = _trainer(tmp_path / "one", toy_tokenizer, traces, method, params, steps=1)
    four = _trainer(tmp_path / "four", toy_tokenizer, traces, method, params, steps=1, micro_batch_size=2)
    assert four.accumulation == 4
    seen_one, seen_four = _recording(one), _recording(four)
    record_one, record_four = one.train_step(0), four.train_step(0)
    assert seen_one["steps"] == seen_four["steps"] == 1  # one optimiser step per optimiser batch
    assert seen_one["lr"] == seen_four["lr"] and record_one["tokens"] == record_four["tokens"]
    # Each gradient entry and the loss are float32 sums over the batch's N supervised tokens (N = 581
    # here), formed in another order: a float32 sum of N terms is off by at most N eps of their scale,
    # 581 x 1.19e-7 = 6.9e-5. Measured on three CPU kernel paths (AVX-512, AVX2, none): gradients within
    # 2.6e-6 of each tensor's largest entry for DCOD with a searched beta (exp(beta s) amplifies score
    # rounding), 2.5e-7 otherwise; the loss within 1.4e-7. Normalising the DCOD weights per micro-batch
    # instead moves the gradients by 2.4e-2 to 7.7e-1 of that scale and the loss by 5.9e-4 to 3.5e-3, so
    # both checks still tell that bug apart (by > 300x and > 8x).
    sum_rtol = record_one["tokens"] * EPS32
    assert_gradients_close(seen_four["grads"], seen_one["grads"], rtol=sum_rtol)
    assert record_one["loss"] == pytest.approx(record_four["loss"], rel=sum_rtol, abs=0)  # no cancellation: w, nll >= 0
    # The weights: one AdamW step from the same start, which amplifies the rounding of gradients near
    # Adam's eps (a 1.85e-6 difference from a 3.7e-10 gradient difference failed a flat atol=1e-6 on an
    # AVX-512 CPU): bounded entry by entry from the two gradients, see adam_first_step_bound.
    assert_same_adam_step(_parameters(one.model), _parameters(four.model), seen_one["grads"], seen_four["grads"],
                          lr=seen_one["lr"], adam_eps=seen_one["eps"])
    if method == "dcod":
        # beta solves ESS(beta s) = 1/2, so beta x spread(s) ~ 1 and d(beta)/beta ~ d(spread)/spread: the toy
        # scores are -3.5 +- 0.019 and one float32 ulp of s (2.4e-7) is 1.3e-5 of that spread; 1e-4 allows
        # ~8 ulps (measured: <= 1.1e-6). A per-micro-batch beta is off by O(1) (40 vs 100 here).
        assert record_one["beta"] == pytest.approx(record_four["beta"], rel=1e-4)


def test_dcod_logs_its_diagnostics(toy_tokenizer, traces, tmp_path):
    trainer = _trainer(tmp_path, toy_tokenizer, traces, "dcod", DCODParams(), steps=2)
    trainer.run()
    record = json.loads(open(tmp_path / "train_log.jsonl").readline())
    for key in ("beta", "ess_fraction", "clip_fraction", "weight_entropy", "max_weight", "mean_log_ratio"):
        assert key in record
    # choose_beta keeps ESS >= target by construction; rescaling the weights (float64) moves ESS by ~1e-16
    assert record["ess_fraction"] >= 0.5 - 1e-6


def test_non_finite_loss_stops_with_step_and_checkpoint(toy_tokenizer, traces, tmp_path):
    trainer = _trainer(tmp_path, toy_tokenizer, traces, steps=4)
    original = trainer.method.token_losses

    def poisoned(logits, batch):
        return original(logits, batch) * float("nan")

    trainer.method.token_losses = poisoned
    with pytest.raises(NonFiniteLossError, match="at step 0.*last good checkpoint"):
        trainer.run()
