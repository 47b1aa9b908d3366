"""Pure loss functions over tensors: SFT, offline top-k KD, DFT, GKD's generalised JSD, DistiLLM's skew
KL over the top-k, iw-SFT sequence weights, DCOD weights.

Conventions (docs/architecture.md): every per-token tensor is ``[B, T]`` aligned with the prediction
targets (``logits[:, :-1]`` predict ``input_ids[:, 1:]``), ``mask`` is the bool ``loss_mask``. Losses
are per token and unreduced; the trainer reduces ``sum(weight * loss * mask) / N`` with ``N`` the
number of supervised tokens in the whole optimiser batch. Nothing here touches a model or a config.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

GRANULARITIES = ("prefix", "sequence", "token", "step")
TOKEN_UNITS = ("prefix", "token")  # granularities whose every supervised token carries its own weight
REFERENCES = ("teacher", "initial_student", "none")
SKEW_DIRECTIONS = ("forward", "reverse")


# ----------------------------------------------------------------------------- chunked LM head


class _ChunkedGatherLogprobs(torch.autograd.Function):
    """log softmax(h Wᵀ)[ids] for hidden states h [N,H], head W [V,H], ids [N,M] → [N,M] in float32
    (float64 for float64 inputs),
    computed ``chunk`` rows at a time: neither pass keeps more than one chunk's [chunk, V] logits.

    Forward saves h, W, ids and the per-row logsumexp (N floats). Backward recomputes each chunk's
    logits: with g the incoming gradient [c,M] and p = softmax(z), ∂/∂z = scatter(g at ids) − p Σ_m g_m,
    then ∂h = (∂z) W and ∂W += (∂z)ᵀ h, in the inputs' dtype like the autograd of ``lm_head`` would.
    """

    @staticmethod
    def forward(ctx, hidden, weight, ids, chunk):
        dtype = torch.promote_types(hidden.dtype, torch.float32)  # float32, or float64 for float64 inputs
        out = torch.empty(ids.shape, dtype=dtype, device=hidden.device)
        lse = torch.empty(hidden.shape[0], dtype=dtype, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            rows = slice(start, start + chunk)
            logits = (hidden[rows] @ weight.t()).to(dtype)
            lse[rows] = torch.logsumexp(logits, dim=-1)
            out[rows] = logits.gather(-1, ids[rows]) - lse[rows].unsqueeze(-1)
        ctx.save_for_backward(hidden, weight, ids, lse)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, ids, lse = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight, dtype=lse.dtype) if need_w else None
        grad_out = grad_out.to(lse.dtype)
        for start in range(0, hidden.shape[0], ctx.chunk):
            rows = slice(start, start + ctx.chunk)
            logits = (hidden[rows] @ weight.t()).to(lse.dtype)
            grad_logits = torch.exp(logits - lse[rows].unsqueeze(-1)) * -grad_out[rows].sum(-1, keepdim=True)
            grad_logits.scatter_add_(-1, ids[rows], grad_out[rows])
            _backprop_head_chunk(grad_logits, hidden, weight, rows, grad_h, grad_w)
        return grad_h, grad_w.to(weight.dtype) if need_w else None, None, None


def _backprop_head_chunk(grad_logits, hidden, weight, rows, grad_h, grad_w) -> None:
    """One chunk's ∂h = (∂z) W and ∂W += (∂z)ᵀ h, in the inputs' dtype like the autograd of ``lm_head``
    (``grad_h`` / ``grad_w`` None: that gradient is not needed)."""
    grad_logits = grad_logits.to(hidden.dtype)
    if grad_h is not None:
        grad_h[rows] = grad_logits @ weight
    if grad_w is not None:
        grad_w += grad_logits.t() @ hidden[rows]


class _ChunkedTailLogprob(torch.autograd.Function):
    """log Σ_{v ∉ ids} softmax(h Wᵀ)_v for h [N,H], W [V,H], ids [N,M] (distinct per row) → [N], the
    log-mass outside ``ids``, as logsumexp of the masked logits minus the full logsumexp: exact however
    small the tail (no 1 − Σ p cancellation), ``chunk`` rows at a time like ``_ChunkedGatherLogprobs``.
    With p = softmax(z) and r = softmax of z restricted to the tail: ∂/∂z_v = r_v − p_v (r_v = 0 on ids)."""

    @staticmethod
    def forward(ctx, hidden, weight, ids, chunk):
        dtype = torch.promote_types(hidden.dtype, torch.float32)
        out = torch.empty(hidden.shape[0], dtype=dtype, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            rows = slice(start, start + chunk)
            logits = (hidden[rows] @ weight.t()).to(dtype)
            out[rows] = _tail_logprob(logits, ids[rows])
        ctx.save_for_backward(hidden, weight, ids)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, ids = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dtype = grad_out.dtype
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight, dtype=dtype) if need_w else None
        for start in range(0, hidden.shape[0], ctx.chunk):
            rows = slice(start, start + ctx.chunk)
            logits = (hidden[rows] @ weight.t()).to(dtype)
            masked = logits.scatter(-1, ids[rows], -math.inf)
            live = (out_rows := _tail_logprob(logits, ids[rows])) > TAIL_LOG_FLOOR  # the floor passes no gradient
            tail_softmax = torch.softmax(masked, -1) if ids.shape[-1] < logits.shape[-1] else torch.zeros_like(logits)
            grad = torch.where(live, grad_out[rows], torch.zeros_like(out_rows)).unsqueeze(-1)
            grad_logits = (tail_softmax - torch.softmax(logits, -1)) * grad
            _backprop_head_chunk(grad_logits, hidden, weight, rows, grad_h, grad_w)
        return grad_h, grad_w.to(weight.dtype) if need_w else None, None, None


# The student tail's log-mass never goes below this (e^-200 ~ 1e-87, far below anything float32 logits
# resolve, far above float64's range): a teacher tail of rounding size (top-k summing to 1 - 1e-8) then
# costs q·(log q + 200), not infinity, and K = V (no tail at all) stays finite.
TAIL_LOG_FLOOR = -200.0


def _tail_logprob(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log of the softmax mass outside ``ids`` [..., M] of logits [..., V] → [...]: masked logsumexp,
    floored at ``TAIL_LOG_FLOOR``; with M = V (no token outside) the floor itself, without a graph."""
    if ids.shape[-1] >= logits.shape[-1]:
        return torch.full(logits.shape[:-1], TAIL_LOG_FLOOR, dtype=logits.dtype, device=logits.device)
    tail = torch.logsumexp(logits.scatter(-1, ids, -math.inf), -1) - torch.logsumexp(logits, -1)
    return tail.clamp_min(TAIL_LOG_FLOOR)


