"""The prompts of every split and what a model may generate for them.

For the toy world the splits are written by ``dcod.toy.world``; for real benchmarks they are assembled
here from the declarations of ``dcod.benchmarks``: the training prompts (one or several sources, with
``data.validation`` prompts held out of them) and one file per evaluation benchmark. The generation
budget of a split is decided here only (``generation_budgets``), as are the avg@k settings. The profile
checks that need the toy world or the benchmark declarations also live here (``check_profile``): config
itself stays plain data.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from dcod import benchmarks
from dcod.config import ConfigError, ProfileConfig
from dcod.io import write_jsonl
from dcod.toy.world import WorldConfig

TOY_EVAL_SPLITS = ("validation", "id", "long", "retention", "extrapolate")
# the claim each toy split serves (docs/claims.md), as a benchmark declares it with claim_role/claim_rank:
# a toy split comes before any benchmark of its role (rank 0)
TOY_CLAIM_ROLES = {"id": ("in_distribution", 0), "long": ("hard", 0), "retention": ("retention", 0)}


def claim_splits(role: str) -> tuple[str, ...]:
    """Every split that declares ``role`` (toy splits and benchmark declarations), by precedence."""
    declared = [(rank, name) for name, (r, rank) in TOY_CLAIM_ROLES.items() if r == role]
    for name in benchmarks.list_benchmarks():
        benchmark = benchmarks.get_benchmark(name)
        if benchmark.claim_role == role:
            declared.append((benchmark.claim_rank, name))
    return tuple(name for _, name in sorted(declared))


# ----------------------------------------------------------------------------- checks
def world_config(profile: ProfileConfig) -> WorldConfig:
    """The toy world's config from the profile's ``world`` section; a bad key names the profile file."""
    try:
        return WorldConfig.from_dict(profile.world)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{profile.source}: world: {error}") from None


def toy_eval_splits(world: WorldConfig) -> list[str]:
    """The toy world's evaluation splits that hold problems (``dcod.toy.world.build_world``, see
    docs/toy_world.md): each drawn when its ``n_<split>`` > 0."""
    return [name for name in TOY_EVAL_SPLITS if getattr(world, f"n_{name}") > 0]


def check_profile(profile: ProfileConfig) -> ProfileConfig:
    """The checks of a profile that need the toy world or the benchmark declarations (run by every CLI
    stage and by the Snakemake rules at parse time); errors name the profile file and the key."""
    source = profile.source
    if profile.data.source == "benchmarks":
        known = benchmarks.list_benchmarks()
        for name in [*profile.data.train_sources, *profile.data.eval]:
            if name not in known:
                raise ConfigError(f"{source}: data: unknown benchmark {name!r}; known: {', '.join(known)}")
    world = world_config(profile) if profile.world or profile.data.source == "toy" else None
    if profile.data.source == "toy":
        splits = toy_eval_splits(world)
        for split in profile.eval.splits:
            if split not in splits:
                raise ConfigError(f"{source}: eval.splits: {split!r} is not an evaluation split of the toy world; "
                                  f"its splits with problems: {', '.join(splits)} (a split is drawn when its "
                                  "world.n_<split> > 0; extrapolate is off by default)")
    return profile


# ----------------------------------------------------------------------------- generation budgets
def _declared(profile: ProfileConfig, splits: list[str]) -> dict:
    """The generation settings of each split that is a declared real benchmark."""
    if profile.data.source != "benchmarks":
        return {}
    known = benchmarks.list_benchmarks()
    settings = {split: benchmarks.get_benchmark(split).generation for split in splits if split in known}
    return {split: g for split, g in settings.items() if g is not None}


def generation_budgets(profile: ProfileConfig, splits: list[str]) -> dict[str, int]:
    """max_new_tokens of every split: a real benchmark's declared budget capped by the profile's
    ``eval.max_new_tokens`` (IFEval: lm-eval's 1,280; GSM8K: 2,048); toy splits, the held-out
    ``validation`` split and any split that is not a declared benchmark: ``eval.max_new_tokens``."""
    declared = _declared(profile, splits)
    cap = profile.eval.max_new_tokens
    return {split: min(cap, declared[split].max_new_tokens) if split in declared else cap for split in splits}


def sampled_settings(profile: ProfileConfig, splits: list[str]) -> dict:
    """The avg@k settings of each evaluated benchmark that declares them (real benchmarks only)."""
    if not profile.eval.sampled:
        return {}
    return {split: g.sampled for split, g in _declared(profile, splits).items() if g.sampled is not None}


# ----------------------------------------------------------------------------- real benchmarks
def validation_indices(name: str, total: int, size: int, seed: int) -> set[int]:
    """Row indices of a training source (``total`` prompts) held out as validation prompts: a fixed
    random sample."""
    if size >= total:
        raise ValueError(f"data.validation: {name} has {total} prompts; holding out {size} would leave none "
                         "to train on")
    return set(random.Random(f"{seed}/{name}").sample(range(total), size))


def write_benchmark_world(profile: ProfileConfig, out_dir: Path) -> dict:
    """Real benchmarks in the toy world's split format: ``train.jsonl`` (training prompts) and one file
    per evaluation benchmark, each line ``{id, task, question, gold, k}`` with the benchmark's prompt.
    Returns what world.json records about them."""
    data = profile.data
    # DCOD_DATA_DIR overrides the profile's data_dir (which is relative to the working directory): a run
    # from another folder, such as the tests' temporary one, points at the same local copies
    data_dir = os.environ.get("DCOD_DATA_DIR") or data.data_dir
    # training prompts: every source in order (e.g. GSM8K train + MATH train), ids prefixed by the source
    # when there are several so that they stay unique; data.validation's prompts are held out of them
    splits = {"train": [(name, data.train_limit) for name in data.train_sources]}
    if data.validation:
        splits["validation"] = [(name, 0) for name in data.validation]
    splits.update({name: [(name, data.eval_limit)] for name in data.eval})
    # each held-out source read once
    source_records = {name: benchmarks.load_benchmark(name, data_dir=data_dir) for name in data.validation}
    held_out = {name: validation_indices(name, len(source_records[name]), size, data.validation_seed)
                for name, size in data.validation.items()}
    for split, sources in splits.items():
        rows = []
        for name, limit in sources:
            # (validation ids are written as the training ids would have been)
            several = len(sources) > 1 or (split == "validation" and len(splits["train"]) > 1)
            prefix = f"{name}/" if several else ""
            # math (graded by math-verify) or ifeval (lm-eval's instruction checkers)
            task = benchmarks.get_benchmark(name).task
            if split in ("train", "validation") and task != "math":
                raise ValueError(f"data.train: {name!r} is a {task} benchmark; training prompts need math golds")
            if split in ("train", "validation") and name in held_out:
                everything = set(range(len(source_records[name])))
                keep = held_out[name] if split == "validation" else everything - held_out[name]
                records = [r for i, r in enumerate(source_records[name]) if i in keep][:limit or None]
            else:
                records = benchmarks.load_benchmark(name, data_dir=data_dir, limit=limit or None)
            rows += [{"id": f"{prefix}{r['id']}", "task": task, "question": r["prompt"], "gold": r["gold"],
                      "k": None} for r in records]
        write_jsonl(Path(out_dir) / f"{split}.jsonl", rows)
    return {"source": "benchmarks", "data_dir": data_dir,
            "splits": {k: [name for name, _ in v] for k, v in splits.items()},
            "validation": {name: sorted(indices) for name, indices in held_out.items()}}
