"""``make all``'s check of the shipped base students (docs/reproducibility.md, "Shipped base students").

With ``--config base_students=rebuild`` every base student is pre-trained from scratch; this table compares
each rebuilt one that the profile ships (dcod.shipped) with the shipped one, by accuracy and not by bits:
floats differ across CPUs, so a rebuild on another machine gives other weights.

Tolerance: ``KNIFE_EDGE_MAX_DEVIATION`` points on ``id``, the calibration's knife-edge bound
(dcod.reporting.calibration). That target holds base students of different pre-training seeds on one machine
within it of their mean; two base students of one seed on two CPUs differ by float rounding only, which should
move them no further apart than a different seed does. A rebuild beyond it means the shipped weights do not
stand for what the code and the profile build. ``long`` is shown, not judged (it follows ``id``).

The manifest itself is checked too: made with other deciding profile values or another world than this
checkout's, every row FAILs naming the key or file (re-export after the rebuild).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from dcod.io import write_csv, write_text
from dcod.reporting import markdown_table, need
from dcod.reporting.calibration import EPS, FAIL, KNIFE_EDGE_MAX_DEVIATION, PASS

JUDGED_SPLIT = "id"
SHOWN_SPLITS = ("id", "long")
COLUMNS = ["pretrain_seed", "training_seed", *(f"{kind}_{split}" for split in SHOWN_SPLITS
                                               for kind in ("shipped", "rebuilt", "delta")),
           "tolerance", "same_bits", "status", "evidence"]


def check_rows(manifest: dict, rebuilt: dict[str, dict], stale: list[str]) -> pd.DataFrame:
    """One row per shipped base student. ``rebuilt``: folder name (pretrain_seed<S>) -> {"pretrain_seed",
    "training_seed", "accuracy": split -> %, "model_sha256"} of the rebuild; ``stale``: why the manifest does
    not describe this checkout's base students (empty: it does)."""
    rows = []
    for name, built in rebuilt.items():
        row = {"pretrain_seed": built["pretrain_seed"], "training_seed": built["training_seed"],
               "tolerance": KNIFE_EDGE_MAX_DEVIATION}
        shipped = manifest["students"].get(name)
        if shipped is None:
            rows.append({**row, "status": FAIL, "evidence": f"the manifest has no {name}: re-export"})
            continue
        for split in SHOWN_SPLITS:
            ours, theirs = built["accuracy"][split], shipped["accuracy"][split]
            row.update({f"shipped_{split}": theirs, f"rebuilt_{split}": ours, f"delta_{split}": ours - theirs})
        row["same_bits"] = built["model_sha256"] == shipped["files"].get("model.safetensors")
        delta = abs(row[f"delta_{JUDGED_SPLIT}"])
        within = not math.isnan(delta) and delta <= KNIFE_EDGE_MAX_DEVIATION + EPS
        evidence = (f"|rebuilt - shipped| on {JUDGED_SPLIT} = {delta:.2f} points "
                    f"({'<=' if within else '>'} {KNIFE_EDGE_MAX_DEVIATION:g})")
        if stale:
            evidence = f"stale manifest: {'; '.join(stale)}. {evidence}"
        rows.append({**row, "status": PASS if within and not stale else FAIL, "evidence": evidence})
    return pd.DataFrame(rows, columns=COLUMNS)


def rebuilt_students(profile, work: Path) -> dict[str, dict]:
    """The rebuilt base students of ``work`` that the profile ships: their evaluations' accuracies (the same
    metrics.csv an export reads) and model hashes."""
    from dcod.shipped import base_student_dir, base_student_metrics, read_accuracies, seed_folder, sha256_file
    from dcod.shipped import shipped_seeds

    out = {}
    for pretrain_seed, training_seed in shipped_seeds(profile).items():
        model = base_student_dir(work, profile, pretrain_seed) / "model.safetensors"
        if not model.is_file():
            raise FileNotFoundError(f"missing input {model} (has the stage that writes it run?)")
        out[seed_folder(pretrain_seed)] = {
            "pretrain_seed": pretrain_seed, "training_seed": training_seed,
            "accuracy": read_accuracies(base_student_metrics(work, training_seed)), "model_sha256": sha256_file(model)}
    return out


def stale_reasons(manifest: dict, profile, work: Path) -> list[str]:
    """Why the manifest does not describe this checkout's base students: deciding profile keys or world files
    that differ (dcod.shipped)."""
    from dcod.shipped import profile_mismatches, world_mismatches

    return ([f"made with {m}" for m in profile_mismatches(manifest, profile)]
            + [f"made from another world/{path.name}" for path in world_mismatches(manifest, Path(work) / "world")])


def render_markdown(frame: pd.DataFrame, manifest_path: str) -> str:
    shown = frame.copy()
    for column in shown.columns:
        if column.split("_", 1)[0] in ("shipped", "rebuilt", "delta"):
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.1f}")
    verdict = PASS if len(frame) and (frame["status"] == PASS).all() else FAIL
    return "\n".join([
        "# Shipped base students against their rebuild", "",
        f"**{verdict}**: each base student rebuilt from scratch (`make all`) against the shipped one "
        f"(`{manifest_path}`), by accuracy: within {KNIFE_EDGE_MAX_DEVIATION:g} points on {JUDGED_SPLIT} "
        "(the calibration's knife-edge bound). `same_bits`: the rebuilt weights are the shipped bytes (expected "
        "on the machine that exported them only). docs/reproducibility.md, \"Shipped base students\".", "",
        markdown_table(shown), ""])


def write_base_students(args) -> None:
    from dcod.config import load_profile
    from dcod.shipped import MANIFEST, read_manifest

    profile = load_profile(need(args.profile, "--profile", "base_students"))
    work = Path(need(args.work, "--work", "base_students"))
    manifest_path = Path(need(args.manifest, "--manifest", "base_students"))
    if manifest_path.name != MANIFEST:
        raise ValueError(f"--manifest {manifest_path}: expected a {MANIFEST} (written by ship-base-students)")
    manifest = read_manifest(manifest_path.parent)  # missing, not JSON or another format: refused by name
    frame = check_rows(manifest, rebuilt_students(profile, work), stale_reasons(manifest, profile, work))
    out = Path(args.out)
    write_csv(out, frame)
    shown = f"{profile.pretrain.shipped}/{manifest_path.name}" if profile.pretrain.shipped else str(manifest_path)
    write_text(out.with_suffix(".md"), render_markdown(frame, shown))
    for row in frame.itertuples(index=False):
        print(f"base_students: {row.status} pretrain_seed{row.pretrain_seed}: {row.evidence}")
