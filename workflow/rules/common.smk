from pathlib import Path

from snakemake.utils import validate

from dcod.config import (discover_experiments, experiment_chain, learning_rate_for, load_experiment, load_profile,
                         train_config_for)
from dcod.io import load_yaml
from dcod.launch import check_launch
from dcod.methods import needs_of, resolve
from dcod.provenance import PROFILE_IGNORED, STAGE_CODE, code_fingerprint, profile_fingerprint
from dcod.splits import check_profile

validate(config, "../schemas/config.schema.yaml")

BASE = Path(workflow.basedir)
PROFILE = config.get("profile", "toy")
PROFILE_FILE = BASE / "config" / "profiles" / f"{PROFILE}.yaml"
EXPERIMENTS_DIR = BASE / "experiments"
ENV = BASE / "environment.yml"
P = check_profile(load_profile(PROFILE_FILE))  # strict: an unknown or mistyped key stops here with its name

# What every rule depends on besides its input files, as Snakemake params (the params trigger reruns a job
# when one changes): the code of its stage and the sections of the profile that stage reads
# (dcod.provenance). The profile file is a param, never an input: an edit reruns a job only through these
# fingerprints (docs/reproducibility.md, "Results follow the code and the profile"). It stays a Path:
# Snakemake compares only plain-typed params, so moving the checkout reruns nothing.
STAGE_PARAMS = {stage: {"code": code_fingerprint(STAGE_CODE[stage]), "profile_sections": profile_fingerprint(P, stage),
                        "profile": PROFILE_FILE}
                for stage in PROFILE_IGNORED}

# The default profile writes to results/, figures/, paper/; others to a subfolder named after them.
W = f"work/{PROFILE}"
R = "results" if PROFILE == "toy" else f"results/{PROFILE}"
F = "figures" if PROFILE == "toy" else f"figures/{PROFILE}"
DOC = "paper" if PROFILE == "toy" else f"paper/{PROFILE}"

EXPERIMENTS = discover_experiments(EXPERIMENTS_DIR, P)
# every experiment resolved through the method registry now: a bad config fails the dry run, naming its file
EXPERIMENT_OF = {name: load_experiment(EXPERIMENTS_DIR / name / "config.yaml") for name in EXPERIMENTS}
NEEDS_OF = {name: needs_of(experiment) for name, experiment in EXPERIMENT_OF.items()}
# a method that reads the toy world's step styles (oracle_knowledge) exists on toy profiles only
_TOY_ONLY = [name for name in EXPERIMENTS if NEEDS_OF[name].oracle_knowledge and P.data.source != "toy"]
if _TOY_ONLY and P.experiments is not None:
    raise ValueError(f"profile {PROFILE}: experiments {_TOY_ONLY} read the toy world's step styles "
                     "(oracle_knowledge), which exist for data.source toy only")
EXPERIMENTS = [name for name in EXPERIMENTS if name not in _TOY_ONLY]
MAIN = [e for e in EXPERIMENTS if EXPERIMENT_OF[e].table == "main"]
ABLATIONS = [e for e in EXPERIMENTS if EXPERIMENT_OF[e].table == "ablation"]
# table 2 compares every ablation with the profile's report.baseline and report.subject, on the ablation seeds
BASELINE = P.report.baseline
TABLE2_EXPERIMENTS = [e for e in (BASELINE, P.report.subject) if e in MAIN] + ABLATIONS
SEEDS = P.seeds
ABLATION_SEEDS = P.ablation_seeds or P.seeds

TABLE1 = f"{R}/table1.csv"
TABLE2 = f"{R}/table2.csv"
# measured wall times, apart so that the tables themselves are bit-for-bit reproducible
TABLE1_TIMING = f"{R}/table1_timing.csv"
TABLE2_TIMING = f"{R}/table2_timing.csv"
# The toy world's structure (step styles, chain length k) exists only there: the calibration report
# (forced-style teachers), the forced-style references and the accuracy-vs-chain-length figure are
# built for `data.source: toy` only. The list of toy-only figures is also dcod.reporting.figures.TOY_ONLY.
TOY = P.data.source == "toy"
CALIBRATION = [f"{R}/calibration.csv"] if TOY else []
TOY_FIGURES = ["accuracy_vs_length"]
FIGURE_NAMES = [name for name in ["accuracy_per_split", "accuracy_vs_length", "dcod_diagnostics",
                                  "accuracy_vs_cost", "trace_stability"] if TOY or name not in TOY_FIGURES]
