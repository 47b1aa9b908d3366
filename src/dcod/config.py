"""Profile and experiment configuration: pydantic models, checked when they are built.

A *profile* (``config/profiles/<name>.yaml``) fixes the world, the models, the shared training
budget, the evaluation and the seeds. An *experiment* (``experiments/<name>/config.yaml``) names a
method, its parameters and, rarely, overrides of the shared training budget; ``base: <experiment>``
starts from another experiment's file, so an ablation states only the knob it varies.

Every model forbids unknown keys, refuses NaN and infinity, and reads ints, strings and booleans
strictly (YAML's ``yes`` is not a number); a float may be written as YAML 1.1 reads ``1e-3``, a
string. A bad value is a ``ConfigError``: pydantic's own message, prefixed with the file and the dotted
key, so a typo never silently falls back to a default.

Config is plain data at the bottom of the import graph: the checks that need the toy world or the
benchmark declarations run where those are used (``dcod.splits.check_profile``), and a method's
parameters are checked by its own ``Params`` model (``dcod.methods.resolve``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError, model_validator


class ConfigError(ValueError):
    """A configuration value is unknown, mistyped or out of range; the message names it."""


def _yaml_float(value):
    """YAML 1.1 reads ``1e-3`` (no dot) as a string: a numeric string is a float; anything else is left
    for the float check to refuse."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


Float = Annotated[float, BeforeValidator(_yaml_float)]
Seed = Annotated[int, Field(ge=0)]  # numpy and torch refuse negative seeds


class Section(BaseModel):
    """Base of every config model (and of every method's ``Params``). Checks run on construction and on
    assignment (pydantic's ValidationError, a ValueError); ``parse_section`` turns a failure into a
    ``ConfigError`` naming the file and the dotted key.

    A model validator raises ``ValueError("<field>: <what is wrong>")``: the field becomes part of the
    dotted key of the error."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_assignment=True)


# ----------------------------------------------------------------------------- errors: pydantic's words, our place
def _config_error(error: ValidationError, source: str, key: str = "") -> ConfigError:
    """The first error of a pydantic ``ValidationError``, in pydantic's words, prefixed with ``source`` and the
    dotted key (``train.lr``) so that the reader finds the line to fix."""
    first = error.errors()[0]
    # a union branch adds its type to the location ('str', 'list[int]'): not a key; a list index is none
    loc = [p for p in first["loc"] if isinstance(p, str) and p not in {"str", "int", "float", "bool", "none"}
           and "[" not in p]
    message = first["msg"]
    if first["type"] == "value_error":  # a model validator's "<field>: <message>": the field joins the key
        field, _, message = str(first["ctx"]["error"]).partition(": ")
        loc.append(field)
    elif first["type"] not in ("missing", "extra_forbidden"):
        message += f", got {first['input']!r}"
    dotted = ".".join(part for part in (key, *loc) if part)
    return ConfigError(f"{source}: {dotted}: {message}" if dotted else f"{source}: {message}")


def parse_section(model: type[BaseModel], data: Any, source: str, key: str = ""):
    """``model`` built from ``data``; a bad value is a ConfigError naming ``source`` and ``key.<field>``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {key or 'config'}: expected a mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise _config_error(error, source, key) from None


# ----------------------------------------------------------------------------- profile sections
class DataConfig(Section):
    """Where prompts come from. ``toy``: the synthetic world (``world`` section). ``benchmarks``: the
    declared real benchmarks (``dcod.benchmarks``), hub by default or ``data_dir`` when offline."""

    source: Literal["toy", "benchmarks"] = "toy"
    # benchmark(s) whose questions are the training prompts: one name, or a list concatenated in order
    train: str | list[str] = "gsm8k_train"
    train_limit: int = Field(0, ge=0)  # per training source; 0: all
    eval: list[str] = Field(default_factory=lambda: ["gsm8k"])
    eval_limit: int = Field(0, ge=0)  # 0: all problems of each benchmark
    data_dir: str | None = None  # local copies (<benchmark>/<split>.jsonl); env DCOD_DATA_DIR also works
    # the `validation` split (tuning reads it, never a test benchmark): {training source: prompts held out},
    # a fixed random sample of each source (validation_seed), removed from the training prompts
    validation: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    validation_seed: Seed = 0

    @property
    def train_sources(self) -> list[str]:
        return [self.train] if isinstance(self.train, str) else list(self.train)

    @model_validator(mode="after")
    def _consistent(self):
        if self.validation and self.source != "benchmarks":
            raise ValueError("validation: is for data.source benchmarks (the toy world writes its own "
                             "validation split)")
        for name in self.validation:
            if name not in self.train_sources:
                sources = ", ".join(self.train_sources)
                raise ValueError(f"validation: {name!r} is not a training source ({sources}): a validation split "
                                 "is held out of the training prompts")
        if self.source == "benchmarks" and not self.train_sources:
            raise ValueError("train: must name at least one benchmark")
        if self.source == "benchmarks" and "validation" in self.eval:
            raise ValueError("eval: 'validation' is the held-out split (data.validation), not a benchmark")
        return self