class ChunkedLMHead:
    """The student's output at every target position as final hidden states [B,T,H] and the LM head
    weight [V,H], standing in for the logits [B,T,V] that are never materialised (docs/benchmarks.md, "Memory: chunked LM head, packing").

    ``gather_logprobs(ids [B,T,M])`` gives log p_θ(ids) [B,T,M] in float32, ``chunk_tokens`` positions at
    a time in forward and backward (``_ChunkedGatherLogprobs``). Results are cached per ``ids`` tensor, so
    a weighted method's scores (``detach()``) and its loss share one pass over the head. ``logits()``
    materialises the full logits for a loss that needs the whole distribution (on-policy JSD).
    """

    def __init__(self, hidden: torch.Tensor, weight: torch.Tensor, chunk_tokens: int, *, _cache=None,
                 _detached: bool = False):
        if weight.dtype != hidden.dtype:  # mixed precision: bf16 activations, float32 master weights
            weight = weight.to(hidden.dtype)  # as autocast's lm_head would (the cast is differentiable)
        self.hidden, self.weight, self.chunk_tokens = hidden, weight, chunk_tokens
        self._cache = {} if _cache is None else _cache
        self._detached = _detached
        self.shape = (*hidden.shape[:-1], weight.shape[0])

    def detach(self) -> ChunkedLMHead:
        return ChunkedLMHead(self.hidden, self.weight, self.chunk_tokens, _cache=self._cache, _detached=True)

    def gather_logprobs(self, ids: torch.Tensor) -> torch.Tensor:
        """log p_θ(ids) [B,T,M]. With grad enabled the graph is built even when called through
        ``detach()`` (the scores come first, the loss of the same ids next, one pass for both)."""
        key = (ids.data_ptr(), tuple(ids.shape), tuple(ids.stride()))
        graph = torch.is_grad_enabled() and (self.hidden.requires_grad or self.weight.requires_grad)
        hit = self._cache.get(key)
        if hit is None or (graph and not hit[2]):
            flat_ids = ids.reshape(-1, ids.shape[-1])
            hidden = self.hidden.reshape(-1, self.hidden.shape[-1])
            result = _ChunkedGatherLogprobs.apply(hidden, self.weight, flat_ids, self.chunk_tokens)
            hit = self._cache[key] = (ids, result.reshape(ids.shape), graph)  # ids kept: data_ptr not reused
        return hit[1].detach() if self._detached else hit[1]

    def tail_logprob(self, ids: torch.Tensor) -> torch.Tensor:
        """log of p_θ's mass outside ``ids`` [B,T,M] (distinct per position) → [B,T], chunk by chunk."""
        hidden = self.hidden.detach() if self._detached else self.hidden
        weight = self.weight.detach() if self._detached else self.weight
        out = _ChunkedTailLogprob.apply(hidden.reshape(-1, hidden.shape[-1]), weight,
                                        ids.reshape(-1, ids.shape[-1]), self.chunk_tokens)
        return out.reshape(ids.shape[:-1])

    def logits(self) -> torch.Tensor:
        logits = self.hidden @ self.weight.t()
        return logits.detach() if self._detached else logits


# ----------------------------------------------------------------------------- token losses


def target_logprobs(logits: torch.Tensor | ChunkedLMHead, targets: torch.Tensor) -> torch.Tensor:
    """log p_θ(y_t | y_<t) = z_{y_t} − logsumexp(z), in float32. logits [B,T,V], targets [B,T] → [B,T].

    gather − logsumexp instead of log_softmax + gather: autograd then keeps no [B,T,V] output copy.
    A ``ChunkedLMHead`` instead of logits computes the same from the hidden states chunk by chunk.
    """
    if isinstance(logits, ChunkedLMHead):
        return logits.gather_logprobs(targets.unsqueeze(-1)).squeeze(-1)
    logits = logits.float()
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def nll_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """SFT / SeqKD: ℓ_t = −log p_θ(y_t | y_<t). logits [B,T,V], targets [B,T] → [B,T], unreduced."""
    return -target_logprobs(logits, targets)