FIGURES = expand(f"{F}/{{name}}.png", name=FIGURE_NAMES)
REPORT = f"{DOC}/report.md"
# The published snapshot (committed; the DAG never writes it): a fresh Table 1 is compared with it
PUBLISHED = BASE / "paper" / "published" / ("" if PROFILE == "toy" else PROFILE)
PUBLISHED_TABLE1 = PUBLISHED / "results" / "table1.csv"
COMPARISON = [f"{R}/comparison.md"] if PUBLISHED_TABLE1.is_file() else []
# models evaluated besides the runs: the base student, the teacher, (toy) the teacher forced to one style
REFERENCES = ["base_student", "teacher"] + (["teacher_direct", "teacher_decomposed"] if TOY else [])


EVAL_FILES = ["metrics.csv", "samples.jsonl", "stability.csv"]
RUN_FILES = ["run.json", "train_log.jsonl"]


def evals(experiments, seeds):
    """Every evaluation output of these runs (the reports read all three files)."""
    return expand(f"{W}/eval/{{experiment}}/seed{{seed}}/{{file}}", experiment=experiments, seed=seeds,
                  file=EVAL_FILES)


def runs(experiments, seeds):
    return expand(f"{W}/runs/{{experiment}}/seed{{seed}}/{{file}}", experiment=experiments, seed=seeds,
                  file=RUN_FILES)


TUNING = f"{R}/tuning.csv"
# a profile with a real learning-rate grid tunes before it reports; the report shows the grid
TUNING_TARGETS = [TUNING] if len(P.tuning.lrs) > 1 else []
TUNING_SEED = P.tuning.seed
TUNING_SPLIT = P.tuning.split
TUNING_LRS = [f"{lr:g}" for lr in P.tuning.lrs]
# Where the learning rates come from (ProfileConfig.learning_rates): the profile's table is checked for
# every experiment now, so a missing value fails the dry run; `source: tuning` makes every training job
# wait for the profile's tuning grid and read its choice from TUNING
LR_FROM_TUNING = P.learning_rates is not None and P.learning_rates.source == "tuning"
if not LR_FROM_TUNING:
    for _name in EXPERIMENTS:
        learning_rate_for(P, EXPERIMENT_OF[_name])


def lr_table(wildcards):
    """The tuning results a training job reads its learning rate from (learning_rates.source tuning)."""
    return [TUNING] if LR_FROM_TUNING else []


def lr_option(wildcards):
    return f"--lr-table {TUNING}" if LR_FROM_TUNING else ""


def settings_without_lr(name):
    """An experiment's resolved config (its base: chain applied) as canonical JSON without its train.lr
    (what the tuning grid depends on)."""
    import json

    data = EXPERIMENT_OF[name].model_dump(mode="json")
    data["train"] = {k: v for k, v in data["train"].items() if k != "lr"}
    return json.dumps(data, sort_keys=True)


def _train_launch(experiment_name):
    """(accelerate config or None for one process, the experiment's train config). A method that samples
    the student with vLLM runs as one process (the engine lives in the training process)."""
    cfg = train_config_for(P, EXPERIMENT_OF[experiment_name])
    one_process = NEEDS_OF[experiment_name].student_rollouts and cfg.rollout_backend == "vllm"
    if cfg.accelerate_config is None or one_process:
        return None, cfg
    config_file = BASE / cfg.accelerate_config
    if not config_file.is_file():
        raise ValueError(f"train.accelerate_config: {config_file} does not exist")
    # DeepSpeed + accumulation + a weighted loss: refused here too, so the dry run fails (dcod/launch.py)
    check_launch(cfg, resolve(EXPERIMENT_OF[experiment_name])[0].weighted, config_file,
                 where=f"experiments/{experiment_name}/config.yaml with {PROFILE_FILE.name}")
    return config_file, cfg


