import re
from pathlib import Path

from snakemake.utils import validate

from dcod.config import (discover_experiments, experiment_chain, learning_rate_for, learning_rate_needs_tuning,
                         load_experiment, load_profile, train_config_for)
from dcod.io import load_yaml
from dcod.layout import (EVAL_FILES, RUN_FILES, build_roots, figure_names, folders, pretrain_root,
                         references as reference_models, robustness_experiments)
from dcod.launch import check_launch
from dcod.methods import needs_of, resolve
from dcod.provenance import PROFILE_IGNORED, STAGE_CODE, code_fingerprint, profile_fingerprint
from dcod.shipped import MANIFEST, check_profile as check_shipped_profile, check_seeds as check_shipped_seeds
from dcod.shipped import (base_student_dir, base_student_metrics, deciding_sections, read_manifest, sections_sha256,
                          seed_folder, shipped_roots, shipped_seeds)
from dcod.splits import check_profile
from dcod.student_pass import PASSES

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

W, R, F, DOC = folders(PROFILE)  # work, results, figures, paper (dcod.layout)

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
PRIOR = [e for e in EXPERIMENTS if EXPERIMENT_OF[e].table == "prior"]  # Table 3: prior offline methods
TUNED = MAIN + PRIOR  # every experiment with a learning rate of its own (an ablation inherits its base's)
# table 2 compares every ablation with the profile's report.baseline and report.subject, on the ablation seeds
BASELINE = P.report.baseline
# plus the default row of each ablation of another method (its nearest base in Table 1: iw_sft for
# iw_sft_teacher), the row Table 2 groups it with (dcod.reporting.tables.group_rows)
_DEFAULTS = [next((b for b in EXPERIMENT_OF[e].bases if b in MAIN), None) for e in ABLATIONS]
TABLE2_EXPERIMENTS = list(dict.fromkeys([e for e in (BASELINE, P.report.subject) if e in MAIN]
                                        + [b for b in _DEFAULTS if b is not None] + ABLATIONS))
SEEDS = P.seeds
ABLATION_SEEDS = P.ablation_seeds or P.seeds

TABLE1 = f"{R}/table1.csv"
TABLE2 = f"{R}/table2.csv"
CLAIMS = f"{R}/claims.csv"  # claims (a)-(d) judged once on Table 1
# measured wall times, apart so that the tables themselves are bit-for-bit reproducible
TABLE1_TIMING = f"{R}/table1_timing.csv"
TABLE2_TIMING = f"{R}/table2_timing.csv"
# the per-seed values behind each table (docs/claims.md, "Intervals"), beside it
TABLE1_SEEDS = f"{R}/table1_seeds.csv"
TABLE2_SEEDS = f"{R}/table2_seeds.csv"
# The toy world's structure (step styles, chain length k) exists only there: the calibration report
# (forced-style teachers), the forced-style references and the accuracy-vs-chain-length figure are
# built for `data.source: toy` only (the figure list: dcod.layout.FIGURES).
TOY = P.data.source == "toy"
CALIBRATION = [f"{R}/calibration.csv"] if TOY else []
FIGURE_NAMES = figure_names(TOY)
FIGURES = expand(f"{F}/{{name}}.png", name=FIGURE_NAMES)
REPORT = f"{DOC}/report.md"
# The published snapshot (committed; the DAG never writes it): a fresh Table 1 is compared with it
PUBLISHED = BASE / "paper" / "published" / ("" if PROFILE == "toy" else PROFILE)
PUBLISHED_TABLE1 = PUBLISHED / "results" / "table1.csv"
COMPARISON = [f"{R}/comparison.md"] if PUBLISHED_TABLE1.is_file() else []
REFERENCES = reference_models(TOY)  # models evaluated besides the runs (dcod.layout)


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
# Where the learning rates come from (ProfileConfig.learning_rates): an experiment in the profile's table is
# checked now, so a bad value fails the dry run; one that the table lacks (a method newer than the table) or
# any under `source: tuning` trains only after the grid of the experiment owning its rate (TUNING_CHOICE)
LR_FROM_TUNING = {name: learning_rate_needs_tuning(P, EXPERIMENT_OF[name]) for name in EXPERIMENTS}
for _name in EXPERIMENTS:
    if not LR_FROM_TUNING[_name]:
        learning_rate_for(P, EXPERIMENT_OF[_name])


# Each tuned experiment's own choice, from its own grid runs only (the tuning_choice rule). A training job waits
# for the grid of the experiment that owns its rate, never for every method's grid (results/tuning.csv)
TUNING_CHOICE = f"{W}/tuning/{{experiment}}/choice.csv"


def rate_owner(name):
    """The experiment whose grid sets ``name``'s rate: itself, or for an ablation the nearest tuned base."""
    if EXPERIMENT_OF[name].table != "ablation":
        return name
    owners = [base for base in EXPERIMENT_OF[name].bases if EXPERIMENT_OF[base].table != "ablation"]
    if not owners:
        raise ValueError(f"experiments/{name}/config.yaml: an ablation whose `base:` chain "
                         f"({' -> '.join(EXPERIMENT_OF[name].bases) or 'empty'}) reaches no tuned experiment; "
                         "its learning rate would have no grid")
    return owners[0]


