"""Shipped base students: the toy world's "pretrained checkpoints", committed with their manifest.

The paper setting downloads its student (Qwen2.5-1.5B); a toy profile whose base students take minutes each
to pre-train ships them instead (docs/reproducibility.md, "Shipped base students"). One home for:

- what is shipped: every base student the main world's Table 1 runs start from (``shipped_seeds``);
- the export (``export``: ``python -m dcod ship-base-students``): the folders plus ``manifest.json`` with the
  sha256 of every file, each student's accuracies (its Table 1 evaluation), the profile sections and the world
  files that decide it, the commit, the command and the machine;
- the use (``copy_shipped``: ``python -m dcod base-student --shipped``): every hash, the profile and the world
  checked against the manifest, then the folder copied; any difference is a refusal naming the file and key.

The DAG's copy job and ``make all``'s check (dcod.reporting.base_students) read the same functions.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from dcod.io import atomic_path, code_version, content_digest, environment_version, write_json
from dcod.layout import eval_dir, pretrain_root

MANIFEST = "manifest.json"
FORMAT = 1
# The profile sections that decide a base student's weights (dcod.pipeline.stage_base_student reads these and
# the world's files, digested apart: WORLD_INPUTS) ...
SECTIONS = ("world", "student", "pretrain")
# ... less the keys that do not: which seed a folder holds is the folder's own entry (pretrain_seed<S>), and
# per_seed and shipped only say which base students the DAG builds and where from
NOT_DECIDING = {"pretrain": ("seed", "per_seed", "shipped")}
# what the pre-training reads from the world folder (its world.json also records the machine and the commit,
# which differ on a reviewer's machine for the same world)
WORLD_INPUTS = ("pretrain.jsonl", "tokenizer")
ACCURACY_SPLITS = ("validation", "id", "long")  # recorded per student; make all's check judges id
REBUILD = "make all PROFILE={profile}"  # rebuilds every base student and checks them against the manifest


# ----------------------------------------------------------------------------- what is shipped
def seed_folder(pretrain_seed: int) -> str:
    return f"pretrain_seed{pretrain_seed}"


def shipped_seeds(profile) -> dict[int, int | None]:
    """Pre-training seed -> the training seed whose Table 1 runs start from it: the profile's own
    (``pretrain.seed``; every seed's runs, None, unless ``pretrain.per_seed``, then seed 0) and under
    ``pretrain.per_seed`` pretrain.seed + s for every other Table 1 seed s (dcod.layout.build_roots)."""
    pre = profile.pretrain
    if not pre.per_seed:
        return {pre.seed: None}
    return {pre.seed: 0, **{pre.seed + int(s): int(s) for s in profile.seeds if int(s) != 0}}


def base_student_dir(work, profile, pretrain_seed: int) -> Path:
    """Where the DAG builds the base student of ``pretrain_seed`` in the root ``work``."""
    if pretrain_seed == profile.pretrain.seed:
        return Path(work) / "base_student"
    return Path(pretrain_root(work, pretrain_seed)) / "base_student"


def base_student_metrics(work, training_seed: int | None) -> Path:
    """The evaluation Table 1 reads for the base student of ``training_seed`` (None: the one reference
    evaluation; under pretrain.per_seed one per seed): the accuracies a manifest records and make all checks."""
    return eval_dir(work, "base_student", training_seed) / "metrics.csv"


def shipped_roots(profile, owners) -> dict[str, int]:
    """Root -> pre-training seed, for every root of ``owners`` (the main root and the float-path root) whose
    base student is a shipped one (the DAG's base_student_shipped rule copies it)."""
    return {str(base_student_dir(owner, profile, seed).parent): seed
            for owner in owners for seed in shipped_seeds(profile)}


# ----------------------------------------------------------------------------- digests
def sha256_file(path: Path) -> str:
    """Plain sha256 of a file, as ``sha256sum`` prints it (a reviewer can check a manifest without dcod)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_files(folder: Path) -> dict[str, Path]:
    """The files of a base-student folder, by name (hidden ones such as Snakemake's timestamp skipped)."""
    return {p.name: p for p in sorted(Path(folder).iterdir()) if p.is_file() and not p.name.startswith(".")}


def deciding_sections(profile) -> dict:
    """The profile sections that decide a base student, as plain data (NOT_DECIDING left out). Not
    dcod.provenance.profile_fingerprint: that one keeps pretrain.seed, which differs between the folders of
    one manifest."""
    data = profile.model_dump(mode="json")
    return {name: {k: v for k, v in data[name].items() if k not in NOT_DECIDING.get(name, ())}
            for name in SECTIONS}


def sections_sha256(sections: dict) -> str:
    return hashlib.sha256(json.dumps(sections, sort_keys=True).encode()).hexdigest()


def world_digests(world_dir: Path) -> dict[str, str]:
    """content_digest of each file or folder the pre-training reads from the world."""
    return {name: content_digest(Path(world_dir) / name) for name in WORLD_INPUTS}


def world_mismatches(manifest: dict, world_dir: Path) -> list[Path]:
    """The world files the pre-training reads whose digest differs from the manifest's."""
    return [Path(world_dir) / name for name, digest in world_digests(world_dir).items()
            if manifest["world"].get(name) != digest]


def _flat(data, prefix: str = "") -> dict:
    if not isinstance(data, dict):
        return {prefix: data}
    out = {}
    for key, value in data.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def profile_mismatches(manifest: dict, profile) -> list[str]:
    """``key=<manifest's>, the profile says <profile's>`` for every deciding key that differs."""
    made, now = _flat(manifest["sections"]), _flat(deciding_sections(profile))
    missing = "(not set)"
    return [f"{key}={made.get(key, missing)}, the profile says {now.get(key, missing)}"
            for key in sorted(set(made) | set(now)) if made.get(key, missing) != now.get(key, missing)]


# ----------------------------------------------------------------------------- export
def read_accuracies(metrics: Path) -> dict[str, float]:
    """Accuracy (%) per split of ACCURACY_SPLITS from an evaluation's metrics.csv."""
    import pandas as pd

    if not Path(metrics).is_file():
        raise FileNotFoundError(f"{metrics}: no such file (the base student's evaluation, written by the DAG: "
                                "build Table 1 first)")
    frame = pd.read_csv(metrics)
    by_split = dict(zip(frame["split"], frame["accuracy"]))
    missing = [s for s in ACCURACY_SPLITS if s not in by_split]
    if missing:
        raise ValueError(f"{metrics}: no accuracy for split(s) {missing} (the profile's eval.splits must include "
                         f"{list(ACCURACY_SPLITS)})")
    return {split: 100.0 * float(by_split[split]) for split in ACCURACY_SPLITS}


def _pretrained_by(base: Path) -> dict:
    """The commit, environment and machine (threads included) of the pre-training, from its run.json."""
    run = base.parent / (base.name + "_run") / "run.json"
    if not run.is_file():
        raise FileNotFoundError(f"{run}: no such file (the pre-training's record of its commit and machine)")
    data = json.loads(run.read_text())
    return {key: data.get(key) for key in ("code_version", "environment", "machine", "wall_time_s")}


def export(profile, work: Path, out: Path, command: str) -> dict:
    """Copy every shipped base student of ``work`` (the main root) into ``out/pretrain_seed<S>/`` and write
    ``out/manifest.json``; ``out`` is replaced as a whole, atomically. Returns the manifest."""
    from dcod.provenance import machine_info

    work, out = Path(work), Path(out)
    world = work / "world"
    if not world.is_dir():
        raise FileNotFoundError(f"{world}: no such folder (the world the base students were pre-trained on)")
    students, sources = {}, {}
    for pretrain_seed, training_seed in shipped_seeds(profile).items():
        base = base_student_dir(work, profile, pretrain_seed)
        if not (base / "model.safetensors").is_file():
            raise FileNotFoundError(f"{base}/model.safetensors: no such file (the base student of pre-training "
                                    f"seed {pretrain_seed})")
        metrics = base_student_metrics(work, training_seed)
        students[seed_folder(pretrain_seed)] = {
            "pretrain_seed": pretrain_seed, "training_seed": training_seed,
            "accuracy": read_accuracies(metrics), "evaluation": metrics.relative_to(work).as_posix(),
            "pretrained_by": _pretrained_by(base)}
        sources[seed_folder(pretrain_seed)] = base
    sections = deciding_sections(profile)
    with atomic_path(out, directory=True) as tmp:
        for name, base in sources.items():
            (tmp / name).mkdir()
            for file_name, path in model_files(base).items():
                shutil.copyfile(path, tmp / name / file_name)
            # the hashes of the bytes shipped, read back from the copies
            students[name]["files"] = {f: sha256_file(p) for f, p in model_files(tmp / name).items()}
        manifest = {
            "format": FORMAT, "profile": profile.name, "sections": sections,
            "sections_sha256": sections_sha256(sections), "world": world_digests(world), "students": students,
            "exported_by": {"command": command, "code_version": code_version(), "environment": environment_version(),
                            "machine": machine_info()},
            "rebuild": REBUILD.format(profile=profile.name)}
        write_json(tmp / MANIFEST, manifest)
    return manifest


# ----------------------------------------------------------------------------- use
def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (pretrain.shipped names a folder without a manifest: export "
                                "it with `python -m dcod ship-base-students`, or build with "
                                "`--config base_students=rebuild`)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error.msg}, line {error.lineno}): re-export") from None
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, this code reads format {FORMAT}: re-export")
    return manifest


def check_profile(manifest: dict, profile, path: Path) -> None:
    """Refuse a manifest made with other deciding profile values than ``profile``'s, naming each key."""
    mismatches = profile_mismatches(manifest, profile)
    if mismatches:
        raise ValueError(f"{path} was made with {'; '.join(mismatches)}: rebuild with "
                         f"`{REBUILD.format(profile=profile.name)}` (base_students=rebuild) and re-export with "
                         "`python -m dcod ship-base-students`, or set the profile back (pretrain.shipped)")


def check_seeds(manifest: dict, profile, path: Path) -> None:
    """Refuse a manifest that lacks a base student the profile's Table 1 starts from."""
    for pretrain_seed, training_seed in shipped_seeds(profile).items():
        if seed_folder(pretrain_seed) not in manifest["students"]:
            raise ValueError(f"{path} has no base student {seed_folder(pretrain_seed)} (training seed "
                             f"{training_seed}; the profile's seeds {list(profile.seeds)}): re-export with "
                             "`python -m dcod ship-base-students`")


def copy_shipped(profile, world_dir: Path, shipped: Path, out: Path) -> None:
    """Check the shipped folder ``<folder>/pretrain_seed<S>`` (every file's sha256, the profile, the world, the
    seed) against ``<folder>/manifest.json`` and copy it to ``out``; refuse, naming what differs, otherwise."""
    shipped, out = Path(shipped), Path(out)
    path = shipped.parent / MANIFEST
    manifest = read_manifest(shipped.parent)
    entry = manifest["students"].get(shipped.name)
    if entry is None:
        raise ValueError(f"{path} lists no base student {shipped.name} (it has {sorted(manifest['students'])})")
    if not shipped.is_dir():
        raise FileNotFoundError(f"{shipped}: no such folder (listed in {path}): a shipped seed folder is missing")
    if entry["pretrain_seed"] != profile.pretrain.seed:
        raise ValueError(f"{shipped} holds pre-training seed {entry['pretrain_seed']}, the profile says "
                         f"pretrain.seed={profile.pretrain.seed}")
    check_profile(manifest, profile, path)
    for changed in world_mismatches(manifest, world_dir):
        raise ValueError(f"{path} was made from another world: {changed} differs from the one the base students "
                         f"were pre-trained on (world.* or the world code changed): rebuild with "
                         f"`{REBUILD.format(profile=profile.name)}` and re-export")
    with atomic_path(out, directory=True) as tmp:
        for name, source in model_files(shipped).items():
            shutil.copyfile(source, tmp / name)
        check_files(model_files(tmp), entry["files"], shipped, path)  # the bytes delivered, hashed


def check_files(files: dict[str, Path], expected: dict[str, str], shipped: Path, path: Path) -> None:
    """Refuse a file set or a sha256 other than the manifest's, naming the file."""
    for name in sorted(set(files) | set(expected)):
        if name not in files:
            raise FileNotFoundError(f"{shipped / name}: no such file (listed in {path})")
        if name not in expected:
            raise ValueError(f"{shipped / name}: not listed in {path} (a file added after the export)")
        digest = sha256_file(files[name])
        if digest != expected[name]:
            raise ValueError(f"{shipped / name}: sha256 {digest}, {path} says {expected[name]}: the file changed "
                             "since the export (re-export, or restore it with git)")
