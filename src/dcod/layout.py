"""Where results lie: the one statement of the work-folder layout, read by the DAG
(``workflow/rules/common.smk``) and by the reports (``dcod.reporting``), so the two cannot disagree.

A *root* is a work folder with the main layout (docs/architecture.md, "Layout")::

  <root>/world/world.json   <root>/base_student/   <root>/traces/train.parquet
  <root>/runs/<experiment>/seed<s>/{run.json, train_log.jsonl}
  <root>/eval/<experiment>/seed<s>/{metrics.csv, samples.jsonl, stability.csv}
  <root>/eval/<reference>/{...}   (a reference model: no seed level)
  <root>/eval/base_student/seed<s>/{...}   (under ``pretrain.per_seed``)

Besides the main root ``work/<profile>`` (``W``) a profile may have: the robustness worlds (world seed x
direct-style probability), the calibration base students (other pre-training seeds, more steps), the
per-seed base students of ``pretrain.per_seed``, the knife-edge base students of every world seed and the
second float path (Table 1 rerun under other CPU kernels). ``Roots`` works them out from the profile;
every command of a root gets that root's overrides (``--set``) and environment.

This module imports no torch and no method registry: what a method needs comes in as a mapping (the DAG's
``needs_of``, or a run's ``run.json``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# Models evaluated besides the runs, once and without a training seed (their eval folder has no seed<s>
# level), in the reports' row order: the teacher, on the toy world the teacher forced to one style, the
# base student. TABLE_REFERENCES: the ones every profile evaluates, the reference rows of Table 1.
REFERENCES = ("teacher", "teacher_direct", "teacher_decomposed", "base_student")
TOY_REFERENCES = ("teacher_direct", "teacher_decomposed")
TABLE_REFERENCES = tuple(name for name in REFERENCES if name not in TOY_REFERENCES)
# the one reference evaluated per seed when the profile pairs training seeds with pre-training seeds
SEEDED_REFERENCE = "base_student"

EVAL_FILES = ["metrics.csv", "samples.jsonl", "stability.csv"]
RUN_FILES = ["run.json", "train_log.jsonl"]
CALIBRATION_DIR = "calibration"


# The figures of a run, in the report's order: one module each under dcod/reporting/figures/ (its render()
# and CAPTION). The toy-only ones show the toy world's structure (chain length k); the robustness figure is
# drawn from results/robustness.csv by its own rule.
FIGURES = ("accuracy_per_split", "accuracy_vs_length", "dcod_diagnostics", "accuracy_vs_cost", "trace_stability",
           "offline_accuracy_vs_cost")
TOY_ONLY_FIGURES = ("accuracy_vs_length",)
# drawn from Table 3 as well (results/table3.csv), by its own rule: never an input of Table 1's target
TABLE3_FIGURES = ("offline_accuracy_vs_cost",)
ROBUSTNESS_FIGURES = ("robustness",)


def figure_names(toy: bool) -> list[str]:
    """The figures a profile builds (``toy``: its data.source is the toy world)."""
    return [name for name in FIGURES if toy or name not in TOY_ONLY_FIGURES]


def references(toy: bool) -> list[str]:
    """The reference models a profile evaluates (the toy world's forced-style teachers on toy only)."""
    return [name for name in REFERENCES if toy or name not in TOY_REFERENCES]


def _get(needs, key: str) -> bool:
    """One declared need, from the registry's ``Needs`` or the mapping a run.json records."""
    return bool(needs.get(key) if isinstance(needs, dict) else getattr(needs, key))


def is_offline(needs) -> bool:
    """A method trained on the offline traces only (no teacher in memory, no student rollouts). ``needs``:
    a method's declared needs, as the registry's ``Needs`` or as the mapping a run.json records."""
    get = needs.get if isinstance(needs, dict) else (lambda key: getattr(needs, key))
    return bool(get("offline_traces")) and not get("teacher_model") and not get("student_rollouts")


def folders(profile_name: str) -> tuple[str, str, str, str]:
    """(work, results, figures, paper) of a profile: the default (toy) one writes to results/, figures/,
    paper/; others to a subfolder named after them."""
    if profile_name == "toy":
        return "work/toy", "results", "figures", "paper"
    return (f"work/{profile_name}", f"results/{profile_name}", f"figures/{profile_name}",
            f"paper/{profile_name}")


def pretrain_root(owner, pretrain_seed: int) -> str:
    """The base student pre-trained with another seed for the root ``owner``."""
    return f"{owner}/{CALIBRATION_DIR}/pretrain_seed{pretrain_seed}"


def steps_factor_tag(factor: float) -> str:
    return f"steps_x{factor:g}"


def steps_factor_root(owner, factor: float) -> str:
    """The base student pre-trained with ``factor`` x the steps for the root ``owner``."""
    return f"{owner}/{CALIBRATION_DIR}/{steps_factor_tag(factor)}"


def world_name(world_seed: int, p_direct: float) -> str:
    return f"w{world_seed}_p{p_direct:g}"


def seed_owner(world_seed: int, roots_of_seed: list, main_seed: int, main_root):
    """The root whose base students serve every world of ``world_seed`` (the base student does not depend
    on the direct-style probability): the main root for the main world seed, else the smallest root of
    that seed, where the DAG pre-trains them and the robustness report looks for them."""
    if world_seed == main_seed:
        return main_root
    return min(str(root) for root in roots_of_seed)


@dataclass
class Roots:
    """Every root of a profile besides the main one, with the ``--set`` overrides of its commands."""
    main: str
    robust_worlds: dict = field(default_factory=dict)  # world name -> root (the main world may be W)
    robust: dict = field(default_factory=dict)  # robustness root -> overrides
    robust_seed: dict = field(default_factory=dict)  # robustness root -> its world seed
    calibration: dict = field(default_factory=dict)  # calibration root -> overrides
    pretrain: dict = field(default_factory=dict)  # pre-training root -> the root that owns it
    knife_edge_seeds: dict = field(default_factory=dict)  # owner root -> pre-training seeds besides pretrain.seed
    float_root: str | None = None
    main_world_seed: int | None = None

    def base_owner(self, root: str) -> str:
        """The root whose base student(s) a root's runs start from (robustness worlds share one per world seed)."""
        if root not in self.robust:
            return root
        world_seed = self.robust_seed[root]
        same_seed = [r for r, s in self.robust_seed.items() if s == world_seed]
        return seed_owner(world_seed, same_seed, self.main_world_seed, self.main)

    def overrides(self, root: str) -> list[str]:
        if root in self.robust:
            return self.robust[root]
        if root in self.calibration:
            return self.calibration[root]
        if root in self.pretrain:
            return [*self.overrides(self.pretrain[root]), f"pretrain.seed={root.rsplit('pretrain_seed', 1)[1]}"]
        return []

    def world(self, root: str) -> str:
        """Calibration base students share the main world, pre-training roots their owner's; robustness worlds
        and the float-path check build their own (the float-path check reruns every stage under its kernels)."""
        if root in self.calibration:
            return f"{self.main}/world/world.json"
        return f"{self.pretrain.get(root, root)}/world/world.json"

    def base(self, root: str) -> str:
        """The base student of a root (its pre-training seed is the profile's, or the pre-training root's)."""
        if root in self.pretrain or root in self.calibration:
            return f"{root}/base_student"
        return f"{self.base_owner(root)}/base_student"

    def all(self) -> list[str]:
        """Every root, longest first (a wildcard never cuts a root at a prefix)."""
        roots = {self.main, *self.robust, *self.calibration, *self.pretrain, self.float_root} - {None}
        return sorted(roots, key=lambda r: (-len(r), r))


def build_roots(profile, work: str, toy: bool, seeds, ablation_seeds) -> Roots:
    """The roots of ``profile`` (a ProfileConfig) around the main root ``work``."""
    roots = Roots(main=work, main_world_seed=int(profile.world.get("seed", 0)) if toy else None)
    robust = profile.robustness if toy else None
    if robust is not None:
        for world_seed in robust.world_seeds:
            for p_direct in robust.p_direct:
                name = world_name(world_seed, p_direct)
                if world_seed == roots.main_world_seed and p_direct == profile.teacher.p_direct:
                    roots.robust_worlds[name] = work  # the main world is one of them: its Table 1 runs are reused
                    continue
                root = f"{work}/robustness/{name}"
                roots.robust_worlds[name] = root
                roots.robust[root] = [f"world.seed={world_seed}", f"teacher.p_direct={p_direct:g}"]
                roots.robust_seed[root] = world_seed
    if toy:
        for seed in profile.calibration.pretrain_seeds:
            roots.calibration[pretrain_root(work, seed)] = [f"pretrain.seed={seed}"]
        if profile.calibration.pretrain_seeds:
            steps = round(profile.pretrain.steps * profile.calibration.steps_factor)
            roots.calibration[steps_factor_root(work, profile.calibration.steps_factor)] = [f"pretrain.steps={steps}"]
    float_check = profile.float_path_check
    roots.float_root = f"{work}/float_paths/{float_check.name}" if float_check is not None else None

    # pretrain.per_seed: training seed s starts from the base student pre-trained with seed pretrain.seed + s,
    # in a pre-training root of the root that owns the base students (the main one, a robustness world seed's
    # first world, the float-path check): for the main root these are the calibration report's knife-edge
    # base students, pre-trained once for both uses.
    if profile.pretrain.per_seed:
        robust_seeds = robust.seeds if robust is not None else []
        owners = {work: sorted({*seeds, *ablation_seeds, *robust_seeds})}
        if roots.float_root:
            owners[roots.float_root] = seeds
        for root in roots.robust:
            owners.setdefault(roots.base_owner(root), robust_seeds)
        for owner, owner_seeds in owners.items():
            for seed in owner_seeds:
                if int(seed) != 0:
                    roots.pretrain[pretrain_root(owner, profile.pretrain.seed + int(seed))] = owner

    # The knife-edge calibration target compares every base student pre-trained for a world seed
    # (ProfileConfig.knife_edge_pretrain_seeds): on the main world the calibration's and the seeds' own; on
    # every other world seed the same calibration.pretrain_seeds, pre-trained in that world seed's owner root.
    if toy:
        roots.knife_edge_seeds[work] = profile.knife_edge_pretrain_seeds(main_world=True)
        for root in roots.robust:
            owner = roots.base_owner(root)
            if owner != work:
                roots.knife_edge_seeds[owner] = profile.knife_edge_pretrain_seeds(main_world=False)
        for owner, owner_seeds in roots.knife_edge_seeds.items():
            for seed in owner_seeds:
                roots.pretrain.setdefault(pretrain_root(owner, seed), owner)

    # a pre-training root that is also a calibration root is built once for both: it must be the same model
    for root, owner in roots.pretrain.items():
        if root in roots.calibration:
            pretrain = [*roots.overrides(owner), f"pretrain.seed={root.rsplit('pretrain_seed', 1)[1]}"]
            if roots.calibration[root] != pretrain:
                raise ValueError(f"{root}: the calibration overrides {roots.calibration[root]} differ from the "
                                 f"per-seed pre-training's {pretrain}; the two cannot share one base student")
    return roots


def robustness_experiments(profile, main: list[str], needs: dict, traces: dict) -> list[str]:
    """The profile's ``robustness.experiments``, or the Table 1 experiments that need only offline traces
    plus the student-style reference. ``needs``/``traces``: experiment -> declared needs / traces kind."""
    chosen = profile.robustness.experiments
    if chosen is None:  # the reweighting ceiling (oracle_knowledge) is a Table 1 reference only
        chosen = [e for e in main if (is_offline(needs[e]) and not _get(needs[e], "oracle_knowledge"))
                  or traces[e] == "student_style"]
    missing = sorted(set(chosen) - set(main))
    if missing:
        raise ValueError(f"robustness.experiments: {missing} are not Table 1 experiments of this profile")
    return list(chosen)


def eval_dir(work, name: str, seed: int | None = None) -> Path:
    """A model's evaluation folder: per seed for a run, without one for a reference."""
    folder = Path(work) / "eval" / name
    return folder if seed is None else folder / f"seed{seed}"


def run_dir(work, name: str, seed: int) -> Path:
    return Path(work) / "runs" / name / f"seed{seed}"
