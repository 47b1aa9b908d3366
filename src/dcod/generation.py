"""Generation backends behind one interface.

Every backend (the HF one here, vLLM in ``generation_vllm``, and the exact toy teacher in
``dcod.toy.teacher``) takes prompts as token-id lists and returns one ``Generation`` per sample with
the sampled token ids, the decoded text and the log-probability of every sampled token *under the
distribution it was sampled from* (temperature and top-p applied), plus the top-k log-probabilities
of that distribution when asked for.

Every backend stops a sample on any of the model's *end tokens* (``end_token_ids``): the tokenizer's
eos, the eos list of the model's ``generation_config.json`` and the end-of-turn token its chat template
writes after an assistant message. A base student (Qwen2.5-1.5B: eos ``<|endoftext|>``) that learned
from chat traces ending in ``<|im_end|>`` would otherwise run every sample to the token cap
(docs/paper_setting.md, "Stop tokens").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    n: int = 1  # samples per prompt
    top_k_logprobs: int = 0  # 0: do not return top-k
    seed: int = 0

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.top_k_logprobs < 0:
            raise ValueError(f"top_k_logprobs must be >= 0, got {self.top_k_logprobs}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Generation:
    prompt_index: int  # which prompt of the request this sample answers
    prompt_ids: list[int]
    token_ids: list[int]  # sampled completion, its end token included when it was produced
    text: str  # decoded completion without special tokens
    logprobs: list[float]  # one per token_ids entry
    finish_reason: str  # "stop" (ended on one of the end tokens) or "length" (ran to the cap)
    topk_ids: list[list[int]] | None = field(default=None)
    topk_logprobs: list[list[float]] | None = field(default=None)


# ----------------------------------------------------------------------------- end tokens
_TURN_PROBE = "dcod-end-of-turn-probe"  # an assistant message whose rendering shows what the template appends


def chat_end_tokens(tokenizer) -> list[int]:
    """The special tokens a tokenizer's chat template writes right after an assistant message's content
    (ChatML: ``<|im_end|>``; Llama 3: ``<|eot_id|>``); [] without a chat template.

    Found by rendering a one-turn conversation whose assistant content is a probe string and tokenizing
    what follows the probe: the special tokens there end an assistant turn. A template that cannot
    render an assistant turn is an error (a model sampled through it would not know where to stop)."""
    if not getattr(tokenizer, "chat_template", None):
        return []
    conversation = [{"role": "user", "content": "q"}, {"role": "assistant", "content": _TURN_PROBE}]
    try:
        text = tokenizer.apply_chat_template(conversation, tokenize=False)
    except Exception as error:  # jinja raises its own exception types from a template's raise_exception
        raise ValueError(f"the chat template of tokenizer {tokenizer.name_or_path!r} cannot render an assistant "
                         f"turn ({type(error).__name__}: {error}); pass stop_token_ids explicitly") from error
    if _TURN_PROBE not in text:
        raise ValueError(f"the chat template of tokenizer {tokenizer.name_or_path!r} drops the assistant's content; "
                         "cannot tell which token ends a turn: pass stop_token_ids explicitly")
    tail = text.split(_TURN_PROBE, 1)[1]
    special = set(tokenizer.all_special_ids) | {
        index for index, token in getattr(tokenizer, "added_tokens_decoder", {}).items() if token.special}
    return [t for t in tokenizer(tail, add_special_tokens=False)["input_ids"] if t in special]


def end_token_ids(tokenizer, generation_config=None) -> list[int]:
    """The token ids generation must stop on, sorted: the union of

    1. the tokenizer's ``eos_token_id``;
    2. ``generation_config.eos_token_id`` (an int or a list; ``generation_config.json`` of the model
       folder: where a saved student records the teacher's end tokens too, ``dcod.models.set_end_tokens``);
    3. the end-of-turn tokens of the tokenizer's chat template (``chat_end_tokens``).

    For the toy world's character tokenizer (no chat template; generation config eos = tokenizer eos)
    this is its eos alone. An empty set, or an id outside the tokenizer, is an error."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    configured = getattr(generation_config, "eos_token_id", None)
    if configured is not None:
        ids |= {int(t) for t in ([configured] if isinstance(configured, int) else configured)}
    ids |= set(chat_end_tokens(tokenizer))
    return check_end_tokens(sorted(ids), tokenizer)


def check_end_tokens(ids, tokenizer) -> list[int]:
    """``ids`` as a sorted list of ints, refused when empty or outside the tokenizer's vocabulary (the
    backends never sample past ``len(tokenizer)``: such a stop token could never end a sample)."""
    ids = sorted({int(t) for t in ids})
    if not ids:
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r}: no end token (no eos, no generation config eos, "
                         "no chat template): every sample would run to the token cap")
    outside = [t for t in ids if not 0 <= t < len(tokenizer)]
    if outside:
        raise ValueError(f"end token ids {outside} are outside tokenizer {tokenizer.name_or_path!r} "
                         f"({len(tokenizer)} tokens)")
    return ids


