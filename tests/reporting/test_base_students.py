"""make all's check of the shipped base students against their rebuild (dcod.reporting.base_students): PASS
within the knife-edge bound on id, FAIL beyond it or with a stale manifest; on synthetic evaluations."""

import json

import pandas as pd
import pytest

from conftest import REPO

from dcod.cli import main
from dcod.config import load_profile
from dcod.reporting.base_students import check_rows
from dcod.reporting.calibration import KNIFE_EDGE_MAX_DEVIATION
from dcod.shipped import (FORMAT, base_student_dir, base_student_metrics, deciding_sections, sha256_file,
                          shipped_seeds, world_digests)

CI = REPO / "config" / "profiles" / "ci.yaml"


def _student(seed, training_seed, id_, long, sha="a" * 64):
    return {"pretrain_seed": seed, "training_seed": training_seed, "accuracy": {"validation": 50.0, "id": id_,
                                                                              "long": long},
            "model_sha256": sha}


def _manifest(students):
    return {"students": {f"pretrain_seed{s['pretrain_seed']}": {
        "accuracy": s["accuracy"], "files": {"model.safetensors": s["model_sha256"]}} for s in students}}


def test_within_the_tolerance_passes_and_beyond_it_fails():
    shipped = [_student(1234, 0, 40.0, 20.0), _student(1235, 1, 40.0, 20.0)]
    within = KNIFE_EDGE_MAX_DEVIATION - 0.1
    beyond = KNIFE_EDGE_MAX_DEVIATION + 0.1
    rebuilt = {"pretrain_seed1234": _student(1234, 0, 40.0 - within, 30.0),  # long is shown, not judged
               "pretrain_seed1235": _student(1235, 1, 40.0 + beyond, 20.0, sha="b" * 64)}
    frame = check_rows(_manifest(shipped), rebuilt, stale=[]).set_index("pretrain_seed")
    assert frame.loc[1234, "status"] == "PASS" and frame.loc[1235, "status"] == "FAIL"
    assert frame.loc[1234, "delta_id"] == pytest.approx(-within)
    assert frame.loc[1235, "delta_id"] == pytest.approx(beyond)
    assert frame.loc[1234, "delta_long"] == pytest.approx(10.0)
    assert frame.loc[1234, "same_bits"] and not frame.loc[1235, "same_bits"]
    # exactly at the bound passes (the calibration's EPS)
    edge = check_rows(_manifest(shipped), {"pretrain_seed1234": _student(1234, 0, 40.0 + KNIFE_EDGE_MAX_DEVIATION,
                                                                          20.0)}, stale=[])
    assert list(edge["status"]) == ["PASS"]


def test_a_stale_manifest_or_a_missing_student_fails_every_row():
    shipped = [_student(1234, 0, 40.0, 20.0)]
    rebuilt = {"pretrain_seed1234": _student(1234, 0, 40.0, 20.0), "pretrain_seed1235": _student(1235, 1, 40.0, 20.0)}
    frame = check_rows(_manifest(shipped), rebuilt, stale=["made with pretrain.lr=0.002, the profile says 0.005"])
    assert list(frame["status"]) == ["FAIL", "FAIL"]
    assert "pretrain.lr=0.002, the profile says 0.005" in frame["evidence"][0]
    assert "no pretrain_seed1235" in frame["evidence"][1]


def test_the_report_command_reads_the_rebuild_and_the_manifest(tmp_path, capsys):
    """`python -m dcod report base_students` on a work folder: the rebuilt students' evaluations and hashes
    against a manifest written for this profile and world."""
    profile = load_profile(CI)
    work = tmp_path / "work"
    (work / "world" / "tokenizer").mkdir(parents=True)
    (work / "world" / "pretrain.jsonl").write_text('{"question": "1+1"}\n')
    (work / "world" / "tokenizer" / "tokenizer.json").write_text("{}\n")
    students = {}
    for (seed, training_seed), id_ in zip(shipped_seeds(profile).items(), (0.5, 0.25)):
        model = base_student_dir(work, profile, seed) / "model.safetensors"
        model.parent.mkdir(parents=True)
        model.write_bytes(bytes([seed % 256]) * 64)
        metrics = base_student_metrics(work, training_seed)
        metrics.parent.mkdir(parents=True)
        pd.DataFrame({"split": ["validation", "id", "long"], "accuracy": [0.5, id_, 0.25]}).to_csv(metrics, index=False)
        # shipped: 2 points above the rebuild on id for the first, 10 for the second
        shipped_id = 100 * id_ + (2 if seed == 1234 else 10)
        students[f"pretrain_seed{seed}"] = {"accuracy": {"validation": 50.0, "id": shipped_id, "long": 25.0},
                                            "files": {"model.safetensors": sha256_file(model)}}
    manifest = tmp_path / "models" / "manifest.json"
    manifest.parent.mkdir()
    manifest.write_text(json.dumps({"format": FORMAT, "students": students, "sections": deciding_sections(profile),
                                    "world": world_digests(work / "world")}))
    out = tmp_path / "results" / "base_students.csv"
    main(["report", "base_students", "--profile", str(CI), "--work", str(work / "world" / "world.json"),
          "--manifest", str(manifest), "--out", str(out)])
    frame = pd.read_csv(out).set_index("pretrain_seed")
    assert frame.loc[1234, "status"] == "PASS" and frame.loc[1235, "status"] == "FAIL"
    assert frame.loc[1234, "rebuilt_id"] == 50.0 and frame.loc[1234, "shipped_id"] == 52.0
    assert frame["same_bits"].all()
    assert "FAIL" in out.with_suffix(".md").read_text()
    # the world changed since the export: stale, every row fails
    (work / "world" / "pretrain.jsonl").write_text('{"question": "1+2"}\n')
    main(["report", "base_students", "--profile", str(CI), "--work", str(work / "world" / "world.json"),
          "--manifest", str(manifest), "--out", str(out)])
    frame = pd.read_csv(out)
    assert list(frame["status"]) == ["FAIL", "FAIL"] and "another world/pretrain.jsonl" in frame["evidence"][0]