class StudentConfig(Section):
    """The student. ``path`` set: load a pretrained HF model; else a tiny Llama built from config."""

    path: str | None = None
    gguf_file: str | None = None
    # a hub id's commit sha or tag (dcod.models.pinned_path); null: the hub's latest (pin it for a paper run)
    revision: str | None = None
    hidden_size: int = Field(128, ge=1)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(512, ge=1)
    max_position_embeddings: int = Field(256, ge=1)

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size: must be divisible by num_heads")
        return self


class TeacherRegister(Section):
    """One register of the programmatic teacher (docs/toy_world.md, "The next world": registers): a latent drawn
    once per trace with probability ``weight`` (normalised over the registers), with its own probabilities of
    the notational variants of a decomposed step."""

    weight: Float = Field(gt=0.0)
    p_low_first: Float = Field(0.0, ge=0.0, le=1.0)
    p_skip: Float = Field(0.0, ge=0.0, le=1.0)
    p_round: Float = Field(0.0, ge=0.0, le=1.0)
    # its layout: a space on either side of each operator and `=` of a step with this probability
    p_space: Float = Field(0.0, ge=0.0, le=1.0)

    def as_teacher_register(self) -> dict[str, float]:
        """``{"weight": w, "space": p, <flag>: probability}`` for ``dcod.toy.teacher.ToyTeacher(registers=...)``."""
        return {"weight": self.weight, "space": self.p_space, "low_first": self.p_low_first, "skip": self.p_skip,
                "round": self.p_round}


class TeacherConfig(Section):
    """``programmatic``: the exact toy teacher (docs/toy_world.md). ``hf``: a model at ``path``."""

    kind: Literal["programmatic", "hf"] = "programmatic"
    p_direct: Float = Field(0.5, ge=0.0, le=1.0)
    # the programmatic teacher's probabilities of the notational variants of a decomposed step, drawn
    # independently (dcod.toy.world.VARIANTS: parts in the other order, expansion omitted, operand rounded up;
    # docs/toy_world.md, "The next world"); 0: the canonical rendering only
    p_low_first: Float = Field(0.0, ge=0.0, le=1.0)
    p_skip: Float = Field(0.0, ge=0.0, le=1.0)
    p_round: Float = Field(0.0, ge=0.0, le=1.0)
    # its confidence in each result digit of a direct step (the rest on the neighbouring digits: a carry too
    # many or too few; traces with a wrong digit fail verification); 1: exact (docs/toy_world.md)
    direct_confidence: Float = Field(1.0, gt=0.5, le=1.0)
    # the layout of its steps: a space on either side of each operator and `=` with this probability (a free choice
    # that changes no value; dcod.toy.world.lay_out); 0: compact (docs/toy_world.md, "The next world")
    p_space: Float = Field(0.0, ge=0.0, le=1.0)
    # how a slot is laid out (dcod.toy.world.LAYOUTS): `spaced`, a space on either side with p_space; `padded`, exactly
    # one space, before the slot with p_space, else after it (every layout of a step has the same length)
    layout: Literal["spaced", "padded"] = "spaced"
    # registers of the programmatic teacher (two or more; their variant and space probabilities replace p_low_first /
    # p_skip / p_round / p_space, which must then stay 0); null: one register, the knobs above (docs/toy_world.md)
    registers: list[TeacherRegister] | None = None

    @property
    def variants(self) -> dict[str, float]:
        """``{flag: probability}`` of the programmatic teacher's variants (``dcod.toy.teacher.ToyTeacher``)."""
        return {"low_first": self.p_low_first, "skip": self.p_skip, "round": self.p_round}
    floor: Float = Field(1e-6, gt=0.0, lt=0.01)
    path: str | None = None
    gguf_file: str | None = None
    # a hub id's commit sha or tag (dcod.models.pinned_path); null: the hub's latest (pin it for a paper run)
    revision: str | None = None

    @model_validator(mode="after")
    def _path_for_hf(self):
        if self.kind == "hf" and self.path is None:
            raise ValueError("path: is required when kind is 'hf'")
        return self

    @property
    def register_list(self) -> list[dict[str, float]] | None:
        """The registers for ``dcod.toy.teacher.ToyTeacher(registers=...)``; None: one register."""
        return None if self.registers is None else [r.as_teacher_register() for r in self.registers]

    @model_validator(mode="after")
    def _registers_or_variants(self):
        if self.registers is not None:
            if len(self.registers) < 2:
                raise ValueError("registers: give two or more (one register is p_low_first / p_skip / p_round)")
            if any(self.variants.values()) or self.p_space:
                raise ValueError("registers: each register has its own variant and space probabilities; p_low_first, "
                                 "p_skip, p_round and p_space must stay 0 beside them")
        return self


