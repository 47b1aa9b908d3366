"""Losses from the LM head read in chunks (objectives.ChunkedLMHead) and padding-free batches equal the
full-logits, padded path: loss and gradients (docs/benchmarks.md; tolerances per tests/conftest.py)."""

import math
import tempfile

import pytest
import torch

from dcod.config import StudentConfig, TrainConfig
from dcod.data import collate
from dcod.methods import Cost, StepContext, build_method
from dcod.methods.dcod import DCODParams
from dcod.models import build_tiny_llama
from dcod.objectives import ChunkedLMHead, kd_topk_loss, nll_loss, skew_kl_topk_loss, target_logprobs
from dcod.training import Trainer

from conftest import EPS32, assert_gradients_close

TINY = StudentConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)


def _head_inputs(dtype, n=3, t=11, h=16, v=50, k=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, t, h, generator=generator, dtype=dtype).requires_grad_(True)
    weight = torch.randn(v, h, generator=generator, dtype=dtype).requires_grad_(True)
    targets = torch.randint(v, (n, t), generator=generator)
    topk = torch.stack([torch.randperm(v, generator=generator)[:k] for _ in range(n * t)]).reshape(n, t, k)
    teacher = torch.log_softmax(torch.randn(n, t, k + 1, generator=generator), -1)[..., :k]
    return hidden, weight, targets, topk, teacher


def test_chunked_gather_matches_log_softmax_in_float64():
    """Exact maths, checked where rounding is ~1e-16: log-probs and gradients of an arbitrary function
    of them equal the float64 log_softmax's (chunk 4 splits 33 positions unevenly)."""
    hidden, weight, targets, topk, _ = _head_inputs(torch.float64)
    ids = torch.cat([targets.unsqueeze(-1), topk], -1)
    coefficients = torch.randn(ids.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    reference = torch.log_softmax(hidden @ weight.t(), -1).gather(-1, ids)
    chunked = ChunkedLMHead(hidden, weight, 4).gather_logprobs(ids)
    torch.testing.assert_close(chunked, reference, rtol=0, atol=1e-12)
    grads_ref = torch.autograd.grad((reference * coefficients).sum(), (hidden, weight))
    grads = torch.autograd.grad((chunked * coefficients).sum(), (hidden, weight))
    for got, expected in zip(grads, grads_ref):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12 * float(expected.abs().max()))
    assert torch.autograd.gradcheck(lambda h, w: ChunkedLMHead(h, w, 5).gather_logprobs(ids), (hidden, weight))


@pytest.mark.parametrize("loss", ["nll", "kd", "skew_kd"])
def test_chunked_losses_match_full_logits_in_float32(loss):
    """float32, as in training: the two paths compute the same logits row by row and differ in how the
    matmuls are blocked and in the order the head's gradient sums the N positions' contributions.
    A logit is a dot product of H terms (error <= H eps |h||w|), a log-prob moves by at most twice the
    logits' error plus the V-term sum inside logsumexp (V eps), and the loss sums N of them (N eps of
    their total); gradient entries are N-term sums: N eps of the tensor's largest entry."""
    hidden, weight, targets, topk, teacher = _head_inputs(torch.float32)
    n_pos, width, vocab = targets.numel(), hidden.shape[-1], weight.shape[0]

    def total(logits):
        if loss == "nll":
            return nll_loss(logits, targets).sum()
        if loss == "kd":
            return kd_topk_loss(logits, topk, teacher).sum()
        return skew_kl_topk_loss(logits, topk, teacher, alpha=0.1).sum()

    full = total(hidden @ weight.t())
    grads_full = torch.autograd.grad(full, (hidden, weight))
    chunked = total(ChunkedLMHead(hidden, weight, 4))
    grads = torch.autograd.grad(chunked, (hidden, weight))
    scale = float(hidden.detach().abs().max() * weight.detach().abs().max())
    per_token = (2 * width * scale + vocab) * EPS32
    atol = n_pos * per_token + n_pos * EPS32 * float(full.detach().abs())
    assert abs(float(chunked) - float(full)) <= atol
    assert_gradients_close({"h": grads[0], "w": grads[1]}, {"h": grads_full[0], "w": grads_full[1]},
                           rtol=n_pos * EPS32)


def test_detached_scores_share_the_loss_pass():
    """A weighted method reads its scores through detach() and its loss next: one pass over the head."""
    hidden, weight, targets, _, _ = _head_inputs(torch.float32)
    head = ChunkedLMHead(hidden, weight, 8)
    calls = []
    original = ChunkedLMHead.gather_logprobs.__globals__["_ChunkedGatherLogprobs"].forward

    def counting(ctx, *args):
        calls.append(1)
        return original(ctx, *args)

    cls = ChunkedLMHead.gather_logprobs.__globals__["_ChunkedGatherLogprobs"]
    cls.forward = staticmethod(counting)
    try:
        scores = target_logprobs(head.detach(), targets)
        losses = nll_loss(head, targets)
    finally:
        cls.forward = staticmethod(original)
    assert len(calls) == 1 and not scores.requires_grad and losses.requires_grad
    assert torch.equal(scores, -losses.detach())


def _trainer(tokenizer, traces, method, params, **train):
    cfg = TrainConfig(steps=2, batch_size=len(traces), lr=3e-3, warmup_steps=1, checkpoint_every=10**6,
                      trackers=[], **train)
    model = build_tiny_llama(TINY, tokenizer, seed=0)
    ctx = StepContext(tokenizer=tokenizer, traces=traces, batch_size=cfg.batch_size, seed=0, total_steps=2)
    cost = Cost()
    return Trainer(model, tokenizer, build_method(method, params, ctx, cost), cfg, tempfile.mkdtemp(), cost=cost,
                   seed=0, progress=False)


