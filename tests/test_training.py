"""The training loop: masking, global normalisation, resume, non-finite losses."""

import json

import pytest
import torch

from dcod.config import DCODParams, StudentConfig, TrainConfig
from dcod.data import collate
from dcod.methods import Cost, StepContext, build_method
from dcod.models import build_tiny_llama
from dcod.toy.teacher import ToyTeacher
from dcod.toy.world import WorldConfig, build_world
from dcod.training import NonFiniteLossError, Trainer

TINY = StudentConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def traces(toy_tokenizer):
    world = build_world(WorldConfig(n_train=48, n_validation=1, n_id=1, n_long=1, n_retention=1, n_pretrain=1,
                                    n_pretrain_reversal=1))
    teacher = ToyTeacher(toy_tokenizer)
    from dcod.generation import SamplingParams

    prompts = [toy_tokenizer(r["question"])["input_ids"] for r in world["train"]]
    out = []
    for g in teacher.generate(prompts, SamplingParams(max_new_tokens=200, top_k_logprobs=4, seed=3)):
        out.append({"prompt_ids": g.prompt_ids, "completion_ids": g.token_ids, "teacher_logprobs": g.logprobs,
                    "topk_ids": g.topk_ids, "topk_logprobs": g.topk_logprobs})
    return out


def _trainer(tmp_path, tokenizer, traces, method="sft", params=None, steps=4, stop_after=None, **train):
    cfg = TrainConfig(steps=steps, batch_size=8, lr=3e-3, warmup_steps=1, checkpoint_every=2, **train)
    model = build_tiny_llama(TINY, tokenizer, seed=0)
    cost = Cost()
    ctx = StepContext(tokenizer=tokenizer, traces=traces, batch_size=cfg.batch_size, seed=0)
    return Trainer(model, tokenizer, build_method(method, params, ctx, cost, steps), cfg, tmp_path, cost=cost,
                   seed=0, progress=False, stop_after=stop_after)


def test_prompt_tokens_are_never_trained(toy_tokenizer, traces):
    batch = collate(traces[:4], toy_tokenizer.pad_token_id)
    for row, example in enumerate(traces[:4]):
        mask = batch["loss_mask"][row]
        supervised = batch["targets"][row][mask].tolist()
        assert supervised == list(example["completion_ids"])  # exactly the completion (eos included)
        assert not mask[: len(example["prompt_ids"]) - 1].any()
        teacher = batch["teacher_logprobs"][row][mask]
        assert torch.allclose(teacher, torch.tensor(example["teacher_logprobs"], dtype=torch.float32))


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
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in open(tmp_path / "cut" / "train_log.jsonl")]
    assert steps == [1, 2, 3, 4, 5, 6]  # the log was rewound to the checkpoint, no step twice


@pytest.mark.parametrize("method,params", [("sft", None), ("dcod", DCODParams(beta=None, ess_target=0.5)),
                                           ("dcod", DCODParams(granularity="prefix", discount=0.9, beta=2.0))])
def test_gradient_accumulation_leaves_the_step_unchanged(toy_tokenizer, traces, tmp_path, method, params):
    """DCOD weights are normalised over the whole optimiser batch, not per micro-batch."""
    one = _trainer(tmp_path / "one", toy_tokenizer, traces, method, params, steps=1)
    four = _trainer(tmp_path / "four", toy_tokenizer, traces, method, params, steps=1, micro_batch_size=2)
    assert four.accumulation == 4
    record_one, record_four = one.train_step(0), four.train_step(0)
    a, b = _final_weights(one.model), _final_weights(four.model)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=1e-5), key
    assert record_one["loss"] == pytest.approx(record_four["loss"], rel=1e-5)
    if method == "dcod":
        assert record_one["beta"] == pytest.approx(record_four["beta"], rel=1e-4)


def test_dcod_logs_its_diagnostics(toy_tokenizer, traces, tmp_path):
    trainer = _trainer(tmp_path, toy_tokenizer, traces, "dcod", DCODParams(), steps=2)
    trainer.run()
    record = json.loads(open(tmp_path / "train_log.jsonl").readline())
    for key in ("beta", "ess_fraction", "clip_fraction", "weight_entropy", "max_weight", "mean_log_ratio"):
        assert key in record
    assert record["ess_fraction"] >= 0.5 - 1e-6


def test_non_finite_loss_stops_with_step_and_checkpoint(toy_tokenizer, traces, tmp_path):
    trainer = _trainer(tmp_path, toy_tokenizer, traces, steps=4)
    original = trainer.method.token_losses

    def poisoned(logits, batch):
        return original(logits, batch) * float("nan")

    trainer.method.token_losses = poisoned
    with pytest.raises(NonFiniteLossError, match="at step 0.*last good checkpoint"):
        trainer.run()