def experiment_bases(wildcards):
    """The config files an experiment inherits from (its base: chain): a change to one reruns it too."""
    return experiment_chain(EXPERIMENTS_DIR / wildcards.experiment / "config.yaml")[1:]


def train_launcher(wildcards):
    """``python`` or ``accelerate launch --config_file <config>`` (the profile's or experiment's train.accelerate_config)."""
    config_file, _ = _train_launch(wildcards.experiment)
    return "python" if config_file is None else f"accelerate launch --config_file {config_file}"


def train_gpus(wildcards):
    """GPUs a train job asks a cluster executor for: the accelerate config's num_processes; 1 for a
    one-process job that trains in mixed precision (a GPU profile), else 0 (CPU)."""
    config_file, cfg = _train_launch(wildcards.experiment)
    if config_file is None:
        return 1 if cfg.mixed_precision != "no" else 0
    return int((load_yaml(config_file) or {}).get("num_processes", 1))


def tuning_evals(experiments):
    return expand(f"{W}/tuning/{{experiment}}/lr{{lr}}/eval/metrics.csv", experiment=experiments, lr=TUNING_LRS)


def references(names):
    return expand(f"{W}/eval/{{reference}}/{{file}}", reference=names, file=EVAL_FILES)


# ------------------------------------------------------------------ roots: the main run and its variants
# A root is a work folder with the main layout (world/, base_student/, traces/, runs/, eval/). Besides the
# main one (W): the robustness worlds (world seed x direct-style probability), the calibration base
# students (other pre-training seeds, more steps) and the second float path (Table 1 rerun under other CPU
# kernels). Every command of a root gets that root's profile overrides (--set) and environment.
import re as _re

MAIN_WORLD_SEED = int(P.world.get("seed", 0)) if TOY else None


def _p_name(p):
    return f"{p:g}"


ROBUST = P.robustness if TOY else None
ROBUST_WORLDS = {}  # world name -> root
ROBUST_OVERRIDES = {}  # root -> overrides
if ROBUST is not None:
    for ws in ROBUST.world_seeds:
        for pd_ in ROBUST.p_direct:
            name = f"w{ws}_p{_p_name(pd_)}"
            if ws == MAIN_WORLD_SEED and pd_ == P.teacher.p_direct:
                ROBUST_WORLDS[name] = W  # the main world is one of them: its Table 1 runs are reused
            else:
                root = f"{W}/robustness/{name}"
                ROBUST_WORLDS[name] = root
                ROBUST_OVERRIDES[root] = [f"world.seed={ws}", f"teacher.p_direct={pd_:g}"]
ROBUST_SEEDS = ROBUST.seeds if ROBUST is not None else []
ROBUST_EXPERIMENTS = []
if ROBUST is not None:
    ROBUST_EXPERIMENTS = ROBUST.experiments or [
        e for e in MAIN
        if (NEEDS_OF[e].offline_traces and not NEEDS_OF[e].student_rollouts and not NEEDS_OF[e].teacher_model) or EXPERIMENT_OF[e].traces == "student_style"]
    missing = sorted(set(ROBUST_EXPERIMENTS) - set(MAIN))
    if missing:
        raise ValueError(f"robustness.experiments: {missing} are not Table 1 experiments of this profile")


def _shared_base_root(ws):
    """The root whose base student serves every robustness world of world seed ws (the base student does
    not depend on the direct-style probability)."""
    if ws == MAIN_WORLD_SEED:
        return W
    return min(root for root, sets in ROBUST_OVERRIDES.items() if sets[0] == f"world.seed={ws}")


CALIBRATION_ROOTS = {}  # root -> overrides: the knife-edge and plateau base students
if TOY:
    for s in P.calibration.pretrain_seeds:
        CALIBRATION_ROOTS[f"{W}/calibration/pretrain_seed{s}"] = [f"pretrain.seed={s}"]
    if P.calibration.pretrain_seeds:
        steps = round(P.pretrain.steps * P.calibration.steps_factor)
        CALIBRATION_ROOTS[f"{W}/calibration/steps_x{P.calibration.steps_factor:g}"] = [f"pretrain.steps={steps}"]