@pytest.fixture(scope="module")
def traces(toy_tokenizer):
    generator = torch.Generator().manual_seed(5)
    vocab = len(toy_tokenizer)
    out = []
    for row in range(6):
        prompt = [toy_tokenizer.bos_token_id] + torch.randint(4, vocab, (3 + row,), generator=generator).tolist()
        completion = torch.randint(4, vocab, (5 + 3 * row,), generator=generator).tolist()
        topk = [torch.randperm(vocab, generator=generator)[:4].tolist() for _ in completion]
        topk_lp = [torch.log_softmax(torch.randn(5, generator=generator), -1)[:4].tolist() for _ in completion]
        teacher_lp = [float(-torch.rand((), generator=generator) * 3) for _ in completion]
        out.append({"prompt_ids": prompt, "completion_ids": completion, "teacher_logprobs": teacher_lp,
                    "topk_ids": topk, "topk_logprobs": topk_lp})
    return out


def _grads_after_step(trainer):
    seen, step = {}, trainer.optimizer.step

    def recording(*args, **kwargs):
        seen.update({n: p.grad.detach().clone() for n, p in trainer.model.named_parameters()})
        return step(*args, **kwargs)

    trainer.optimizer.step = recording
    record = trainer.train_step(0)
    return record, seen


@pytest.mark.parametrize("method,params", [("sft", None), ("kd", None), ("dft", None), ("skew_kd", None),
                                           ("dcod", DCODParams(granularity="prefix", discount=0.9)),
                                           ("iw_sft", None)])
def test_trainer_step_with_chunked_head_equals_full_logits(toy_tokenizer, traces, method, params):
    """One optimiser step of a tiny Llama (tied embeddings: the head's gradient meets the embedding's)
    with the head read 7 positions at a time vs the model's full logits: same loss and gradients, within
    N eps (N-term sums over the supervised tokens, see above) -- DCOD's searched beta multiplies score
    rounding (its exp(beta s)), a few eps, far inside."""
    if method == "iw_sft":
        from dcod.methods.iw_sft import IwSFTParams

        params = IwSFTParams(reference="teacher", normalize=True)
    full = _trainer(toy_tokenizer, traces, method, params, logits_chunk_tokens=0)
    chunked = _trainer(toy_tokenizer, traces, method, params, logits_chunk_tokens=7, logits_chunk_min_vocab=1)
    assert full.head is None and chunked.head is not None
    record_full, grads_full = _grads_after_step(full)
    record_chunked, grads_chunked = _grads_after_step(chunked)
    n = record_full["tokens"]
    assert record_chunked["loss"] == pytest.approx(record_full["loss"], rel=n * EPS32, abs=0)
    assert_gradients_close(grads_chunked, grads_full, rtol=n * EPS32)


def test_toy_vocabulary_keeps_full_logits(toy_tokenizer, traces):
    """The default knobs leave the toy student's small vocabulary on the unchanged full-logits path."""
    trainer = _trainer(toy_tokenizer, traces, "sft", None)
    assert len(toy_tokenizer) < TrainConfig().logits_chunk_min_vocab and trainer.head is None
    batch = collate(traces[:2], toy_tokenizer.pad_token_id)
    assert isinstance(trainer._forward(batch), torch.Tensor)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("chunk", [0, 5])
def test_packed_batch_gives_the_padded_log_probs(toy_tokenizer, traces, attention, chunk):
    """train.packing: one padding-free row with restarting position ids (transformers builds the
    block-diagonal causal mask from them on CPU too) gives each sequence's log-probs of the padded batch.
    Each log-prob is the same computation over the same tokens; attention sums <= L terms in another
    blocking: within (L + H + V) eps of the log-probs' scale, L the longest sequence."""
    padded = _trainer(toy_tokenizer, traces, "sft", None, logits_chunk_tokens=chunk, logits_chunk_min_vocab=1)
    packed = _trainer(toy_tokenizer, traces, "sft", None, logits_chunk_tokens=chunk, logits_chunk_min_vocab=1,
                      packing=True)
    for trainer in (padded, packed):
        trainer.model.config._attn_implementation = attention
    batch = collate(traces, toy_tokenizer.pad_token_id)
    mask = batch["loss_mask"]
    a = target_logprobs(padded._forward(batch), batch["targets"])[mask]
    b = target_logprobs(packed._forward(batch), batch["targets"])[mask]
    width = batch["input_ids"].shape[1] + TINY.hidden_size + len(toy_tokenizer)
    torch.testing.assert_close(b, a, rtol=0, atol=width * EPS32 * float(a.abs().max()))
    # not vacuous: the packed row without its restarting position ids attends across sequences
    packed.cfg = packed.cfg.model_copy(update={"packing": False})
    keep = batch["attention_mask"].bool()
    row = {"input_ids": batch["input_ids"][keep].unsqueeze(0), "attention_mask": keep[keep].long().unsqueeze(0)}
    leaked = target_logprobs(packed._forward(row), row["input_ids"][:, 1:])[0]
    starts = torch.cumsum(keep.sum(-1), 0)[:-1]  # positions whose target begins the next sequence
    flat = torch.nonzero(mask)
    index = torch.cat([torch.zeros(1, dtype=torch.long), starts])[flat[:, 0]] + flat[:, 1]
    assert (leaked[index] - a).abs().max() > 100 * width * EPS32 * float(a.abs().max())