def figure_caption(name):
    """A figure's caption, its module's CAPTION (dcod.reporting.figures): Snakemake's HTML report shows it
    (workflow/report/figure.rst) as the generated report does."""
    from dcod.reporting.figures import caption

    return caption(name)


def lr_file(wildcards):
    return TUNING_CHOICE.format(experiment=rate_owner(wildcards.experiment))


def lr_table(wildcards):
    """The tuning choice a training job reads its learning rate from, when it reads one."""
    return [lr_file(wildcards)] if LR_FROM_TUNING[wildcards.experiment] else []


def lr_option(wildcards):
    return f"--lr-table {lr_file(wildcards)}" if LR_FROM_TUNING[wildcards.experiment] else ""


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


def experiment_tuning_evals(wildcards):
    """One experiment's grid runs, what its choice (the tuning_choice rule) reads."""
    return tuning_evals([wildcards.experiment])


def references(names):
    return expand(f"{W}/eval/{{reference}}/{{file}}", reference=names, file=EVAL_FILES)


# ------------------------------------------------------------------ roots: the main run and its variants
# Every root, its overrides, world and base student: dcod.layout (the reports read the same module).
ROOTS = build_roots(P, W, TOY, SEEDS, ABLATION_SEEDS)
ROBUST = P.robustness if TOY else None
ROBUST_WORLDS = ROOTS.robust_worlds  # world name -> root
ROBUST_SEEDS = ROBUST.seeds if ROBUST is not None else []
ROBUST_EXPERIMENTS = []
if ROBUST is not None:
    ROBUST_EXPERIMENTS = robustness_experiments(P, MAIN, NEEDS_OF, {e: EXPERIMENT_OF[e].traces for e in MAIN})
FLOAT = P.float_path_check
FLOAT_ROOT = ROOTS.float_root
FLOAT_RESULTS = f"{R}/float_paths/{FLOAT.name}" if FLOAT is not None else None
PAIRED = P.pretrain.per_seed
KNIFE_EDGE_SEEDS = ROOTS.knife_edge_seeds  # owner root -> pre-training seeds besides pretrain.seed


def root_sets(wildcards):
    """--set arguments of a root's commands."""
    return " ".join(f"--set {o}" for o in ROOTS.overrides(wildcards.root))


def root_env(wildcards):
    """The environment prefix of a root's commands (the float-path check's kernel selection, also for the
    pre-training roots it owns)."""
    root = ROOTS.pretrain.get(wildcards.root, wildcards.root)
    if FLOAT_ROOT is not None and root == FLOAT_ROOT:
        return "env " + " ".join(f"{k}={v}" for k, v in FLOAT.env.items()) + " "
    return ""


def root_world(wildcards):
    return ROOTS.world(wildcards.root)


def root_base(wildcards):
    return ROOTS.base(wildcards.root)


def seed_base(wildcards):
    """The base student a run of seed ``wildcards.seed`` starts from: the root's one, or under
    pretrain.per_seed the one pre-trained with seed pretrain.seed + seed."""
    if not PAIRED or int(wildcards.seed) == 0:
        return root_base(wildcards)
    return f"{pretrain_root(ROOTS.base_owner(wildcards.root), P.pretrain.seed + int(wildcards.seed))}/base_student"


def traces_of(experiment):
    """The traces folder name an experiment trains on: the teacher's, or the student-style reference's."""
    return "traces_student_style" if EXPERIMENT_OF[experiment].traces == "student_style" else "traces"


def root_traces(wildcards):
    return f"{wildcards.root}/{traces_of(wildcards.experiment)}/train.parquet"


def root_eval_options(wildcards):
    """Robustness worlds and calibration base students are evaluated on the robustness splits only
    (calibration: validation, id, long), without the stability samples."""
    if wildcards.root in ROOTS.robust:
        return f"--splits {','.join(ROBUST.splits)} --no-stability"
    if wildcards.root in ROOTS.calibration or wildcards.root in ROOTS.pretrain:
        splits = [s for s in P.eval.splits if s in ("validation", "id", "long")]
        return f"--splits {','.join(splits)} --no-stability"
    return ""


def knife_edge_evals(owners):
    """The evaluations of the knife-edge base students of these owner roots that CALIBRATION_EVALS lacks."""
    evals = [f"{pretrain_root(o, p)}/eval/base_student/{f}" for o in owners for p in KNIFE_EDGE_SEEDS.get(o, [])
             for f in EVAL_FILES]
    return [e for e in evals if e not in CALIBRATION_EVALS]


wildcard_constraints:
    root="|".join(re.escape(r) for r in ROOTS.all()),
    seed=r"\d+",
    lr=r"[0-9.e\-]+",
    experiment=r"[A-Za-z0-9_\-]+",


ORACLE = [e for e in MAIN if EXPERIMENT_OF[e].traces == "student_style"]
ROBUSTNESS = f"{R}/robustness.csv"
ROBUSTNESS_TARGETS = [ROBUSTNESS, f"{F}/robustness.png"] if ROBUST is not None else []
FLOAT_PATH_TARGETS = [f"{R}/float_path.md", f"{R}/float_path.csv"] if FLOAT is not None else []
CALIBRATION_EVALS = [f"{root}/eval/base_student/{f}" for root in ROOTS.calibration for f in EVAL_FILES]