def dft_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dynamic fine-tuning (Wu et al. 2025): ℓ_t = −sg(p_θ(y_t)) · log p_θ(y_t).

    logits [B,T,V], targets [B,T] → [B,T]: the NLL gradient scaled by the detached token probability.
    """
    logprobs = target_logprobs(logits, targets)
    return -logprobs.detach().exp() * logprobs


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − eˣ) for x ≤ 0, accurate at both ends (Mächler 2012: expm1 near 0, log1p far from it)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def kd_topk_loss(
    logits: torch.Tensor, topk_ids: torch.Tensor, topk_logprobs: torch.Tensor
) -> torch.Tensor:
    """Offline token KD: forward KL(q_T ‖ p_θ) over the teacher's top-k tokens plus one tail bucket.

        ℓ_t = Σ_{k≤K} q_k (log q_k − log p_k) + q_tail (log q_tail − log p_tail),
        q_tail = max(0, 1 − Σ_k q_k),  p_tail = 1 − Σ_k p_θ(topk_ids_k)

    logits [B,T,V], topk_ids [B,T,K] (distinct ids), topk_logprobs [B,T,K] (teacher) → [B,T].
    Terms with q = 0 contribute exactly 0 (0·log 0 = 0), so a one-hot teacher gives the NLL and
    K = V gives the exact forward KL. The teacher tail is log(1 − exp(logsumexp)) of its stored top-k
    (float64); the student tail is the logsumexp of its logits outside the top-k minus the full one,
    exact however small the tail (the form 1 − Σ p_k loses it below float32 eps); with a
    ``ChunkedLMHead`` it is computed chunk by chunk, so no [B,T,V] buffer exists (V is 151k for Qwen).
    """
    teacher_log, student_log = _topk_bucket_logprobs(logits, topk_ids, topk_logprobs)
    return _kl_of_logprobs(teacher_log, student_log).float()


def _topk_bucket_logprobs(
    logits: torch.Tensor, topk_ids: torch.Tensor, topk_logprobs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher (detached) and student log-probs of the K top-k tokens plus one tail bucket.

    logits [B,T,V], topk_ids [B,T,K], topk_logprobs [B,T,K] → two float64 tensors [B,T,K+1]; the last
    entry is the tail: log(1 − Σ_k prob_k) for the teacher (−inf when its top-k holds all its mass up to
    the float32 rounding of K stored log-probs, K·eps), the masked logsumexp for the student, floored at
    ``TAIL_LOG_FLOOR`` (see ``kd_topk_loss``).
    """
    if isinstance(logits, ChunkedLMHead):
        student_topk = logits.gather_logprobs(topk_ids)
        student_tail_log = logits.tail_logprob(topk_ids)
    else:
        logits = logits.float()
        student_topk = logits.gather(-1, topk_ids) - torch.logsumexp(logits, dim=-1, keepdim=True)
        student_tail_log = _tail_logprob(logits, topk_ids)
    teacher_topk = topk_logprobs.detach().double()
    student_topk = student_topk.double()
    student_tail_log = student_tail_log.double()

    teacher_tail_log = _log1mexp(torch.logsumexp(teacher_topk, -1).clamp(max=0.0))  # -inf if no tail
    # a teacher tail within the float32 rounding of its K stored log-probs is rounding, not mass
    rounding = math.log(topk_logprobs.shape[-1] * torch.finfo(torch.float32).eps)
    teacher_tail_log = torch.where(teacher_tail_log > rounding, teacher_tail_log,
                                   torch.full_like(teacher_tail_log, -math.inf))

    teacher_log = torch.cat([teacher_topk, teacher_tail_log.unsqueeze(-1)], dim=-1)  # [B,T,K+1]
    student_log = torch.cat([student_topk, student_tail_log.unsqueeze(-1)], dim=-1)
    return teacher_log, student_log