class PretrainConfig(Section):
    """Pre-training of the toy base student on its native (decomposed) style plus the retention skill."""

    steps: int = Field(600, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: Float = Field(2e-3, gt=0)
    warmup_steps: int = Field(30, ge=0)
    seed: Seed = 1234
    # torch threads of the pre-training (None: the profile's `threads`); fixed here, not by `--cores`, so
    # that the base student does not depend on how many cores Snakemake was given
    threads: int | None = Field(None, ge=1)
    # True: training seed s starts from the base student pre-trained with seed `seed + s` (seed 0 from the
    # profile's own), so that a table's seed level carries the pre-training draw as well as the training
    # draw (why: docs/claims.md, "Seeds carry the pre-training draw"; the DAG: docs/architecture.md);
    # False: every run starts from the one base student
    per_seed: bool = False
    # a folder relative to the repository root holding the shipped base students of the main world and their
    # manifest.json (``python -m dcod ship-base-students``); the DAG copies them instead of pre-training them,
    # after checking every hash and this profile against the manifest (dcod.shipped; docs/reproducibility.md,
    # "Shipped base students"). None: every base student is pre-trained
    shipped: str | None = None

    @model_validator(mode="after")
    def _shipped_inside_the_repository(self):
        if self.shipped is not None:
            parts = Path(self.shipped).parts
            if not parts or Path(self.shipped).is_absolute() or ".." in parts:
                raise ValueError(f"shipped: a folder relative to the repository root without '..', got "
                                 f"{self.shipped!r}")
        return self


class TracesConfig(Section):
    """Offline teacher traces: generated once, verified, stored with per-token log-probs and top-k."""

    samples_per_prompt: int = Field(1, ge=1)
    temperature: Float = Field(1.0, gt=0)  # traces are samples
    top_p: Float = Field(1.0, gt=0, le=1)
    top_k_logprobs: int = Field(20, ge=0)
    max_new_tokens: int = Field(256, ge=1)
    keep_only_correct: bool = True
    seed: Seed = 7
    backend: Literal["hf", "vllm"] = "hf"  # vllm: an HF teacher only; the toy teacher is exact
    shard_size: int = Field(500, ge=1)  # prompts per resumable shard (dcod.shards)


class TrainConfig(Section):
    """The shared training budget: identical for every method (the fair-comparison rule of docs/method.md)."""

    steps: int = Field(150, ge=1)
    # sequences per optimiser step, over all ranks and accumulation micro-batches
    batch_size: int = Field(32, ge=1)
    micro_batch_size: int = Field(0, ge=0)  # 0: no gradient accumulation
    lr: Float = Field(1e-3, gt=0)
    weight_decay: Float = Field(0.0, ge=0)
    warmup_steps: int = Field(10, ge=0)
    min_lr_ratio: Float = Field(0.1, ge=0, le=1)
    max_grad_norm: Float = Field(1.0, gt=0)
    mixed_precision: Literal["no", "bf16"] = "no"
    checkpoint_every: int = Field(50, ge=1)
    log_every: int = Field(10, ge=1)
    # How the Snakemake train rules start a job: null runs one process (`python -m dcod train`); a path
    # (relative to the repository root) runs `accelerate launch --config_file <path> -m dcod train`.
    accelerate_config: str | None = None
    # Where methods that sample the student while training do so: `hf` (the training model itself) or
    # `vllm` (an engine in the training process; the model's weights are pushed into it before each
    # sampling call). `vllm` runs as one training process (the train rules start it without accelerate
    # launch); rollout_gpu_memory_utilization is the share of the GPU the engine takes beside training
    # (null: the vLLM backend's default, meant for an engine alone on its device).
    rollout_backend: Literal["hf", "vllm"] = "hf"
    rollout_gpu_memory_utilization: Float | None = Field(None, gt=0, lt=1)
    # Where the training curves go besides train_log.jsonl, through accelerate's trackers (its names in
    # accelerate 1.15, tracking.py): tensorboard writes offline event files under <run>/tensorboard/;
    # the others need their package installed (and mostly an account). [] switches the curves off.
    trackers: list[Literal["tensorboard", "wandb", "trackio", "aim", "comet_ml", "mlflow", "clearml", "dvclive",
                           "swanlab"]] = Field(default_factory=lambda: ["tensorboard"])
    # Losses read the LM head in chunks of this many target positions from the final hidden states, so the
    # [tokens, vocab] logits never exist whole (docs/benchmarks.md); 0: the model's full logits. Only for
    # vocabularies of at least logits_chunk_min_vocab tokens: below it the logits are small and the full
    # path is faster (the toy student's 20-character vocabulary keeps it, bit-identical to before).
    logits_chunk_tokens: int = Field(1024, ge=0)
    logits_chunk_min_vocab: int = Field(4096, ge=1)
    # Weighted methods (DCOD, iw-SFT) with accumulation: `single_pass` backs each micro-batch with weights
    # known from its own scores and rescales the accumulated gradient by the global normaliser (no
    # scoring pass; DCOD's adaptive beta and truncation threshold lag one step, docs/method.md);
    # `two_pass` scores every micro-batch first with an extra no-grad forward (exact, ~1.3x SFT).
    weighted_accumulation: Literal["single_pass", "two_pass"] = "single_pass"
    # Padding-free batches: the micro-batch's sequences are concatenated into one row with position ids
    # restarting at each sequence, for attention implementations that honour them (flash_attention_2 /
    # sdpa varlen on GPU; docs/benchmarks.md). Off: right-padded rows, as on CPU.
    packing: bool = False
    gradient_checkpointing: bool = False
    # The dtype of the saved student's weights (Trainer.save_model): float32 keeps the trained weights
    # exactly (the toy profiles); bfloat16 halves the folder (a 1.5B student: 3.1 GB instead of 6.2 GB)
    # and is the dtype the paper profile trains and evaluates in.
    save_dtype: Literal["float32", "bfloat16"] = "float32"

    @model_validator(mode="after")
    def _micro_divides(self):
        if self.micro_batch_size and self.batch_size % self.micro_batch_size:
            raise ValueError(f"micro_batch_size: must divide batch_size={self.batch_size}")
        return self


class EvalConfig(Section):
    splits: list[str] = Field(default_factory=lambda: ["validation", "id", "long", "retention"])
    max_new_tokens: int = Field(200, ge=1)
    batch_size: int = Field(128, ge=1)
    stability_samples: int = Field(4, ge=0)  # k samples per problem for the trace-stability figure (0: off)
    stability_temperature: Float = Field(1.0, gt=0)  # the stability pass samples
    stability_problems: int = 100
    backend: Literal["hf", "vllm"] = "hf"  # the generation backend of evaluation
    shard_size: int = Field(256, ge=1)  # problems per resumable shard (dcod.shards)
    sampled: bool = True  # real benchmarks: also avg@k where the declaration asks for it (AIME, AMC)

    @model_validator(mode="after")
    def _consistent(self):
        if not self.splits:
            raise ValueError("splits: must name at least one split")
        if len(set(self.splits)) != len(self.splits):
            raise ValueError(f"splits: must be distinct, got {self.splits}")
        if self.stability_problems < (1 if self.stability_samples else 0):
            raise ValueError(f"stability_problems: must be >= 1 when stability_samples > 0 (else >= 0), got "
                             f"{self.stability_problems}")
        return self


class TuningConfig(Section):
    """Equal tuning budget for every method: the same learning-rate grid, one seed, the validation split."""

    lrs: list[Float] = Field(default_factory=lambda: [5e-4, 1e-3, 2e-3])
    seed: Seed = 0
    split: str = "validation"

    @model_validator(mode="after")
    def _positive(self):
        if not self.lrs or any(lr <= 0 for lr in self.lrs):
            raise ValueError(f"lrs: must be positive numbers, got {self.lrs}")
        return self


class LearningRates(Section):
    """Where each experiment's learning rate comes from on this profile (docs/tuning.md). A learning rate is
    a fact about one profile: it was chosen on that profile's ``validation`` split, so it lives here, never
    in an experiment's config (which every profile shares).

    ``table``: ``values`` maps experiments to the rate the profile's tuning grid chose, copied from the
    tuning results named in ``tuned_from`` (a test checks the copy); ``tuning``: the DAG runs the grid first
    and every training job reads its choice from the tuning results (the DAG: ``work/<profile>/tuning/<E>/choice.csv``). Without this section
    every experiment trains at the profile's ``train.lr`` (one untuned value: the smoke profiles). An
    ablation (``table: ablation``, ``base: <experiment>``) trains at the rate of the experiment it is based
    on unless listed; a Table 1 experiment always needs its own value."""

    source: Literal["table", "tuning"]
    values: dict[str, Float] = Field(default_factory=dict)
    tuned_from: str | None = None  # the tuning results the table was copied from (repository path)

    @model_validator(mode="after")
    def _consistent(self):
        if self.source == "table" and not self.values:
            raise ValueError("values: source 'table' needs the chosen learning rate of every experiment")
        if self.source == "table" and not self.tuned_from:
            raise ValueError("tuned_from: source 'table' must name the tuning results its values come from")
        if self.source == "tuning" and self.values:
            raise ValueError("values: source 'tuning' reads the tuning results; a table would be ignored")
        for name, lr in self.values.items():
            if not lr > 0:
                raise ValueError(f"values: {name}: must be > 0, got {lr}")
        return self


class ReportConfig(Section):
    """Which experiments the report's claims compare: the one under test and the reference baseline
    (experiment names, as in ``experiments/<name>``). The defaults are those of the shipped profiles."""

    subject: str = "dcod"
    baseline: str = "sft"


class RobustnessConfig(Section):
    """The robustness worlds (toy only): every world seed x direct-style probability pair, each with its own
    world, traces and calibration line, trained with ``seeds`` and evaluated on ``splits``. The base student
    depends on the world seed only, so it is shared across the direct-style probabilities."""

    world_seeds: list[Seed] = Field(default_factory=lambda: [0, 1])
    p_direct: list[Annotated[float, Field(ge=0.0, le=1.0)]] = Field(default_factory=lambda: [0.25, 0.5, 0.75])
    seeds: list[Seed] = Field(default_factory=lambda: [0, 1])
    splits: list[str] = Field(default_factory=lambda: ["validation", "id", "long"])
    # None: every Table 1 experiment trained on offline traces only, plus the student-style reference
    experiments: list[str] | None = None


class CalibrationConfig(Section):
    """Extra base students that size the pre-training's knife edge (toy only): the same pre-training with
    other seeds, and with ``steps_factor`` times the steps (the plateau check, docs/toy_world.md)."""

    pretrain_seeds: list[Seed] = Field(default_factory=list)
    steps_factor: Float = Field(1.5, gt=1.0)


class FloatPathCheck(Section):
    """A second run of Table 1 under other float kernels on the same machine (environment variables set for
    every command of that run), published with its spread against the main run."""

    name: str = Field("avx2", pattern=r"^[A-Za-z0-9_]+$")
    env: dict[str, str] = Field(default_factory=lambda: {"ATEN_CPU_CAPABILITY": "avx2",
                                                         "ONEDNN_MAX_CPU_ISA": "AVX2"})


class ProfileConfig(Section):
    name: str
    data: DataConfig = Field(default_factory=DataConfig)
    world: dict[str, Any] = Field(default_factory=dict)  # checked by dcod.toy.world.WorldConfig
    student: StudentConfig = Field(default_factory=StudentConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    traces: TracesConfig = Field(default_factory=TracesConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    learning_rates: LearningRates | None = None  # None: every experiment at train.lr (untuned)
    report: ReportConfig = Field(default_factory=ReportConfig)
    seeds: list[Seed] = Field(default_factory=lambda: [0, 1, 2])
    threads: int = Field(1, ge=1)
    experiments: list[str] | None = None  # None: every experiment directory (or as ``ablations`` says)
    # Table 2 on a cheaper profile: every experiment outside Table 2 (``table`` other than ``ablation``) plus only
    # these ablations, so a new Table 1 method joins the profile without an edit. None: every ablation.
    ablations: list[str] | None = None
    ablation_seeds: list[Seed] | None = None  # None: same as seeds
    # what the numbers are for: ``smoke`` (a profile too small to measure anything: it tests the code path)
    # makes the report say so at its top and judge no claim (docs/reproducibility.md, "Smoke profiles")
    results: Literal["meaningful", "smoke"] = "meaningful"
    robustness: RobustnessConfig | None = None  # toy only: the robustness worlds
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    float_path_check: FloatPathCheck | None = None  # a second Table 1 under other float kernels
    _source: str = PrivateAttr("profile")  # the file it was read from, for checks made later

    @property
    def source(self) -> str:
        return self._source

    def knife_edge_pretrain_seeds(self, main_world: bool = True) -> list[int]:
        """The pre-training seeds, besides ``pretrain.seed``, whose base students the knife-edge calibration
        target compares for one world seed (docs/claims.md, "Five seeds for Table 1"; docs/toy_world.md):
        ``calibration.pretrain_seeds`` and, under ``pretrain.per_seed``, the base student of every training
        seed run on that world seed (the main world: Table 1, Table 2 and the robustness seeds; another world
        seed: the robustness seeds). The DAG pre-trains and evaluates exactly these; the calibration and
        robustness reports read them."""
        seeds = set(self.calibration.pretrain_seeds)
        if self.pretrain.per_seed:
            robust = list(self.robustness.seeds) if self.robustness is not None else []
            trained = [*self.seeds, *(self.ablation_seeds or self.seeds), *robust] if main_world else robust
            seeds |= {self.pretrain.seed + int(s) for s in trained}
        return sorted(seeds - {self.pretrain.seed})

    @model_validator(mode="after")
    def _consistent(self):
        if not self.seeds:
            raise ValueError("seeds: must list at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds: must be distinct")
        if self.ablation_seeds is not None and len(set(self.ablation_seeds)) != len(self.ablation_seeds):
            raise ValueError("ablation_seeds: must be distinct")
        if self.tuning.split not in self.eval.splits:
            raise ValueError(f"tuning.split: must be one of {self.eval.splits}")
        if self.learning_rates is not None:
            if "lr" in self.train.model_fields_set:
                raise ValueError(f"train: sets lr, which learning_rates (source {self.learning_rates.source}) "
                                 "replaces for every experiment; remove train.lr")
            grid = set(self.tuning.lrs)
            off_grid = {name: lr for name, lr in self.learning_rates.values.items() if lr not in grid}
            if off_grid:
                raise ValueError(f"learning_rates: {off_grid} are not points of this profile's tuning grid "
                                 f"tuning.lrs {self.tuning.lrs}: a value chosen on another grid (another "
                                 "profile's) does not belong here")
        if self.experiments is not None and self.ablations is not None:
            raise ValueError("ablations: a profile lists its experiments by hand or derives them (every Table 1 "
                             "experiment plus `ablations`), not both; remove one")
        if self.robustness is not None:
            if self.data.source != "toy":
                raise ValueError("robustness: the robustness worlds exist for data.source toy only")
            if not set(self.robustness.splits) <= set(self.eval.splits):
                raise ValueError(f"robustness.splits: must be among eval.splits {self.eval.splits}")
        if self.pretrain.per_seed and self.student.path is not None:
            raise ValueError("pretrain.per_seed: needs a student pre-trained by this pipeline (student.path is "
                             f"set to {self.student.path!r}: there is one base model, not one per seed)")
        if self.data.source == "benchmarks":
            if self.student.path is None:
                raise ValueError("student.path: is required with data.source benchmarks")
            splits = [*(["validation"] if self.data.validation else []), *self.data.eval]
            if not set(self.eval.splits) <= set(splits):
                raise ValueError(f"eval.splits: must be among {splits} (data.eval, and validation when "
                                 "data.validation holds prompts out)")
        return self


# ----------------------------------------------------------------------------- experiments
class ExperimentConfig(Section):
    name: str
    method: str  # a registered method (dcod.methods); checked with its params by dcod.methods.resolve
    description: str = ""
    # main: Table 1; ablation: Table 2 (one knob of a main experiment); prior: Table 3, prior offline methods
    table: Literal["main", "ablation", "prior"] = "main"
    # teacher: the offline teacher traces; student_style (toy only): traces of the teacher forced to the
    # student's native style -- the oracle reference row, knowledge no real method has
    traces: Literal["teacher", "student_style"] = "teacher"
    params: dict[str, Any] = Field(default_factory=dict)  # the method's Params, checked by resolve
    train: dict[str, Any] = Field(default_factory=dict)  # overrides of the profile's TrainConfig (never lr)
    _source: str = PrivateAttr("experiment")
    _bases: tuple[str, ...] = PrivateAttr(())  # the experiments of its base: chain, nearest first

    @property
    def source(self) -> str:
        return self._source

    @property
    def bases(self) -> tuple[str, ...]:
        return self._bases


class LearningRate(BaseModel):
    """The learning rate one training job uses and where it came from (printed by ``dcod config show``,
    recorded in run.json)."""

    value: float
    origin: str


def _rate_names(experiment: ExperimentConfig) -> tuple[str, ...]:
    """The names an experiment's rate is looked up under: its own, then, for an ablation, its base: chain."""
    return (experiment.name, *(experiment.bases if experiment.table == "ablation" else ()))


def learning_rate_needs_tuning(profile: ProfileConfig, experiment: ExperimentConfig) -> bool:
    """Whether training ``experiment`` on ``profile`` waits for the profile's tuning results: always under
    ``source: tuning``; under ``source: table`` when neither it nor (for an ablation) its bases are in the
    table -- a method newer than the table is tuned by the DAG on validation, never given another's rate."""
    rates = profile.learning_rates
    if rates is None:
        return False
    return rates.source == "tuning" or not any(name in rates.values for name in _rate_names(experiment))


def learning_rate_for(profile: ProfileConfig, experiment: ExperimentConfig,
                      tuning_results: str | Path | None = None) -> LearningRate:
    """The learning rate of ``experiment`` on ``profile`` (``LearningRates``): the profile's table, the
    profile's tuning results (``tuning_results``, the CSV ``python -m dcod tuning`` writes), or the profile's one
    ``train.lr``. The experiment's own name is looked up first, then, for an ablation (``table: ablation``),
    its base: chain (an ablation trains at the rate of the experiment it varies; a Table 1 or Table 3 row is
    always tuned itself). Under ``source: table`` an experiment missing from the table reads the tuning
    results (``learning_rate_needs_tuning``). Anything that cannot be resolved is a ConfigError naming it."""
    rates = profile.learning_rates
    names = _rate_names(experiment)
    if rates is None:
        return LearningRate(value=profile.train.lr, origin=f"{profile.source}: train.lr (one untuned value for "
                                                           "every experiment of this profile)")
    if rates.source == "table":
        for name in names:
            if name in rates.values:
                via = "" if name == experiment.name else f" (inherited through base: {name})"
                return LearningRate(value=rates.values[name],
                                    origin=f"{profile.source}: learning_rates.values.{name}{via}, chosen on "
                                           f"validation by the grid {rates.tuned_from}")
    if tuning_results is None:
        why = ("learning_rates.source is 'tuning'" if rates.source == "tuning" else
               f"learning_rates.values has no rate for it (nor its bases {list(experiment.bases)}), so the "
               "profile's grid tunes it")
        raise ConfigError(f"{profile.source}: {why}: training {experiment.name!r} needs the tuning results "
                          "(--lr-table: a tuning CSV such as results/<profile>/tuning.csv; the DAG builds one first)")
    newer = "" if rates.source == "tuning" else f", not in learning_rates.values (newer than {rates.tuned_from})"
    chosen = _chosen_learning_rates(Path(tuning_results))
    for name in names:
        if name in chosen:
            via = "" if name == experiment.name else f" (inherited through base: {name})"
            return LearningRate(value=chosen[name], origin=f"{tuning_results}: the grid's choice for {name} on "
                                                           f"{profile.tuning.split}{via}{newer}")
    raise ConfigError(f"{tuning_results}: no chosen learning rate for {experiment.name!r} (nor its bases "
                      f"{list(experiment.bases)}): was it tuned with this profile?")


def _chosen_learning_rates(path: Path) -> dict[str, float]:
    """{experiment: chosen lr} of a tuning CSV (columns experiment, lr, chosen)."""
    import csv

    if not path.is_file():
        raise ConfigError(f"{path}: no such tuning results file")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and not {"experiment", "lr", "chosen"} <= set(rows[0]):
        raise ConfigError(f"{path}: not a tuning results file (needs columns experiment, lr, chosen)")
    return {row["experiment"]: float(row["lr"]) for row in rows if row["chosen"] == "True"}


def train_config_for(profile: ProfileConfig, experiment: ExperimentConfig, lr: float | None = None) -> TrainConfig:
    """The profile's training budget with the experiment's overrides and the learning rate ``lr`` (from
    ``learning_rate_for``), checked as a whole. Without ``lr`` the budget keeps the profile's ``train.lr``:
    only for callers that read the other knobs (the DAG's launcher choice), never for training."""
    merged = {**profile.train.model_dump(), **experiment.train}
    if lr is not None:
        merged["lr"] = lr
    return parse_section(TrainConfig, merged, experiment.source, "train")


# ----------------------------------------------------------------------------- loading
def _read_yaml(path: Path) -> dict[str, Any]:
    from dcod.io import load_yaml  # the project's one YAML reader: a duplicate key names file and line

    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = load_yaml(path)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a YAML mapping at the top level")
    return data


def load_profile(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ProfileConfig:
    """A profile file, with ``section.key=value`` overrides applied before it is checked (the DAG derives
    the robustness worlds and the calibration base students this way: ``world.seed=1``,
    ``teacher.p_direct=0.25``, ``pretrain.seed=1235``). Values are read as YAML scalars."""
    path = Path(path)
    data = _read_yaml(path)
    data.setdefault("name", path.stem)
    source = str(path)
    for assignment in overrides:
        data = merge(data, _override(assignment, source))
    if overrides:
        source = f"{path} with {' '.join(overrides)}"
    profile = parse_section(ProfileConfig, data, source)
    profile._source = source
    return profile


def _override(assignment: str, source: str) -> dict[str, Any]:
    key, sep, text = assignment.partition("=")
    parts = key.split(".")
    if not sep or not all(part.strip() for part in parts):
        raise ConfigError(f"{source}: override {assignment!r} is not of the form section.key=value")
    from dcod.io import parse_yaml

    try:
        value = parse_yaml(text, f"override {assignment!r}")
    except yaml.YAMLError:
        raise ConfigError(f"{source}: override {assignment!r}: the value is not a YAML scalar") from None
    nested: Any = value
    for part in reversed(parts):
        nested = {part: nested}
    return nested


def parse_experiment(name: str, data: dict[str, Any], source: str) -> ExperimentConfig:
    """An experiment from its (already inherited) mapping; its train overrides are checked against the
    default budget here (the defaults are valid, so a failure is an override's)."""
    data = {**data, "params": data.get("params") or {}, "train": data.get("train") or {}}
    experiment = parse_section(ExperimentConfig, {"name": name, **data}, source)
    experiment._source = source
    if "lr" in experiment.train:
        raise ConfigError(f"{source}: train.lr: a learning rate is a fact about a profile (it is chosen on that "
                          f"profile's validation split), not about the method; put it in the profile, "
                          f"config/profiles/<profile>.yaml learning_rates.values.{name} (docs/tuning.md)")
    parse_section(TrainConfig, experiment.train, source, "train")
    return experiment


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``, mappings merged key by key (``clip: null`` overrides a number)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_experiment(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The experiment file's mapping with its ``base:`` chain applied (``experiments/<base>/config.yaml``
    first); a cycle or a missing base is refused with the file named."""
    path = Path(path)
    data = _read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: base: must name an experiment folder, got {base!r}")
    base_path = path.parent.parent / base / "config.yaml"
    seen = (*chain, path.resolve())
    if base_path.resolve() in seen:
        cycle = " -> ".join(p.parent.name for p in (*seen, base_path.resolve()))
        raise ConfigError(f"{path}: base: {base!r} makes a cycle ({cycle})")
    if not base_path.is_file():
        raise ConfigError(f"{path}: base: no experiment {base!r} ({base_path} does not exist)")
    return merge(read_experiment(base_path, seen), data)


def experiment_chain(path: str | Path) -> list[Path]:
    """The experiment file and the files it inherits from, nearest first."""
    read_experiment(Path(path))  # refuses a cycle or a missing base, naming the file
    chain = [Path(path)]
    while (base := _read_yaml(chain[-1]).get("base")) is not None:
        chain.append(chain[-1].parent.parent / base / "config.yaml")
    return chain


def load_experiment(path: str | Path) -> ExperimentConfig:
    path = Path(path)
    experiment = parse_experiment(path.parent.name, read_experiment(path), str(path))
    experiment._bases = tuple(base.parent.name for base in experiment_chain(path)[1:])
    return experiment


def discover_experiments(root: str | Path, profile: ProfileConfig | None = None) -> list[str]:
    """Experiment names: every ``<root>/<name>/config.yaml``, filtered by the profile's list if it has one."""
    root = Path(root)
    names = sorted(p.parent.name for p in root.glob("*/config.yaml"))
    if profile is not None and profile.experiments is not None:
        missing = sorted(set(profile.experiments) - set(names))
        if missing:
            raise ConfigError(f"profile {profile.name}: experiments {missing} have no {root}/<name>/config.yaml")
        names = [n for n in names if n in profile.experiments]
    if profile is not None and profile.ablations is not None:
        names = _with_ablations(root, names, profile)
    if profile is not None and profile.data.source != "toy":
        # the student-style reference needs the toy teacher forced to one style: toy profiles only
        styled = [n for n in names if load_experiment(root / n / "config.yaml").traces == "student_style"]
        if styled and profile.experiments is not None:
            raise ConfigError(f"profile {profile.name}: experiments {styled} train on student-style traces, "
                              "which exist for data.source toy only")
        names = [n for n in names if n not in styled]
    return names


def _with_ablations(root: Path, names: list[str], profile: ProfileConfig) -> list[str]:
    """Every experiment of ``names`` outside Table 2 (Table 1 and any other non-ablation table) and only the
    ablations the profile lists: the derived list of ``ProfileConfig.ablations``."""
    tables = {name: load_experiment(root / name / "config.yaml").table for name in names}
    unknown = sorted(set(profile.ablations) - {name for name, table in tables.items() if table == "ablation"})
    if unknown:
        raise ConfigError(f"{profile.source}: ablations: {unknown} are not Table 2 experiments (an "
                          f"{root}/<name>/config.yaml with table: ablation)")
    return [name for name in names if tables[name] != "ablation" or name in profile.ablations]