def finish_reason(token_ids: list[int], stop: set[int]) -> str:
    """``"stop"`` when the sample ends on one of the end tokens, else ``"length"`` (it ran to the cap)."""
    return "stop" if token_ids and token_ids[-1] in stop else "length"


def process_logits(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Log-probabilities of the distribution actually sampled from: temperature, then nucleus.

    ``logits`` is ``[..., V]``. Greedy (temperature 0) returns the untempered log-softmax, so the
    reported log-prob of the argmax token is the model's own.
    """
    logits = logits.float()
    if temperature > 0:
        logits = logits / temperature
    logprobs = torch.log_softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_lp, order = torch.sort(logprobs, dim=-1, descending=True)
        cumulative = sorted_lp.exp().cumsum(dim=-1)
        # keep the smallest prefix whose mass reaches top_p (the first token always stays)
        drop_sorted = (cumulative - sorted_lp.exp()) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logprobs = torch.log_softmax(logprobs.masked_fill(drop, float("-inf")), dim=-1)
    return logprobs


class HFBackend:
    """Batched sampling with a KV cache on any ``transformers`` causal LM.

    A lean loop over ``model.forward`` with left-padded prompts and a ``DynamicCache`` rather than
    ``model.generate``: for the toy models, per-step Python overhead dominates, and owning the loop
    lets us return the log-probs of the *processed* distribution and seed sampling per call.

    A sample ends on any of ``stop_token_ids`` (default: ``end_token_ids`` of the tokenizer and the
    model's generation config).
    """

    name = "hf"

    def __init__(self, model, tokenizer, *, batch_size: int = 128, stop_token_ids=None):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.stop_token_ids = (end_token_ids(tokenizer, getattr(model, "generation_config", None))
                               if stop_token_ids is None else check_end_tokens(stop_token_ids, tokenizer))

    def generate(self, prompts: list[list[int]], params: SamplingParams, progress: bool = False) -> list[Generation]:
        requests = [(i, p) for i, p in enumerate(prompts) for _ in range(params.n)]
        # batches of similar prompt length: less padding, and (in the toy world, where the prompt
        # length grows with the chain length) rows that finish at similar times. Results keep the
        # request order; sampling draws from one generator in this batch order.
        order = sorted(range(len(requests)), key=lambda r: len(requests[r][1]))
        # the model's device (a GPU when training or evaluating there): inputs, logits and the sampling
        # generator live there; token and log-prob buffers stay on the CPU
        generator = torch.Generator(device=self._device()).manual_seed(params.seed)
        results: list[Generation | None] = [None] * len(requests)
        chunks = range(0, len(order), self.batch_size)
        if progress:
            from tqdm import tqdm

            chunks = tqdm(chunks, desc="generate", unit="batch")
        for start in chunks:
            rows = order[start:start + self.batch_size]
            for row, generation in zip(rows, self._generate_batch([requests[r] for r in rows], params, generator)):
                results[row] = generation
        return results

    def _device(self) -> torch.device:
        parameter = next(self.model.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")

    @torch.no_grad()
    def _generate_batch(self, requests, params: SamplingParams, generator) -> list[Generation]:
        model, tokenizer, device = self.model, self.tokenizer, self._device()
        was_training = model.training
        model.eval()
        pad = tokenizer.pad_token_id
        stop = torch.tensor(self.stop_token_ids, device=device)
        width = max(len(p) for _, p in requests)
        batch = len(requests)
        context = getattr(model.config, "max_position_embeddings", None) or 10**9
        if width >= context:
            index = max(requests, key=lambda r: len(r[1]))[0]
            raise ValueError(f"prompt {index} has {width} tokens, the model's context is {context}")
        max_new = min(params.max_new_tokens, context - width)  # never run past the position table
        input_ids = torch.full((batch, width), pad, dtype=torch.long)
        attention = torch.zeros((batch, width), dtype=torch.long)
        for row, (_, prompt) in enumerate(requests):
            input_ids[row, width - len(prompt):] = torch.tensor(prompt)
            attention[row, width - len(prompt):] = 1
        input_ids, attention = input_ids.to(device), attention.to(device)
        position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
        from transformers import DynamicCache

        cache = DynamicCache()
        out = model(input_ids=input_ids, attention_mask=attention, position_ids=position_ids,
                    past_key_values=cache, use_cache=True)
        logits = out.logits[:, -1]
        tokens = torch.full((batch, max_new), pad, dtype=torch.long)
        logprobs = torch.zeros((batch, max_new))
        k = params.top_k_logprobs
        top_ids = torch.zeros((batch, max_new, k), dtype=torch.long) if k else None
        top_lps = torch.zeros((batch, max_new, k)) if k else None
        lengths = torch.full((batch,), max_new, dtype=torch.long)
        # `active` maps the rows still generating to their batch rows; finished rows are dropped
        # from the cache, the mask and the next forward (compaction), so a batch costs what its
        # unfinished rows cost rather than what its longest row costs at full width.
        active = torch.arange(batch)
        next_position = position_ids[:, -1]
        vocab = len(tokenizer)
        for step in range(max_new):
            step_logprobs = process_logits(logits[:, :vocab], params.temperature, params.top_p)
            if params.greedy:
                choice = step_logprobs.argmax(-1)
            else:
                choice = torch.multinomial(step_logprobs.exp(), 1, generator=generator).squeeze(-1)
            tokens[active, step] = choice.cpu()
            logprobs[active, step] = step_logprobs.gather(-1, choice[:, None]).squeeze(-1).float().cpu()
            if k:
                values, ids = step_logprobs.topk(min(k, vocab), dim=-1)
                top_ids[active, step, : values.shape[-1]] = ids.cpu()
                top_lps[active, step, : values.shape[-1]] = values.float().cpu()
            done = torch.isin(choice, stop).cpu()
            lengths[active[done]] = step + 1
            if step == max_new - 1 or bool(done.all()):
                break
            if bool(done.any()):
                keep = (~done).nonzero().squeeze(-1)
                on_device = keep.to(device)
                active, choice, attention = active[keep], choice[on_device], attention[on_device]
                next_position = next_position[on_device]
                cache.batch_select_indices(on_device)
            attention = torch.cat([attention, attention.new_ones((len(active), 1))], dim=1)
            next_position = next_position + 1
            out = model(input_ids=choice[:, None], attention_mask=attention, position_ids=next_position[:, None],
                        past_key_values=cache, use_cache=True)
            logits = out.logits[:, -1]
        if was_training:
            model.train()
        results, stop_set = [], set(self.stop_token_ids)
        for row, (index, prompt) in enumerate(requests):
            n = int(lengths[row])
            ids = tokens[row, :n].tolist()
            results.append(Generation(
                prompt_index=index, prompt_ids=list(prompt), token_ids=ids,
                text=tokenizer.decode(ids, skip_special_tokens=True),
                logprobs=logprobs[row, :n].tolist(),
                finish_reason=finish_reason(ids, stop_set),
                topk_ids=top_ids[row, :n].tolist() if k else None,
                topk_logprobs=top_lps[row, :n].tolist() if k else None,
            ))
        return results