def _kl_of_logprobs(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) = Σ p (log p − log q) over the last dim, with 0 · log 0 = 0 exactly (p = 0 terms drop)."""
    # A where() on the *inputs* as well as the output: a -inf in the unselected branch would
    # otherwise turn into a NaN gradient.
    has_mass = p_log > -math.inf
    safe_p_log = torch.where(has_mass, p_log, torch.zeros_like(p_log))
    terms = safe_p_log.exp() * (safe_p_log - q_log)
    terms = torch.where(has_mass, terms, torch.zeros_like(terms))
    return terms.sum(-1)


def skew_kl_topk_loss(
    logits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    alpha: float = 0.1,
    direction: str = "forward",
) -> torch.Tensor:
    """DistiLLM's α-skew KL (Ko et al., ICML 2024, arXiv:2402.03898, §3), offline over the stored
    teacher top-k plus one tail bucket — exactly the K+1 buckets of ``kd_topk_loss``.

        forward  (SKL,  default):  ℓ_t = KL(p ‖ α p + (1 − α) q_θ)
        reverse  (SRKL):           ℓ_t = KL(q_θ ‖ α q_θ + (1 − α) p)

    p: teacher, q_θ: student, both over (top-k ids, tail). The mixture is formed in log space,
    log m = logaddexp(log α + log p, log(1 − α) + log q) (for SRKL the roles swap), and the KL is
    summed in float64 like ``kd_topk_loss``; terms with zero mass in the KL's first argument are 0.

    α = 0.1 is DistiLLM's default: ``--skew-alpha`` defaults to 0.1 in the authors' released code
    (github.com/jongwooko/distillm, arguments.py), which every DistiLLM script there keeps, and its
    loss functions mix ``lam·teacher + (1−lam)·student`` (SKL) and ``(1−lam)·teacher + lam·student``
    (SRKL) with that value — the conventions above.

    Properties. Forward at α = 0 is ``kd_topk_loss``. As m ≥ α p, the forward loss is at most
    log(1/α) per token and its gradient stays finite when the student's probability of a top-k token
    underflows to 0 (the reason for skewing). The bucketed divergences coarse-grain the
    full-vocabulary ones (the buckets map p, q and the mixture alike), so they are lower bounds that
    are exact at K = V. α = 1 makes both losses identically 0 and is rejected; the reverse at α = 0
    is the plain reverse KL over buckets, infinite where the teacher has no mass on a bucket the
    student fills (an empty teacher tail), so use α > 0 there.

    Choices. The released code's forward loss is the cross-entropy −Σ p log m, which is this KL minus
    Σ p log p (a constant in θ): same gradient, and ours is 0 at q_θ = p. Forward is the default
    because it is the skewed counterpart of ``kd`` (the issue's "skew KL"); the reverse is the same
    buckets with the arguments swapped, so it is offered too (the released scripts use SRKL for most
    model pairs). Only DistiLLM's loss is taken: its adaptive off-policy student generation needs
    rollouts, which an offline method does not have. No temperature (DistiLLM uses none).

    Needs the student logits [B,T,V] and the stored teacher top-k ids [B,T,K] (distinct) and
    log-probs [B,T,K] (``batch["teacher_topk_ids"]``, ``batch["teacher_topk_logprobs"]``) → [B,T]
    float32, unreduced; no gradient reaches the teacher.
    """
    if direction not in SKEW_DIRECTIONS:
        raise ValueError(f"skew_kl_topk_loss: unknown direction {direction!r}, expected one of {SKEW_DIRECTIONS}")
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"skew_kl_topk_loss: alpha must be in [0, 1), got {alpha} (alpha = 1 gives 0 identically)")
    teacher_log, student_log = _topk_bucket_logprobs(logits, topk_ids, topk_logprobs)
    first, second = (teacher_log, student_log) if direction == "forward" else (student_log, teacher_log)
    log_alpha = math.log(alpha) if alpha > 0.0 else -math.inf
    # logaddexp(−inf, x) = x exactly, so α = 0 leaves the mixture equal to `second`.
    mixture_log = torch.logaddexp(first + log_alpha, second + math.log1p(-alpha))
    return _kl_of_logprobs(first, mixture_log).float()


def generalized_jsd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    beta: float,
    temperature: float = 1.0,
) -> torch.Tensor:
    """GKD's generalised JSD (Agarwal et al. 2024, Eq. 1), per token, summed over the vocabulary.

        m = β p_T + (1 − β) p_S,   JSD_β = β KL(p_T ‖ m) + (1 − β) KL(p_S ‖ m)
        β = 0 → KL(p_T ‖ p_S) (forward KL),  β = 1 → KL(p_S ‖ p_T) (reverse KL)

    This is trl's ``generalized_jsd_loss`` (trl 1.16, ``trl.experimental.gkd.GKDTrainer``) before its
    masking and reduction, including its convention that β = 0 and β = 1 are the KL *endpoints*
    (the mixture form itself tends to 0 there). Both inputs are divided by ``temperature`` (no T²
    factor, as in trl). Teacher log-probs are fine as teacher logits: log_softmax is idempotent.
    student_logits, teacher_logits [B,T,V] → [B,T]; no gradient reaches the teacher.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"generalized_jsd: beta must be in [0, 1], got {beta}")
    if isinstance(student_logits, ChunkedLMHead):
        student_logits = student_logits.logits()
    student_log = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher_log = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    # F.kl_div(input, target) = KL(target ‖ input), hence the swapped argument order.
    if beta == 0.0:
        jsd = F.kl_div(student_log, teacher_log, reduction="none", log_target=True)
    elif beta == 1.0:
        jsd = F.kl_div(teacher_log, student_log, reduction="none", log_target=True)
    else:
        mixture_log = torch.logsumexp(
            torch.stack([student_log + math.log1p(-beta), teacher_log + math.log(beta)]), dim=0
        )
        kl_teacher = F.kl_div(mixture_log, teacher_log, reduction="none", log_target=True)
        kl_student = F.kl_div(mixture_log, student_log, reduction="none", log_target=True)
        jsd = beta * kl_teacher + (1.0 - beta) * kl_student
    return jsd.sum(-1)


# ----------------------------------------------------------------------------- DCOD (docs/method.md)


def dcod_log_ratios(
    student_target_logprobs: torch.Tensor,
    reference_logprobs: torch.Tensor | None,
    mask: torch.Tensor,
    reference: str = "teacher",
) -> torch.Tensor:
    """r_t = sg(log π_θ(y_t | y_<t)) − log π_ref(y_t | y_<t), detached, 0 where masked (docs/method.md, step 1).

    ``reference``: "teacher" (stored teacher log-prob, π_ref = π_T), "initial_student" (π_ref = π_0),
    "none" (r_t = log π_θ: student likelihood alone; ``reference_logprobs`` is ignored).
    All tensors [B,T] → [B,T].
    """
    if reference not in REFERENCES:
        raise ValueError(f"dcod_log_ratios: unknown reference {reference!r}, expected one of {REFERENCES}")
    ratios = student_target_logprobs.detach().float()
    if reference != "none":
        if reference_logprobs is None:
            raise ValueError(f"dcod_log_ratios: reference={reference!r} needs reference_logprobs")
        ratios = ratios - reference_logprobs.detach().float()
    # where(), not multiplication: padding may hold -inf or NaN and 0 · inf is NaN.
    return torch.where(mask, ratios, torch.zeros_like(ratios))


def dcod_step_ids(targets: torch.Tensor, mask: torch.Tensor, separator_ids: torch.Tensor) -> torch.Tensor:
    """The reasoning step of every supervised token [B,T] (long; −1 where masked): steps are numbered from 0
    in each row, and a step ends with, and includes, a token in ``separator_ids`` (docs/method.md, step 2:
    the toy world's ``;``, a line break in text). What follows the last separator is one more step."""
    mask = mask.bool()
    is_separator = torch.isin(targets, separator_ids.to(targets.device)) & mask
    before = is_separator.long().cumsum(-1) - is_separator.long()  # separators strictly before t
    return torch.where(mask, before, torch.full_like(before, -1))