# ------------------------------------------------------------------ shipped base students
# A profile with pretrain.shipped starts the main world's Table 1 base students from the shipped folder
# (dcod.shipped; docs/reproducibility.md, "Shipped base students"): `base_students=shipped` (the default)
# copies them, in the main root and in the float-path root (which reruns every stage under other kernels from
# the same weights); every other base student (robustness world seeds, the steps-factor plateau student, the
# calibration seeds not shipped) is pre-trained as always. `base_students=rebuild` (make all) pre-trains every
# one and checks the rebuild against the manifest (results/<profile>/base_students.csv). Without
# pretrain.shipped the key is ignored.
SHIPPED_DIR = P.pretrain.shipped
BASE_STUDENTS = config.get("base_students", "shipped")
SHIPPED_MANIFEST = str(BASE / SHIPPED_DIR / MANIFEST) if SHIPPED_DIR is not None else None
SHIPPED_ROOTS = {}  # root -> the pre-training seed of its shipped base student
if SHIPPED_DIR is not None:
    _manifest = read_manifest(BASE / SHIPPED_DIR)  # a missing manifest stops the dry run, in either mode
    if BASE_STUDENTS == "shipped":
        # stale or incomplete: refused now, naming the key or the seed (the copy job checks the files)
        check_shipped_profile(_manifest, P, SHIPPED_MANIFEST)
        check_shipped_seeds(_manifest, P, SHIPPED_MANIFEST)
        SHIPPED_ROOTS = shipped_roots(P, [W, *([FLOAT_ROOT] if FLOAT_ROOT is not None else [])])
BASE_STUDENTS_CHECK = ([f"{R}/base_students.csv", f"{R}/base_students.md"]
                       if SHIPPED_DIR is not None and BASE_STUDENTS == "rebuild" else [])
STAGE_PARAMS["shipped"] = {"code": code_fingerprint(STAGE_CODE["shipped"]),
                           "profile_sections": sections_sha256(deciding_sections(P)), "profile": PROFILE_FILE}


def shipped_folder(wildcards):
    """The shipped folder a shipped root's base student is copied from."""
    return f"{BASE / SHIPPED_DIR}/{seed_folder(SHIPPED_ROOTS[wildcards.root])}"


def shipped_files(wildcards):
    """The shipped files (a re-export or an edit reruns the copy) and the manifest."""
    import json

    name = seed_folder(SHIPPED_ROOTS[wildcards.root])
    files = json.loads(Path(SHIPPED_MANIFEST).read_text())["students"][name]["files"]
    return [SHIPPED_MANIFEST, *(f"{BASE / SHIPPED_DIR}/{name}/{f}" for f in files)]



# ------------------------------------------------------------------ offline student passes
# A method may declare passes over its seed's base student that run once per seed before training
# (Needs.student_traces, Needs.trace_scores: dcod.student_pass, docs/architecture.md "Offline student
# passes"); a train job waits for the passes its experiment declares, and only those.

def passes_of(experiment):
    """The offline student passes an experiment's method declares (read from its Needs)."""
    return [name for name in PASSES if getattr(NEEDS_OF[experiment], name)]


def pass_file(root, name, seed):
    return f"{root}/{name}/seed{seed}/train.parquet"


def pass_option(files):
    """``--student-traces <file> ...``: the train command's options for the given pass files."""
    return " ".join(f"--{name.replace('_', '-')} {path}" for name, path in files.items())


def run_passes(wildcards):
    """The pass outputs a run of (root, experiment, seed) trains with."""
    return {name: pass_file(wildcards.root, name, wildcards.seed) for name in passes_of(wildcards.experiment)}


def tuning_passes(wildcards):
    """The pass outputs of a tuning run: the main root's, of the tuning seed (whose base student is the main
    root's own: checked below)."""
    return {name: pass_file(W, name, TUNING_SEED) for name in passes_of(wildcards.experiment)}


# a tuning run trains from the main root's base student (rule tune_train); under pretrain.per_seed the passes of
# seed s come from seed s's own base student, so they serve a tuning run only when the tuning seed is 0
if PAIRED and TUNING_SEED != 0 and any(passes_of(name) for name in TUNED):
    raise ValueError(f"{PROFILE_FILE}: tuning.seed {TUNING_SEED} with pretrain.per_seed: the offline student passes of "
                     f"{[n for n in TUNED if passes_of(n)]} would come from another base student than the tuning "
                     "runs train; set tuning.seed: 0")


def base_evals(root, seeds):
    """The base-student evaluations a table of ``root`` reads: one per seed under pretrain.per_seed
    (each seed's own base student), else the one reference evaluation."""
    if PAIRED:
        return expand(f"{root}/eval/base_student/seed{{seed}}/{{file}}", seed=seeds, file=EVAL_FILES)
    return [f"{root}/eval/base_student/{f}" for f in EVAL_FILES]