FLOAT = P.float_path_check
FLOAT_ROOT = f"{W}/float_paths/{FLOAT.name}" if FLOAT is not None else None
FLOAT_RESULTS = f"{R}/float_paths/{FLOAT.name}" if FLOAT is not None else None

# pretrain.per_seed: training seed s starts from the base student pre-trained with seed pretrain.seed + s.
# That base student lives in a pre-training root <owner>/calibration/pretrain_seed<p> of the root that owns
# the base students (the main one, a robustness world seed's first world, the float-path check): for the
# main root these are the calibration report's knife-edge base students, pre-trained once for both uses.
PAIRED = P.pretrain.per_seed
PRETRAIN_ROOTS = {}  # pre-training root -> the root that owns it (its world, overrides and environment)


def pretrain_seed_of(seed):
    return P.pretrain.seed + int(seed)


def pretrain_root(owner, pretrain_seed):
    return f"{owner}/calibration/pretrain_seed{pretrain_seed}"


def base_owner(root):
    """The root whose base student(s) a root's runs start from (robustness worlds share one per world seed)."""
    if root in ROBUST_OVERRIDES:
        return _shared_base_root(int(ROBUST_OVERRIDES[root][0].split("=")[1]))
    return root


if PAIRED:
    _owners = {W: sorted({*SEEDS, *ABLATION_SEEDS, *ROBUST_SEEDS})}
    if FLOAT_ROOT:
        _owners[FLOAT_ROOT] = SEEDS
    for _root in ROBUST_OVERRIDES:
        _owners.setdefault(base_owner(_root), ROBUST_SEEDS)
    for _owner, _seeds in _owners.items():
        for _seed in _seeds:
            if int(_seed) != 0:
                PRETRAIN_ROOTS[pretrain_root(_owner, pretrain_seed_of(_seed))] = _owner

# The knife-edge calibration target compares every base student pre-trained for a world seed
# (ProfileConfig.knife_edge_pretrain_seeds): on the main world the calibration's and the seeds' own; on every
# other world seed the same calibration.pretrain_seeds, pre-trained in that world seed's owner root (the
# robustness report finds it there as _shared_base_root does, in the smallest root of the seed).
KNIFE_EDGE_SEEDS = {}  # owner root -> pre-training seeds besides pretrain.seed
if TOY:
    KNIFE_EDGE_SEEDS[W] = P.knife_edge_pretrain_seeds(main_world=True)
    for _root in ROBUST_OVERRIDES:
        _owner = base_owner(_root)
        if _owner != W:
            KNIFE_EDGE_SEEDS[_owner] = P.knife_edge_pretrain_seeds(main_world=False)
    for _owner, _seeds in KNIFE_EDGE_SEEDS.items():
        for _p in _seeds:
            PRETRAIN_ROOTS.setdefault(pretrain_root(_owner, _p), _owner)


def root_overrides(root):
    if root in ROBUST_OVERRIDES:
        return ROBUST_OVERRIDES[root]
    if root in CALIBRATION_ROOTS:
        return CALIBRATION_ROOTS[root]
    if root in PRETRAIN_ROOTS:
        return [*root_overrides(PRETRAIN_ROOTS[root]), f"pretrain.seed={root.rsplit('pretrain_seed', 1)[1]}"]
    return []


# a pre-training root that is also a calibration root is built once for both: it must be the same model
for _root, _owner in PRETRAIN_ROOTS.items():
    if _root in CALIBRATION_ROOTS:
        _pretrain = [*root_overrides(_owner), f"pretrain.seed={_root.rsplit('pretrain_seed', 1)[1]}"]
        if CALIBRATION_ROOTS[_root] != _pretrain:
            raise ValueError(f"{_root}: the calibration overrides {CALIBRATION_ROOTS[_root]} differ from the per-seed "
                             f"pre-training's {_pretrain}; the two cannot share one base student")


def root_sets(wildcards):
    """--set arguments of a root's commands."""
    return " ".join(f"--set {o}" for o in root_overrides(wildcards.root))


def root_env(wildcards):
    """The environment prefix of a root's commands (the float-path check's kernel selection, also for the
    pre-training roots it owns)."""
    root = PRETRAIN_ROOTS.get(wildcards.root, wildcards.root)
    if FLOAT_ROOT is not None and root == FLOAT_ROOT:
        return "env " + " ".join(f"{k}={v}" for k, v in FLOAT.env.items()) + " "
    return ""


