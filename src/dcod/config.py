"""Profile and experiment configuration: typed dataclasses, strict loading, range checks at load time.

A *profile* (``config/profiles/<name>.yaml``) fixes the world, the models, the shared training
budget, the evaluation and the seeds. An *experiment* (``experiments/<name>/config.yaml``) names a
method, its parameters and, rarely, overrides of the shared training budget. Loading is strict: an
unknown key, a wrong type or an out-of-range value is an error that names the file, the key and
what is allowed, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value is unknown, mistyped or out of range; the message names it."""


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


def _choice(value: str, allowed: tuple[str, ...], key: str) -> None:
    _check(value in allowed, key, f"got {value!r}, allowed values: {', '.join(allowed)}")


def _check_finite(section, key: str) -> None:
    """Every float field of a section (and of a list of floats) must be finite: NaN fails every range
    comparison with a misleading message, and inf passes ``> 0`` (``lr: .inf`` was accepted at load time)."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, float):
                _check(math.isfinite(item), f"{key}.{f.name}", f"must be a finite number, got {item}")


def _check_seed(value: int, key: str) -> None:
    _check(value >= 0, key, f"must be >= 0 (numpy and torch refuse negative seeds), got {value}")


# ----------------------------------------------------------------------------- profile sections


@dataclass
class DataConfig:
    """Where prompts come from. ``toy``: the synthetic world (``world`` section). ``benchmarks``: the
    declared real benchmarks (``dcod.benchmarks``), hub by default or ``data_dir`` when offline."""

    source: str = "toy"
    # benchmark(s) whose questions are the training prompts: one name, or a list concatenated in order
    train: str | list[str] = "gsm8k_train"
    train_limit: int = 0  # per training source; 0: all
    eval: list[str] = field(default_factory=lambda: ["gsm8k"])
    eval_limit: int = 0  # 0: all problems of each benchmark
    data_dir: str | None = None  # local copies (e.g. ../shared/data); env DCOD_DATA_DIR also works
    # the `validation` split (tuning reads it, never a test benchmark): {training source: prompts held out},
    # a fixed random sample of each source (validation_seed), removed from the training prompts
    validation: dict[str, int] = field(default_factory=dict)
    validation_seed: int = 0

    @property
    def train_sources(self) -> list[str]:
        return [self.train] if isinstance(self.train, str) else list(self.train)

    def validate(self, key: str) -> None:
        _choice(self.source, ("toy", "benchmarks"), f"{key}.source")
        _check(self.train_limit >= 0 and self.eval_limit >= 0, f"{key}", "limits must be >= 0")
        _check_seed(self.validation_seed, f"{key}.validation_seed")
        _check(not self.validation or self.source == "benchmarks", f"{key}.validation",
               "is for data.source benchmarks (the toy world writes its own validation split)")
        for name, size in self.validation.items():
            _check(name in self.train_sources, f"{key}.validation", f"{name!r} is not a training source "
                   f"({', '.join(self.train_sources)}): a validation split is held out of the training prompts")
            _check(isinstance(size, int) and not isinstance(size, bool) and size >= 1, f"{key}.validation.{name}",
                   f"must be a number of prompts >= 1, got {size!r}")
        if self.source == "benchmarks":
            from dcod.benchmarks import list_benchmarks

            known = list_benchmarks()
            _check(len(self.train_sources) > 0, f"{key}.train", "must name at least one benchmark")
            for name in [*self.train_sources, *self.eval]:
                _check(name in known, f"{key}", f"unknown benchmark {name!r}; known: {', '.join(known)}")
            _check("validation" not in self.eval, f"{key}.eval", "'validation' is the held-out split "
                   "(data.validation), not a benchmark")


@dataclass
class StudentConfig:
    """The student. ``path`` set: load a pretrained HF model; else a tiny Llama built from config."""

    path: str | None = None
    gguf_file: str | None = None
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 512
    max_position_embeddings: int = 256

    def validate(self, key: str) -> None:
        for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_position_embeddings"):
            _check(getattr(self, name) >= 1, f"{key}.{name}", "must be >= 1")
        _check(self.hidden_size % self.num_heads == 0, f"{key}.hidden_size", "must be divisible by num_heads")


@dataclass
class TeacherConfig:
    """``programmatic``: the exact toy teacher (DESIGN §5 option b). ``hf``: a model at ``path``."""

    kind: str = "programmatic"
    p_direct: float = 0.5
    floor: float = 1e-6
    path: str | None = None
    gguf_file: str | None = None

    def validate(self, key: str) -> None:
        _check_finite(self, key)
        _choice(self.kind, ("programmatic", "hf"), f"{key}.kind")
        _check(0.0 <= self.p_direct <= 1.0, f"{key}.p_direct", "must be in [0, 1]")
        _check(0.0 < self.floor < 0.01, f"{key}.floor", "must be in (0, 0.01)")
        if self.kind == "hf":
            _check(self.path is not None, f"{key}.path", "is required when kind is 'hf'")


@dataclass
class PretrainConfig:
    """Pre-training of the toy base student on its native (decomposed) style plus the retention skill."""

    steps: int = 600
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 30
    seed: int = 1234

    def validate(self, key: str) -> None:
        _check_finite(self, key)
        _check(self.steps >= 1, f"{key}.steps", "must be >= 1")
        _check(self.batch_size >= 1, f"{key}.batch_size", "must be >= 1")
        _check(self.lr > 0, f"{key}.lr", "must be > 0")
        _check(self.warmup_steps >= 0, f"{key}.warmup_steps", "must be >= 0")
        _check_seed(self.seed, f"{key}.seed")


@dataclass
class TracesConfig:
    """Offline teacher traces: generated once, verified, stored with per-token log-probs and top-k."""

    samples_per_prompt: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k_logprobs: int = 20
    max_new_tokens: int = 256
    keep_only_correct: bool = True
    seed: int = 7
    backend: str = "hf"  # hf | vllm (an HF teacher only; the toy teacher is exact)
    shard_size: int = 500  # prompts per resumable shard (dcod.shards)

    def validate(self, key: str) -> None:
        _check_finite(self, key)
        _check(self.samples_per_prompt >= 1, f"{key}.samples_per_prompt", "must be >= 1")
        _check(self.shard_size >= 1, f"{key}.shard_size", "must be >= 1")
        _check(self.temperature > 0, f"{key}.temperature", "must be > 0 (traces are samples)")
        _check(0 < self.top_p <= 1, f"{key}.top_p", "must be in (0, 1]")
        _check(self.top_k_logprobs >= 0, f"{key}.top_k_logprobs", "must be >= 0")
        _check(self.max_new_tokens >= 1, f"{key}.max_new_tokens", "must be >= 1")
        _choice(self.backend, ("hf", "vllm"), f"{key}.backend")
        _check_seed(self.seed, f"{key}.seed")


@dataclass
class TrainConfig:
    """The shared training budget: identical for every method (fair comparison rule, DESIGN §3)."""

    steps: int = 150
    batch_size: int = 32  # sequences per optimiser step, over all ranks and accumulation micro-batches
    micro_batch_size: int = 0  # 0: no gradient accumulation
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    checkpoint_every: int = 50
    log_every: int = 10
    # How the Snakemake train rules start a job: null runs one process (`python -m dcod train`); a path
    # (relative to the repository root) runs `accelerate launch --config_file <path> -m dcod train`.
    accelerate_config: str | None = None
    # Where on-policy KD and self-distillation sample the student while training: `hf` (the training model
    # itself) or `vllm` (an engine in the training process; the model's weights are pushed into it before
    # each sampling call). `vllm` runs as one training process (the train rules start it without accelerate
    # launch); rollout_gpu_memory_utilization is the share of the GPU the engine takes beside training
    # (null: the vLLM backend's default, meant for an engine alone on its device).
    rollout_backend: str = "hf"
    rollout_gpu_memory_utilization: float | None = None

    def validate(self, key: str) -> None:
        _check_finite(self, key)
        _check(self.steps >= 1, f"{key}.steps", "must be >= 1")
        _choice(self.rollout_backend, ("hf", "vllm"), f"{key}.rollout_backend")
        if self.rollout_gpu_memory_utilization is not None:
            _check(0 < self.rollout_gpu_memory_utilization < 1, f"{key}.rollout_gpu_memory_utilization",
                   "must be in (0, 1)")
        _check(self.batch_size >= 1, f"{key}.batch_size", "must be >= 1")
        _check(self.micro_batch_size >= 0, f"{key}.micro_batch_size", "must be >= 0 (0 = no accumulation)")
        if self.micro_batch_size:
            _check(self.batch_size % self.micro_batch_size == 0, f"{key}.micro_batch_size",
                   f"must divide batch_size={self.batch_size}")
        _check(self.lr > 0, f"{key}.lr", f"must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, f"{key}.weight_decay", "must be >= 0")
        _check(self.warmup_steps >= 0, f"{key}.warmup_steps", "must be >= 0")
        _check(0 <= self.min_lr_ratio <= 1, f"{key}.min_lr_ratio", "must be in [0, 1]")
        _check(self.max_grad_norm > 0, f"{key}.max_grad_norm", "must be > 0")
        _choice(self.mixed_precision, ("no", "bf16"), f"{key}.mixed_precision")
        _check(self.checkpoint_every >= 1, f"{key}.checkpoint_every", "must be >= 1")
        _check(self.log_every >= 1, f"{key}.log_every", "must be >= 1")


@dataclass
class EvalConfig:
    splits: list[str] = field(default_factory=lambda: ["validation", "id", "long", "retention"])
    max_new_tokens: int = 200
    batch_size: int = 128
    stability_samples: int = 4  # k samples per problem for the trace-stability figure (0: off)
    stability_temperature: float = 1.0
    stability_problems: int = 100
    backend: str = "hf"  # hf | vllm: the generation backend of evaluation
    shard_size: int = 256  # problems per resumable shard (dcod.shards)
    sampled: bool = True  # real benchmarks: also avg@k where the declaration asks for it (AIME, AMC)

    def validate(self, key: str) -> None:
        _check_finite(self, key)
        _check(len(self.splits) > 0, f"{key}.splits", "must name at least one split")
        _check(self.shard_size >= 1, f"{key}.shard_size", "must be >= 1")
        _check(self.max_new_tokens >= 1, f"{key}.max_new_tokens", "must be >= 1")
        _check(self.batch_size >= 1, f"{key}.batch_size", "must be >= 1")
        _check(self.stability_samples >= 0, f"{key}.stability_samples", "must be >= 0")
        _check(self.stability_temperature > 0, f"{key}.stability_temperature",
               f"must be > 0 (the stability pass samples), got {self.stability_temperature}")
        _check(self.stability_problems >= (1 if self.stability_samples else 0), f"{key}.stability_problems",
               f"must be >= 1 when stability_samples > 0 (else >= 0), got {self.stability_problems}")
        _check(len(set(self.splits)) == len(self.splits), f"{key}.splits", f"must be distinct, got {self.splits}")
        _choice(self.backend, ("hf", "vllm"), f"{key}.backend")


@dataclass
class TuningConfig:
    """Equal tuning budget for every method: the same learning-rate grid, one seed, the validation split."""

    lrs: list[float] = field(default_factory=lambda: [5e-4, 1e-3, 2e-3])
    seed: int = 0
    split: str = "validation"

    def validate(self, key: str) -> None:
        _check_finite(self, key)
        _check(len(self.lrs) > 0 and all(lr > 0 for lr in self.lrs), f"{key}.lrs", "must be positive numbers")
        _check_seed(self.seed, f"{key}.seed")


@dataclass
class ProfileConfig:
    name: str
    data: DataConfig = field(default_factory=DataConfig)
    world: dict[str, Any] = field(default_factory=dict)  # validated by dcod.toy.world.WorldConfig
    student: StudentConfig = field(default_factory=StudentConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    traces: TracesConfig = field(default_factory=TracesConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    threads: int = 1
    experiments: list[str] | None = None  # None: every experiment directory
    ablation_seeds: list[int] | None = None  # None: same as seeds

    def validate(self, key: str = "profile") -> None:
        for section in ("data", "student", "teacher", "pretrain", "traces", "train", "eval", "tuning"):
            getattr(self, section).validate(f"{key}.{section}")
        _check(len(self.seeds) > 0, f"{key}.seeds", "must list at least one seed")
        _check(len(set(self.seeds)) == len(self.seeds), f"{key}.seeds", "must be distinct")
        for name in ("seeds", "ablation_seeds"):
            for seed in getattr(self, name) or []:
                _check_seed(seed, f"{key}.{name}")
        if self.ablation_seeds is not None:
            _check(len(set(self.ablation_seeds)) == len(self.ablation_seeds), f"{key}.ablation_seeds",
                   "must be distinct")
        _check(self.threads >= 1, f"{key}.threads", "must be >= 1")
        _check(self.tuning.split in self.eval.splits, f"{key}.tuning.split", f"must be one of {self.eval.splits}")
        if self.data.source == "benchmarks":
            _check(self.student.path is not None, f"{key}.student.path", "is required with data.source benchmarks")
            splits = [*(["validation"] if self.data.validation else []), *self.data.eval]
            _check(set(self.eval.splits) <= set(splits), f"{key}.eval.splits", f"must be among {splits} (data.eval, "
                   f"and validation when data.validation holds prompts out)")
        if self.world:
            from dcod.toy.world import WorldConfig

            _from_dict(WorldConfig, self.world, f"{key}.world")
        if self.data.source == "toy":
            splits = toy_eval_splits(self.world)
            for split in self.eval.splits:
                _check(split in splits, f"{key}.eval.splits", f"{split!r} is not an evaluation split of the "
                       f"toy world; its splits with problems: {', '.join(splits)} (a split is drawn when its "
                       f"world.n_<split> > 0; extrapolate is off by default)")


def toy_eval_splits(world: dict[str, Any]) -> list[str]:
    """The toy world's evaluation splits that hold problems (``dcod.toy.world.build_world``, see
    docs/toy_world.md): validation, id, long, retention and extrapolate, each drawn when its ``n_<split>`` > 0."""
    from dcod.toy.world import WorldConfig

    cfg = WorldConfig.from_dict(world)
    names = ("validation", "id", "long", "retention", "extrapolate")
    return [name for name in names if getattr(cfg, f"n_{name}") > 0]


# ----------------------------------------------------------------------------- experiments

METHODS = ("sft", "kd", "dft", "onpolicy_kd", "self_distill", "dcod")


@dataclass
class DCODParams:
    """DESIGN §2. ``beta: null`` means adaptive (bisection to ``ess_target``); ``clip: null`` is C = inf."""

    granularity: str = "sequence"
    discount: float = 1.0
    beta: float | None = None
    ess_target: float = 0.5
    beta_max: float = 100.0
    clip: float | None = 5.0
    reference: str = "teacher"
    token_loss: str = "nll"

    def validate(self, key: str) -> None:
        _check_finite(self, key)
        _choice(self.granularity, ("prefix", "sequence"), f"{key}.granularity")
        _check(0.0 <= self.discount <= 1.0, f"{key}.discount", "must be in [0, 1]")
        if self.beta is not None:
            _check(self.beta >= 0, f"{key}.beta", f"must be >= 0 (or null for adaptive), got {self.beta}")
        _check(0.0 < self.ess_target <= 1.0, f"{key}.ess_target", f"must be in (0, 1], got {self.ess_target}")
        _check(self.beta_max > 0, f"{key}.beta_max", f"must be > 0, got {self.beta_max}")
        if self.clip is not None:
            _check(self.clip >= 1.0, f"{key}.clip", "must be >= 1 (weights have mean 1) or null for no truncation")
        _choice(self.reference, ("teacher", "initial_student", "none"), f"{key}.reference")
        _choice(self.token_loss, ("nll", "kd"), f"{key}.token_loss")


@dataclass
class OnPolicyParams:
    """GKD (Agarwal et al. 2024): a fraction of each batch replaced by student samples, scored by the teacher."""

    student_fraction: float = 1.0
    jsd_beta: float = 0.5
    sample_temperature: float = 1.0
    max_new_tokens: int = 0  # 0: the profile's traces.max_new_tokens

    def validate(self, key: str) -> None:
        _check_finite(self, key)
        _check(0.0 <= self.student_fraction <= 1.0, f"{key}.student_fraction", "must be in [0, 1]")
        _check(0.0 <= self.jsd_beta <= 1.0, f"{key}.jsd_beta", f"must be in [0, 1], got {self.jsd_beta}")
        _check(self.sample_temperature > 0, f"{key}.sample_temperature", "must be > 0")
        _check(self.max_new_tokens >= 0, f"{key}.max_new_tokens", "must be >= 0")


@dataclass
class SelfDistillParams:
    """Rejection-sampling self-training (STaR / RFT): k samples per prompt, keep verified ones, R rounds."""

    samples_per_prompt: int = 4
    rounds: int = 2
    sample_temperature: float = 1.0
    prompts_per_round: int = 0  # 0: enough prompts for the round's optimiser steps

    def validate(self, key: str) -> None:
        _check_finite(self, key)
        _check(self.samples_per_prompt >= 1, f"{key}.samples_per_prompt", "must be >= 1")
        _check(self.rounds >= 1, f"{key}.rounds", "must be >= 1")
        _check(self.sample_temperature > 0, f"{key}.sample_temperature", "must be > 0")
        _check(self.prompts_per_round >= 0, f"{key}.prompts_per_round", "must be >= 0")


@dataclass
class EmptyParams:
    def validate(self, key: str) -> None:
        pass


PARAMS = {"sft": EmptyParams, "kd": EmptyParams, "dft": EmptyParams, "dcod": DCODParams,
          "onpolicy_kd": OnPolicyParams, "self_distill": SelfDistillParams}


@dataclass
class ExperimentConfig:
    name: str
    method: str
    description: str = ""
    table: str = "main"  # main: Table 1; ablation: Table 2
    params: Any = None
    train: dict[str, Any] = field(default_factory=dict)  # overrides of the profile's TrainConfig

    def validate(self, key: str) -> None:
        _choice(self.method, METHODS, f"{key}.method")
        _choice(self.table, ("main", "ablation"), f"{key}.table")


def train_config_for(profile: ProfileConfig, experiment: ExperimentConfig) -> TrainConfig:
    merged = {**dataclasses.asdict(profile.train), **experiment.train}
    cfg = _from_dict(TrainConfig, merged, f"{experiment.name}.train")
    cfg.validate(f"experiments/{experiment.name}/config.yaml: train")
    return cfg


# ----------------------------------------------------------------------------- strict loading


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is list:
        (inner,) = typing.get_args(annotation) or (Any,)
        return isinstance(value, list) and all(_type_ok(v, inner) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _from_dict(cls: type, data: dict[str, Any], key: str):
    """Build dataclass ``cls`` from ``data``: unknown keys and wrong types raise ConfigError naming them."""
    if not isinstance(data, dict):
        raise ConfigError(f"{key}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{key}: unknown key(s) {', '.join(repr(u) for u in unknown)}; "
                          f"allowed keys: {', '.join(sorted(fields))}")
    required = [name for name, f in fields.items() if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING and name not in data]
    if required:  # else the dataclass raises a TypeError that names neither the file nor the key
        raise ConfigError(f"{key}: missing required key(s) {', '.join(repr(r) for r in required)}")
    kwargs = {}
    for name, value in data.items():
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            kwargs[name] = _from_dict(annotation, value, f"{key}.{name}")
            continue
        if isinstance(value, str) and annotation in (float, float | None) and _looks_numeric(value):
            value = float(value)  # YAML 1.1 reads 1e-3 as a string
        if annotation == list[float] and isinstance(value, list):
            value = [float(v) if isinstance(v, str) and _looks_numeric(v) else v for v in value]
        if not _type_ok(value, annotation):
            raise ConfigError(f"{key}.{name}: expected {_type_name(annotation)}, got {value!r}")
        kwargs[name] = float(value) if annotation is float else value
    return cls(**kwargs)


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        with open(path) as handle:
            data = yaml.safe_load(handle)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a YAML mapping at the top level")
    return data


def load_profile(path: str | Path) -> ProfileConfig:
    path = Path(path)
    data = _read_yaml(path)
    data.setdefault("name", path.stem)
    profile = _from_dict(ProfileConfig, data, str(path))
    profile.validate(str(path))
    return profile


def parse_experiment(name: str, data: dict[str, Any], source: str) -> ExperimentConfig:
    data = dict(data)
    raw_params = data.pop("params", None) or {}
    experiment = _from_dict(ExperimentConfig, {"name": name, **data}, source)
    experiment.validate(source)
    experiment.params = _from_dict(PARAMS[experiment.method], raw_params, f"{source}: params")
    experiment.params.validate(f"{source}: params")
    overrides = _from_dict(TrainConfig, experiment.train, f"{source}: train")  # unknown keys, types
    overrides.validate(f"{source}: train")  # ranges (defaults are valid, so a failure is an override's)
    return experiment


def load_experiment(path: str | Path) -> ExperimentConfig:
    path = Path(path)
    return parse_experiment(path.parent.name, _read_yaml(path), str(path))


def discover_experiments(root: str | Path, profile: ProfileConfig | None = None) -> list[str]:
    """Experiment names: every ``<root>/<name>/config.yaml``, filtered by the profile's list if it has one."""
    root = Path(root)
    names = sorted(p.parent.name for p in root.glob("*/config.yaml"))
    if profile is not None and profile.experiments is not None:
        missing = sorted(set(profile.experiments) - set(names))
        if missing:
            raise ConfigError(f"profile {profile.name}: experiments {missing} have no {root}/<name>/config.yaml")
        names = [n for n in names if n in profile.experiments]
    return names


def to_dict(obj: Any) -> Any:
    """Resolved config as plain data, saved next to every artifact."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