def dcod_scores(
    log_ratios: torch.Tensor, mask: torch.Tensor, granularity: str, discount: float = 1.0,
    step_ids: torch.Tensor | None = None, sequence_reduction: str = "mean",
) -> torch.Tensor:
    """docs/method.md step 2: the score of every supervised token. log_ratios, mask [B,T] → [B,T], 0 where masked.

    ``token``: s_t = r_t, the token's own log-ratio (with ``reference: none`` and β = 1 the weights are the
    student's token probabilities normalised to mean 1: DFT's weighting, docs/method.md).
    ``step``: s_t = Σ r over the reasoning step holding t (``step_ids`` from ``dcod_step_ids``): every
    token of a step carries the step's summed log-ratio.

    ``prefix``: with j indexing the supervised tokens of a row (padding and prompt skipped),

        s_j = Σ_{i<j} λ^(j−i) r_i      ⇔   s_0 = 0,  s_j = λ (s_{j−1} + r_{j−1})

    i.e. every earlier ratio is discounted at least once. λ = 1 is exact prefix importance sampling
    (s_j = log π_θ(y_<j)/π_ref(y_<j)), λ = 0 gives s ≡ 0, i.e. exactly SFT, and 0 < λ < 1 has an
    effective horizon of about 1/(1−λ) tokens. An exponent j−1−i would at λ = 0 leave s_j = r_{j−1}
    (a one-step ratio, not SFT) although "λ = 0 is plain SFT" is meant to hold; the exponent j−i is the
    continuous reading that makes it true (it rescales the j−1−i score by λ, which only moves the
    useful range of β; docs/method.md, Objective step 2).
    ``sequence``: s = mean of r over the row's supervised tokens, the same at each of them
    (length-normalised log of the geometric-mean ratio; ``sequence_reduction: sum``: the sum, the log of
    the whole sequence's ratio, which the ``ess_floor`` tempering rule reads). ``discount`` is ignored
    except by ``prefix``.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"dcod_scores: unknown granularity {granularity!r}, expected {GRANULARITIES}")
    ratios = torch.where(mask, log_ratios.float(), torch.zeros_like(log_ratios, dtype=torch.float32))
    if granularity == "token":
        return ratios
    if granularity == "step":
        if step_ids is None:
            raise ValueError("dcod_scores: granularity 'step' needs step_ids (dcod_step_ids)")
        index = step_ids.clamp_min(0)  # masked tokens hold ratio 0: they add nothing to step 0
        sums = torch.zeros(ratios.shape[0], ratios.shape[1] + 1, dtype=ratios.dtype, device=ratios.device)
        sums.scatter_add_(1, index, ratios)
        return torch.where(mask, sums.gather(1, index), torch.zeros_like(ratios))
    if granularity == "sequence":
        if sequence_reduction not in ("mean", "sum"):
            raise ValueError(f"dcod_scores: sequence_reduction must be mean or sum, got {sequence_reduction!r}")
        row = ratios.sum(-1, keepdim=True)
        if sequence_reduction == "mean":
            row = row / mask.sum(-1, keepdim=True).clamp_min(1)
        return torch.where(mask, row.expand_as(ratios), torch.zeros_like(ratios))
    if not 0.0 <= discount <= 1.0:
        raise ValueError(f"dcod_scores: discount must be in [0, 1], got {discount}")
    if discount == 0.0:
        return torch.zeros_like(ratios)
    if discount == 1.0:  # exclusive cumulative sum: the masked ratios are 0, so they drop out
        return torch.where(mask, ratios.cumsum(-1) - ratios, torch.zeros_like(ratios))
    # O(B·T) scan. The closed form Σ λ^(j−i) r_i = λ^j Σ λ^(−i) r_i overflows for long rows, and a
    # [T,T] matrix of powers is too big at T ≈ 4k, so loop over positions with vector ops over rows.
    scores = torch.zeros_like(ratios)
    carry = torch.zeros_like(ratios[:, 0])
    for t in range(ratios.shape[1]):
        scores[:, t] = carry
        carry = torch.where(mask[:, t], discount * (carry + ratios[:, t]), carry)
    return torch.where(mask, scores, torch.zeros_like(scores))


def ess_fraction(unit_weights: torch.Tensor) -> float:
    """Normalised effective sample size ESS/N = (Σw)² / (N Σw²) ∈ [1/N, 1] of weights [N]."""
    weights = unit_weights.detach().double()
    if weights.numel() == 0:
        return 1.0
    return float(weights.sum() ** 2 / (weights.numel() * (weights**2).sum()))


def _tempered_ess(shifted_scores: torch.Tensor, beta: float) -> float:
    """ESS/N of exp(β s) given s − max s ≤ 0: the shift cancels in the ratio and rules out overflow."""
    return ess_fraction(torch.exp(beta * shifted_scores))


def choose_beta(unit_scores: torch.Tensor, ess_target: float, beta_max: float, steps: int = 40) -> float:
    """docs/method.md step 4: the largest β ∈ [0, β_max] with ESS/N of w = exp(β s) at least ``ess_target``.

    Bisection is valid because ESS/N is non-increasing in β ≥ 0: with E_β the mean under weights
    ∝ exp(β s), log ESS(β) = 2 log Σe^{βs} − log Σe^{2βs} − log N, so
    d/dβ log ESS = 2 E_β[s] − 2 E_{2β}[s] ≤ 0, because dE_β[s]/dβ = Var_β[s] ≥ 0 and 2β ≥ β.
    Returns β_max if it meets the target, and 0 when the scores are all equal (β is then moot).
    The bisection keeps ``lo`` feasible (ESS(0) = 1), so the answer always meets the target.
    """
    if not 0.0 < ess_target <= 1.0:
        raise ValueError(f"choose_beta: ess_target must be in (0, 1], got {ess_target}")
    if beta_max < 0:
        raise ValueError(f"choose_beta: beta_max must be >= 0, got {beta_max}")
    scores = unit_scores.detach().double().flatten()
    if scores.numel() < 2 or bool((scores == scores[0]).all()):
        return 0.0
    shifted = scores - scores.max()
    if _tempered_ess(shifted, beta_max) >= ess_target:
        return float(beta_max)
    lo, hi = 0.0, float(beta_max)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        if _tempered_ess(shifted, mid) >= ess_target:
            lo = mid
        else:
            hi = mid
    return lo


def _dcod_units(scores: torch.Tensor, mask: torch.Tensor, granularity: str, units: torch.Tensor | None = None):
    """The units carrying one weight each: (unit scores [U] float64, supervised tokens per unit [U], the
    map back to tokens) — supervised tokens for ``prefix`` and ``token`` (map None), rows for ``sequence``
    (map: rows with a supervised token [B]), steps for ``step`` (map: each supervised token's unit [M];
    ``units`` [B,T] holds every token's step in its row, −1 where masked)."""
    if granularity in TOKEN_UNITS:
        unit_scores = scores[mask].double()
        return unit_scores, torch.ones_like(unit_scores), None
    if granularity == "step":
        if units is None:
            raise ValueError("granularity 'step' needs the step of every token (Scores.units)")
        keys = torch.arange(mask.shape[0], device=mask.device).unsqueeze(-1) * (mask.shape[1] + 1) + units
        _, token_unit = torch.unique(keys[mask], return_inverse=True)
        count = int(token_unit.max()) + 1 if token_unit.numel() else 0
        unit_scores = torch.zeros(count, dtype=torch.float64, device=scores.device)
        unit_scores.scatter_(0, token_unit, scores[mask].double())  # a step's tokens share its score
        return unit_scores, torch.bincount(token_unit, minlength=count).double(), token_unit
    rows = mask.any(-1)
    first = mask.float().argmax(-1)  # every supervised token of a row holds the same score
    unit_scores = scores.gather(-1, first.unsqueeze(-1)).squeeze(-1)[rows].double()
    return unit_scores, mask.sum(-1)[rows].double(), rows


@torch.no_grad()
def dcod_weights(
    scores: torch.Tensor,
    mask: torch.Tensor,
    granularity: str,
    beta: float | None = None,
    ess_target: float = 0.5,
    beta_max: float = 50.0,
    clip: float | None = None,
    units: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """docs/method.md steps 3–4: detached per-token weights [B,T] (0 where masked) and their diagnostics.

    Units carry one weight each: supervised tokens (``prefix``, ``token``), rows (``sequence``, every
    token of a row carries the row's weight) or steps (``step``, ``units`` [B,T] the step of every token);
    N = number of units. Then
        w_u = exp(β (s_u − max s)),  β given or ``choose_beta`` (``beta=None``),
        w ← w / mean_tokens(w)   (mean over all *supervised tokens* = 1, so the loss scale is SFT's),
        w ← min(w, C), then w ← w / mean_tokens(w) once more (``clip=None``: no truncation).
    Call it on the WHOLE optimiser batch (micro-batches concatenated, ranks gathered): it normalises
    over everything it is given. Diagnostics: beta, ess_fraction (of the final unit weights),
    clip_fraction (units truncated), weight_entropy (H(w/Σw)/log N, 1 = uniform), max_weight,
    mean_score (mean over units).
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"dcod_weights: unknown granularity {granularity!r}, expected {GRANULARITIES}")
    if clip is not None and clip <= 0:
        raise ValueError(f"dcod_weights: clip must be > 0 or None, got {clip}")
    mask = mask.bool()
    unit_scores, tokens_per_unit, rows = _dcod_units(scores, mask, granularity, units)
    if unit_scores.numel() == 0:
        empty = dict(beta=0.0, ess_fraction=1.0, ess_fraction_before_clip=1.0, clip_fraction=0.0,
                     weight_entropy=1.0, max_weight=0.0)
        return torch.zeros_like(scores, dtype=torch.float32), {**empty, "mean_score": 0.0}
    if not bool(torch.isfinite(unit_scores).all()):
        raise ValueError("dcod_weights: non-finite DCOD score on a supervised token (NaN or inf log-prob?)")

    if beta is None:
        beta = choose_beta(unit_scores, ess_target, beta_max)
    n_tokens = tokens_per_unit.sum()
    unit_weights = torch.exp(beta * (unit_scores - unit_scores.max()))  # β = 0 → exactly 1
    unit_weights = unit_weights * n_tokens / (unit_weights * tokens_per_unit).sum()
    ess_before_clip = ess_fraction(unit_weights)  # what the β rule targets: truncation comes after it
    clipped = unit_weights > clip if clip is not None else torch.zeros_like(unit_weights, dtype=torch.bool)
    if clip is not None:
        unit_weights = unit_weights.clamp(max=clip)
        unit_weights = unit_weights * n_tokens / (unit_weights * tokens_per_unit).sum()

    weights = torch.zeros_like(scores, dtype=torch.float64)
    if granularity in TOKEN_UNITS:
        weights[mask] = unit_weights
    elif granularity == "step":
        weights[mask] = unit_weights[rows]  # rows: each supervised token's step unit
    else:
        row_weights = torch.zeros(mask.shape[0], dtype=torch.float64, device=mask.device)
        row_weights[rows] = unit_weights
        weights = torch.where(mask, row_weights.unsqueeze(-1), weights)

    n_units = unit_weights.numel()
    probs = unit_weights / unit_weights.sum()
    entropy = float(-(probs * probs.clamp_min(1e-300).log()).sum())
    diagnostics = {
        "beta": float(beta),
        "ess_fraction": ess_fraction(unit_weights),
        "ess_fraction_before_clip": ess_before_clip,
        "clip_fraction": float(clipped.double().mean()),
        "weight_entropy": entropy / math.log(n_units) if n_units > 1 else 1.0,
        "max_weight": float(unit_weights.max()),
        "mean_score": float(unit_scores.mean()),
    }
    return weights.float(), diagnostics


# ----------------------------------------------------------------------------- DCOD in one pass (docs/method.md)


@torch.no_grad()
def dcod_exact_tempering(
    scores: torch.Tensor, mask: torch.Tensor, granularity: str, beta: float | None = None,
    ess_target: float = 0.5, beta_max: float = 50.0, clip: float | None = None, units: torch.Tensor | None = None,
) -> tuple[float, float | None]:
    """(β, L) of ``dcod_weights`` on this batch in log space: its weights are exactly the token-mean-1
    normalisation of exp(min(β s, L)) with L = log C + log mean_tokens exp(β s) (``clip=None``: L = None,
    no truncation). Dividing by Z₁ = mean exp(β s), truncating at C and renormalising is min(e^{βs}, C Z₁)
    renormalised: Z₁ cancels. Empty batch: (0, None)."""
    mask = mask.bool()
    unit_scores, tokens, _ = _dcod_units(scores, mask, granularity, units)
    if unit_scores.numel() == 0:
        return 0.0, None
    if beta is None:
        beta = choose_beta(unit_scores, ess_target, beta_max)
    if clip is None:
        return float(beta), None
    log_mean = torch.logsumexp(beta * unit_scores + tokens.log(), 0) - tokens.sum().log()
    return float(beta), math.log(clip) + float(log_mean)


def dcod_stream_log_weights(scores: torch.Tensor, mask: torch.Tensor, beta: float,
                            log_clip: float | None) -> torch.Tensor:
    """Un-normalised log-weights min(β s_t, L) of one micro-batch's supervised tokens [B,T] float64,
    −inf where masked (``log_clip=None``: β s_t). The trainer normalises exp() of them to token-mean 1
    over the whole optimiser batch (docs/method.md, "Accumulation without a scoring pass")."""
    mask = mask.bool()
    log_weights = beta * scores.detach().double()
    if log_clip is not None:
        log_weights = log_weights.clamp(max=log_clip)
    return torch.where(mask, log_weights, torch.full_like(log_weights, -math.inf))


@torch.no_grad()
def dcod_stream_diagnostics(
    scores: torch.Tensor, mask: torch.Tensor, granularity: str, used: tuple[float, float | None],
    exact: tuple[float, float | None], units: torch.Tensor | None = None,
) -> dict[str, float]:
    """``dcod_weights``' diagnostics of the weights one-pass accumulation used (β̃, L̃ = ``used``) on the
    whole batch's scores, and ``lag_log_weight_bound`` = 2Δ: every unit's log-weight is within 2Δ of the
    exact ``dcod_weights`` one (``exact`` = ``dcod_exact_tempering`` on these scores), with, for any c,

        Δ = max(|β̃ − β| max_u |s_u − c|,  |(L̃ − β̃ c) − (L − β c)|)      (c: the scores' mid-range)

    because min(·,·) is 1-Lipschitz in each argument and the log-normaliser moves by at most Δ as well.
    With ℓ ≥ 0 the optimiser batch's loss is then within a factor e^{±2Δ} of the exact one."""
    mask = mask.bool()
    unit_scores, tokens, _ = _dcod_units(scores, mask, granularity, units)
    if unit_scores.numel() == 0:
        empty = dict(beta=0.0, ess_fraction=1.0, ess_fraction_before_clip=1.0, clip_fraction=0.0,
                     weight_entropy=1.0, max_weight=0.0)
        return {**empty, "mean_score": 0.0, "lag_log_weight_bound": 0.0}
    (beta, log_clip), (beta_exact, log_clip_exact) = used, exact
    log_weights = beta * unit_scores
    clipped = log_weights > log_clip if log_clip is not None else torch.zeros_like(log_weights, dtype=torch.bool)
    if log_clip is not None:
        log_weights = log_weights.clamp(max=log_clip)
    unit_weights = torch.exp(log_weights - log_weights.max())
    unit_weights = unit_weights * tokens.sum() / (unit_weights * tokens).sum()
    ess_before_clip = ess_fraction(torch.exp(beta * (unit_scores - unit_scores.max())))
    centre = 0.5 * float(unit_scores.max() + unit_scores.min())
    delta = abs(beta - beta_exact) * float((unit_scores - centre).abs().max())
    if log_clip is not None and log_clip_exact is not None:
        delta = max(delta, abs((log_clip - beta * centre) - (log_clip_exact - beta_exact * centre)))
    n_units = unit_weights.numel()
    probs = unit_weights / unit_weights.sum()
    entropy = float(-(probs * probs.clamp_min(1e-300).log()).sum())
    return {"beta": float(beta), "ess_fraction": ess_fraction(unit_weights),
            "ess_fraction_before_clip": ess_before_clip, "clip_fraction": float(clipped.double().mean()),
            "weight_entropy": entropy / math.log(n_units) if n_units > 1 else 1.0,
            "max_weight": float(unit_weights.max()), "mean_score": float(unit_scores.mean()),
            "lag_log_weight_bound": 2.0 * delta}


# ----------------------------------------------------------------------------- iw-SFT


def iw_sft_sequence_log_weights(
    student_logprobs: torch.Tensor,
    reference_logprobs: torch.Tensor,
    mask: torch.Tensor,
    length_normalize: bool = True,
    log_ratio_scale: float = 1.0,
) -> torch.Tensor:
    """iw-SFT's log importance weight of each sequence (Qin & Springenberg 2025, arXiv:2507.12856), detached.

        r_t   = sg(log π_θ(y_t | y_<t)) − log π_ref(y_t | y_<t)        over the supervised tokens
        log w = c · (1/n) Σ_t r_t     (``length_normalize=True``, default; n = supervised tokens)
        log w = c · Σ_t r_t           (``length_normalize=False``: the exact log π_θ(y)/π_ref(y))

    c = ``log_ratio_scale``. student_logprobs, reference_logprobs, mask [B,T] → [B] float32; a row
    with no supervised token gets 0. Padding may hold anything (-inf, NaN): it is selected out.

    The paper: SFT on curated data — samples of π_ref kept when their sparse reward is 1 — maximises
    a lower bound on the RL objective E_{π_θ}[R] (from x ≥ 1 + log x applied to the importance
    ratio); bounding through an auxiliary q gives a tighter, importance-weighted bound, tight at
    q = π_θ, whose gradient is E_{curated}[sg(π_θ(τ)/π_ref(τ)) ∇ log π_θ(τ)]: each sequence's NLL
    weighted by its detached sequence ratio. Practical form, from the authors' released LLM code
    (github.com/emmyqin/iw_sft, ``IwSFTLoss`` as called by ``BoundingTrainer.compute_loss``):
    π_θ is the model being trained, read off the same forward pass under no_grad; the log-ratio is
    averaged over the sequence's supervised tokens (the geometric-mean ratio: the product over
    thousands of tokens is numerically useless) and multiplied by ``temp`` = 1.0 — our c and
    ``length_normalize=True``. ``length_normalize=False`` is the paper's exact sequence ratio.

    Reference. The paper's π_ref is the policy whose samples were curated. Our traces are teacher
    samples kept when verified correct, with each sampled token's teacher log-prob stored (under the
    distribution it was sampled from), so π_ref = π_T — ``batch["teacher_logprobs"]`` — is the exact
    behaviour policy and costs no forward (the method's ``reference: teacher``). The authors' code
    used the frozen initial model instead (their data was not sampled from the model they tuned), and
    so does the ``iw_sft`` experiment by default (``reference: initial_student``): pass the initial
    student's target log-probs (one frozen forward per batch); then w = 1, i.e. SFT, at step 0. With the teacher reference the weights start below 1 wherever
    the student is less likely than the teacher (a smaller effective step than SFT) unless
    ``iw_sft_weights(normalize=True)``.

    Needs: the student's target log-probs (``target_logprobs(logits, batch["targets"])``, detached
    here), the reference's per-token log-probs of the same targets, and ``batch["loss_mask"]``.
    """
    mask = mask.bool()
    ratios = student_logprobs.detach().double() - reference_logprobs.detach().double()
    # where(), not multiplication: padding may hold -inf or NaN and 0 · inf is NaN.
    ratios = torch.where(mask, ratios, torch.zeros_like(ratios))
    log_weights = ratios.sum(-1)
    if length_normalize:
        log_weights = log_weights / mask.sum(-1).clamp_min(1)
    return (log_ratio_scale * log_weights).float()


@torch.no_grad()
def iw_sft_weights(
    log_weights: torch.Tensor,
    mask: torch.Tensor,
    clip_min: float = 0.0,
    clip_max: float = 16.0,
    normalize: bool = False,
) -> torch.Tensor:
    """iw-SFT's per-token weights [B,T]: each sequence's clipped importance weight on all its supervised
    tokens, 0 on padding and prompt; detached. log_weights [B] (``iw_sft_sequence_log_weights``),
    mask [B,T] → [B,T] float32.

        w_b = min(max(exp(log w_b), clip_min), clip_max)      (clipped in log space: no overflow)
        normalize=True:  w ← w · N / Σ_b n_b w_b   (mean 1 over the N supervised tokens, as
                         ``dcod_weights``; n_b = supervised tokens of row b)

    Defaults are the authors' released code: weights clamped to [0, 16] (so no lower clip) and no
    normalisation over the batch — the loss is Σ_b w_b Σ_t nll_bt / N_tokens, the trainer's
    ``sum(w · ℓ · mask) / N`` with ℓ = ``nll_loss``. Without normalisation each weight depends on its
    own sequence only, so it can be computed per micro-batch. ``normalize=True`` is our option, not
    the paper's: it keeps SFT's loss scale (relevant with the teacher as reference, see
    ``iw_sft_sequence_log_weights``) and must then be called on the whole optimiser batch like
    ``dcod_weights``; it is computed from the log-weights shifted by their maximum, so it stays
    finite when every weight underflows. A row with no supervised token contributes nothing.
    """
    if not (0.0 <= clip_min <= clip_max and clip_max > 0.0 and math.isfinite(clip_max)):
        raise ValueError(
            f"iw_sft_weights: need 0 <= clip_min <= clip_max < inf and clip_max > 0, got [{clip_min}, {clip_max}]"
        )
    mask = mask.bool()
    rows = mask.any(-1)
    log_weights = log_weights.detach().double()
    if bool(torch.isnan(log_weights[rows]).any()):
        raise ValueError("iw_sft_weights: NaN log importance weight on a sequence with supervised tokens")
    low = math.log(clip_min) if clip_min > 0.0 else -math.inf
    log_weights = log_weights.clamp(min=low, max=math.log(clip_max))
    if normalize:
        tokens = mask.sum(-1).double()
        shift = log_weights[rows].max() if bool(rows.any()) else log_weights.new_zeros(())
        unit = torch.where(rows, torch.exp(log_weights - shift), torch.zeros_like(log_weights))
        row_weights = unit * tokens.sum() / (unit * tokens).sum().clamp_min(torch.finfo(torch.float64).tiny)
    else:
        row_weights = torch.exp(log_weights)
    weights = torch.where(mask, row_weights.unsqueeze(-1), torch.zeros((), dtype=torch.float64, device=mask.device))
    return weights.float()