def root_world(wildcards):
    """Calibration base students share the main world, pre-training roots their owner's; robustness worlds
    and the float-path check build their own (the float-path check reruns every stage under its kernels)."""
    root = wildcards.root
    if root in CALIBRATION_ROOTS:
        return f"{W}/world/world.json"
    return f"{PRETRAIN_ROOTS.get(root, root)}/world/world.json"


def root_base(wildcards):
    """The base student of a root (its pre-training seed is the profile's, or the pre-training root's)."""
    root = wildcards.root
    if root in PRETRAIN_ROOTS or root in CALIBRATION_ROOTS:
        return f"{root}/base_student"
    return f"{base_owner(root)}/base_student"


def seed_base(wildcards):
    """The base student a run of seed ``wildcards.seed`` starts from: the root's one, or under
    pretrain.per_seed the one pre-trained with seed pretrain.seed + seed."""
    if not PAIRED or int(wildcards.seed) == 0:
        return root_base(wildcards)
    return f"{pretrain_root(base_owner(wildcards.root), pretrain_seed_of(wildcards.seed))}/base_student"


def traces_of(experiment):
    """The traces folder name an experiment trains on: the teacher's, or the student-style reference's."""
    return "traces_student_style" if EXPERIMENT_OF[experiment].traces == "student_style" else "traces"


def root_traces(wildcards):
    return f"{wildcards.root}/{traces_of(wildcards.experiment)}/train.parquet"


def root_eval_options(wildcards):
    """Robustness worlds and calibration base students are evaluated on the robustness splits only
    (calibration: validation, id, long), without the stability samples."""
    if wildcards.root in ROBUST_OVERRIDES:
        return f"--splits {','.join(ROBUST.splits)} --no-stability"
    if wildcards.root in CALIBRATION_ROOTS or wildcards.root in PRETRAIN_ROOTS:
        splits = [s for s in P.eval.splits if s in ("validation", "id", "long")]
        return f"--splits {','.join(splits)} --no-stability"
    return ""


def knife_edge_evals(owners):
    """The evaluations of the knife-edge base students of these owner roots that CALIBRATION_EVALS lacks."""
    evals = [f"{pretrain_root(o, p)}/eval/base_student/{f}" for o in owners for p in KNIFE_EDGE_SEEDS.get(o, [])
             for f in EVAL_FILES]
    return [e for e in evals if e not in CALIBRATION_EVALS]


_ROOTS = [W, *ROBUST_OVERRIDES, *CALIBRATION_ROOTS, *PRETRAIN_ROOTS, *([FLOAT_ROOT] if FLOAT_ROOT else [])]
_ROOTS = sorted(set(_ROOTS), key=lambda r: (-len(r), r))  # longest first: a root is never cut at a prefix


wildcard_constraints:
    root="|".join(_re.escape(r) for r in _ROOTS),
    seed=r"\d+",
    lr=r"[0-9.e\-]+",
    experiment=r"[A-Za-z0-9_\-]+",


ORACLE = [e for e in MAIN if EXPERIMENT_OF[e].traces == "student_style"]
ROBUSTNESS = f"{R}/robustness.csv"
ROBUSTNESS_TARGETS = [ROBUSTNESS, f"{F}/robustness.png"] if ROBUST is not None else []
FLOAT_PATH_TARGETS = [f"{R}/float_path.md", f"{R}/float_path.csv"] if FLOAT is not None else []
CALIBRATION_EVALS = [f"{root}/eval/base_student/{f}" for root in CALIBRATION_ROOTS for f in EVAL_FILES]



def base_evals(root, seeds):
    """The base-student evaluations a table of ``root`` reads: one per seed under pretrain.per_seed
    (each seed's own base student), else the one reference evaluation."""
    if PAIRED:
        return expand(f"{root}/eval/base_student/seed{{seed}}/{{file}}", seed=seeds, file=EVAL_FILES)
    return [f"{root}/eval/base_student/{f}" for f in EVAL_FILES]
